"""Bounding boxes from metadata: spellings, JSON cells, normalised coordinates, clipping,
drawing on arrays / images / thumbnails, and --draw-bboxes in a real encode."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from latentmap.cli import main
from latentmap.pipeline.bboxes import (
    COLORS,
    BBoxError,
    Box,
    draw_boxes,
    draw_on_png,
    draw_on_thumbnails,
    find_box_columns,
    find_boxes,
    looks_normalized,
    parse_box_cell,
    require_boxes,
    to_pixels,
)
from latentmap.pipeline.jobs import EncodeError, EncodeRequest, ItemDataset, encode
from latentmap.pipeline.sources import open_image_folder
from PIL import Image


def png(w: int = 40, h: int = 20, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- finding boxes


@pytest.mark.parametrize(
    "names",
    [
        ["x_min", "y_min", "x_max", "y_max"],
        ["xmin", "ymin", "xmax", "ymax"],
        ["XMin", "YMin", "XMax", "YMax"],
        ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"],
        ["x1", "y1", "x2", "y2"],
        ["box_left", "box_top", "box_right", "box_bottom"],
        ["bbox-xmin", "bbox-ymin", "bbox-xmax", "bbox-ymax"],
    ],
)
def test_four_columns_in_common_spellings(names):
    meta = pd.DataFrame(
        {"id": ["a", "b"], **{n: [v, v + 1] for n, v in zip(names, (2, 3, 12, 9), strict=True)}}
    )
    kind, cols = find_box_columns(meta)
    assert kind == "corners" and cols == names
    bs = find_boxes(meta)
    assert bs is not None and not bs.normalized and bs.n_boxes == 2
    assert bs.boxes[0] == [Box(2, 3, 12, 9)] and bs.boxes[1] == [Box(3, 4, 13, 10)]
    assert names[0] in bs.source


def test_corner_and_size_columns_and_missing_rows():
    meta = pd.DataFrame(
        {"bbox_x": [1.0, np.nan], "bbox_y": [2.0, 1.0], "bbox_w": [10.0, 1.0], "bbox_h": [4.0, 1]}
    )
    bs = find_boxes(meta)
    assert bs.boxes == [[Box(1, 2, 11, 6)], []]
    assert "corner, width, height" in bs.source


def test_no_box_columns():
    meta = pd.DataFrame({"id": ["a"], "x": [1.0], "y": [2.0], "label": ["cat"]})
    assert find_boxes(meta) is None
    with pytest.raises(BBoxError, match=r"^the metadata has no bounding boxes: .*columns: id, x"):
        require_boxes(meta)
    text = pd.DataFrame({"x_min": ["a"], "y_min": ["b"], "x_max": ["c"], "y_max": ["d"]})
    assert find_boxes(text) is None  # not numbers: not boxes


def test_json_column_in_every_shape():
    cells = [
        "[10, 20, 30, 40]",
        [[1, 2, 3, 4], [5, 6, 7, 8]],
        json.dumps([{"bbox": [1, 1, 9, 9], "label": "cup"}, {"box": [2, 2, 4, 4]}]),
        np.array([np.array([3.0, 3.0, 1.0, 1.0])], dtype=object),  # a parquet list cell
        None,
        float("nan"),
        "",
        "[]",
        {"x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4, "name": "dog"},
    ]
    meta = pd.DataFrame({"id": list("abcdefghi"), "BBoxes": cells})
    bs = find_boxes(meta)
    assert bs.source == "column 'BBoxes'" and bs.invalid == 0 and not bs.normalized
    assert bs.boxes[0] == [Box(10, 20, 30, 40)]
    assert bs.boxes[1] == [Box(1, 2, 3, 4), Box(5, 6, 7, 8)]
    assert bs.boxes[2] == [Box(1, 1, 9, 9, "cup"), Box(2, 2, 4, 4)]
    assert bs.boxes[3] == [Box(1, 1, 3, 3)]  # corners put in order
    assert bs.boxes[4:8] == [[], [], [], []]
    assert bs.boxes[8] == [Box(1, 2, 3, 4, "dog")]


def test_unreadable_entries_are_counted_and_ignored():
    assert parse_box_cell("not json") == ([], 1)
    assert parse_box_cell([[1, 2, 3], [1, 2, 3, 4]]) == ([Box(1, 2, 3, 4)], 1)
    assert parse_box_cell([["a", 2, 3, 4]]) == ([], 1)
    bs = find_boxes(pd.DataFrame({"bbox": ["[1, 2, 3, 4]", "oops", "[[1, 2], [1, 2, 3, 4]]"]}))
    assert bs.invalid == 2 and bs.n_boxes == 2
    assert bs.notices == [
        "2 entries of column 'bbox' are not boxes [x0, y0, x1, y1] and were ignored"
    ]
    with pytest.raises(BBoxError, match="holds no readable box"):
        require_boxes(pd.DataFrame({"bbox": ["oops", None]}))


def test_normalised_detection():
    assert looks_normalized([0.1, 0.2, 0.9, 1.0])
    assert looks_normalized([0.5, 0.5, 1.3, 1.2])  # a box reaching past the edge
    assert not looks_normalized([10, 20, 30, 40])
    assert not looks_normalized([0, 0, 64, 64])
    assert not looks_normalized([])
    bs = find_boxes(pd.DataFrame({"bbox": ["[0.1, 0.2, 0.5, 0.6]", "[0.0, 0.0, 1.0, 1.0]"]}))
    assert bs.normalized and bs.sizes is None


def test_image_size_columns_are_read_for_pixel_boxes():
    meta = pd.DataFrame({"bbox": ["[10, 10, 50, 30]"], "image_width": [200], "image_height": [100]})
    assert find_boxes(meta).sizes == [(200.0, 100.0)]


# --------------------------------------------------------------------------- pixels, clipping


def test_to_pixels_scales_clips_and_counts():
    boxes = [Box(0.1, 0.2, 0.5, 0.6), Box(0.5, 0.5, 1.5, 1.2), Box(1.2, 1.2, 1.5, 1.5)]
    px, clipped, dropped = to_pixels(boxes, 100, 50, normalized=True)
    assert px[0] == Box(10, 10, 50, 30)
    assert px[1] == Box(50, 25, 100, 50)
    assert (clipped, dropped) == (1, 1)
    px, clipped, dropped = to_pixels(
        [Box(-5, 10, 40, 30)], 50, 25, normalized=False, source_size=(100, 50)
    )
    assert px == [Box(0, 5, 20, 15)] and (clipped, dropped) == (1, 0)


# --------------------------------------------------------------------------- drawing


def test_draw_boxes_on_a_chw_array_outlines_only():
    img = np.full((3, 20, 30), 0.5, np.float32)
    out = draw_boxes(img, [[5, 4, 15, 14]], width=1)
    assert out.shape == img.shape and out.dtype == np.float32
    assert np.array_equal(img, np.full((3, 20, 30), 0.5, np.float32))  # input untouched
    red = np.asarray(COLORS[0], np.float32)
    np.testing.assert_allclose(out[:, 4, 5], red)  # top-left corner
    np.testing.assert_allclose(out[:, 13, 14], red)  # bottom-right corner (inclusive)
    np.testing.assert_allclose(out[:, 9, 10], 0.5)  # inside: untouched
    np.testing.assert_allclose(out[:, 3, 5], 0.5)  # outside: untouched
    changed = (out != img).any(axis=0)
    assert changed.sum() == 2 * 10 + 2 * 8  # a 10 x 10 outline, 1 pixel wide


def test_draw_boxes_grey_multiband_and_outside():
    grey = np.zeros((1, 10, 10), np.float32)
    assert draw_boxes(grey, [[2, 2, 8, 8]])[0].max() == 1.0
    raster = np.linspace(100, 900, 5 * 16 * 16, dtype=np.float32).reshape(5, 16, 16)
    out = draw_boxes(raster, [[0, 0, 8, 8], [8, 8, 16, 16]])
    assert out[3, 0, 0] == raster[3].max()  # extra bands: their brightest value
    blue = COLORS[1]
    lo, hi = raster[2].min(), raster[2].max()
    assert out[2, 15, 15] == pytest.approx(lo + blue[2] * (hi - lo))
    same = draw_boxes(raster, [[20, 20, 30, 30]])  # entirely outside: nothing drawn
    assert np.array_equal(same, raster)


def test_draw_boxes_on_pil_images():
    im = Image.new("L", (20, 10), 0)
    out = draw_boxes(im, [Box(1, 1, 10, 9)])
    assert out.mode == "RGB" and out.size == (20, 10)
    assert out.getpixel((1, 1)) == tuple(round(255 * v) for v in COLORS[0])
    assert out.getpixel((15, 5)) == (0, 0, 0)
    with pytest.raises(BBoxError, match="needs a"):
        draw_boxes("not an image", [[0, 0, 1, 1]])
    with pytest.raises(BBoxError, match="not a box"):
        draw_boxes(im, [[0, 0, 1]])


def test_draw_on_png_is_repeatable():
    once, clipped, dropped = draw_on_png(png(), [Box(0.1, 0.1, 0.6, 1.4)], normalized=True)
    assert (clipped, dropped) == (1, 0)
    twice, _, _ = draw_on_png(once, [Box(0.1, 0.1, 0.6, 1.4)], normalized=True)
    assert once == twice and once != png()
    with pytest.raises(BBoxError, match="not an image"):
        draw_on_png(b"junk", [Box(0, 0, 1, 1)], normalized=True)


def test_draw_on_thumbnails_counts_clipped_and_dropped():
    meta = pd.DataFrame(
        {"bbox": ["[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 1.3, 1.1]]", None, "[1.2, 1.2, 1.5, 1.9]"]}
    )
    bs = find_boxes(meta)
    thumbs, notes = draw_on_thumbnails([png(), png(), None], bs)
    assert thumbs[1] == png() and thumbs[2] is None and thumbs[0] != png()
    assert notes == ["1 bounding box reached outside the image and was clipped to it"]
    thumbs, notes = draw_on_thumbnails([png(), png(), png()], bs)
    assert notes == [
        "1 bounding box reached outside the image and was clipped to it; 1 bounding box lay "
        "entirely outside the image and was not drawn"
    ]
    pixel = find_boxes(pd.DataFrame({"bbox": ["[2, 2, 30, 15]"]}))
    _, notes = draw_on_thumbnails([png()], pixel)
    assert "drawn in thumbnail pixels" in notes[-1]


# --------------------------------------------------------------------------- encoding


def boxed_folder(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    root.mkdir()
    rows = []
    for i in range(n):
        arr = rng.integers(60, 120, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"img{i}.png")
        box = [4, 4, 20, 24] if i % 2 else [10, 8, 40, 30]  # the second reaches outside
        rows.append({"file": f"img{i}.png", "label": "ab"[i % 2], "bbox": json.dumps(box)})
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return root, labels


def test_item_dataset_draws_on_the_model_input_only_when_asked(tmp_path):
    root, labels = boxed_folder(tmp_path)
    src = open_image_folder(root, labels=labels)
    bs = find_boxes(src.metadata)
    plain = ItemDataset(src, lambda a: a, (0, 1, 2), 32, boxes=bs)
    drawn = ItemDataset(src, lambda a: a, (0, 1, 2), 32, boxes=bs, draw_input=True)
    i, x, thumb, err, clip = plain[0]
    assert err is None and clip == (1, 0)
    np.testing.assert_array_equal(x, src.load(0))
    _, xd, thumb_d, _, _ = drawn[0]
    changed = (xd != x).any(axis=0)
    assert changed[8, 10] and not changed[20, 20] and not changed[0, 0]
    boxed = np.asarray(Image.open(io.BytesIO(thumb)))
    assert tuple(boxed[8, 10]) == tuple(round(255 * v) for v in COLORS[0])


def test_draw_bboxes_changes_the_dataset_and_the_pixels_encoded(store, tmp_path):
    root, labels = boxed_folder(tmp_path)
    base = {"source": str(root), "labels": str(labels), "model": "pixels", "workers": 0}
    plain = encode(store, EncodeRequest(**base))
    drawn = encode(store, EncodeRequest(**base, draw_bboxes=True))
    assert plain.ds_id != drawn.ds_id
    assert "1 bounding box" not in " ".join(plain.notices)
    assert "3 bounding boxes reached outside the image and were clipped to it" in plain.notices
    assert "bounding boxes (column 'bbox') drawn on thumbnails" in plain.notices
    assert "bounding boxes (column 'bbox') drawn on the images and thumbnails" in drawn.notices
    layer = store.layers(plain.ds_id)[0]
    a, b = store.vectors(plain.ds_id, layer), store.vectors(drawn.ds_id, layer)
    assert a.shape == b.shape and (a != b).any(axis=1).all()
    assert store.manifest(drawn.ds_id)["name"] == "imgs (boxes drawn)"
    # the thumbnails show the boxes either way
    t = np.asarray(Image.open(store.thumbnail_path(plain.ds_id, 0)))
    assert tuple(t[8 * 3, 10 * 3]) == tuple(round(255 * v) for v in COLORS[0])
    assert encode(store, EncodeRequest(**base, draw_bboxes=True)).reused


def test_draw_bboxes_errors(store, tmp_path, capsys):
    root, _ = boxed_folder(tmp_path)
    with pytest.raises(EncodeError, match=r"^--draw-bboxes: the metadata has no bounding boxes"):
        encode(store, EncodeRequest(source=str(root), draw_bboxes=True, workers=0))
    np.save(tmp_path / "v.npy", np.ones((3, 2)))
    with pytest.raises(EncodeError, match="give an image folder, not an embeddings file"):
        encode(store, EncodeRequest(source=str(tmp_path / "v.npy"), draw_bboxes=True))
    code = main(["--cache-dir", str(tmp_path / "c"), "encode", str(root), "--draw-bboxes"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("latentmap: error: --draw-bboxes: the metadata has no bounding boxes")
    assert len(err.strip().splitlines()) == 1
