"""Opening image folders and embedding files as data sources (real files in tmp_path)."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from latentmap.pipeline.images import ImageReadError
from latentmap.pipeline.sources import (
    EmbeddingsSource,
    ImageFolderSource,
    SourceError,
    decode_thumbnail,
    find_key_column,
    load_labels_table,
    open_embeddings,
    open_image_folder,
    open_source,
)
from PIL import Image


def png_bytes(value: int = 100, size: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, value: int = 100, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(value, size))
    return path


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for cls in ("cats", "dogs"):
        for i in range(3):
            write_png(root / cls / f"{cls}_{i}.png", value=40 * i)
    write_png(root / "cats" / "deep" / "x.PNG")
    (root / "dogs" / "notes.txt").write_text("hi")
    (root / ".hidden").mkdir()
    write_png(root / ".hidden" / "secret.png")
    write_png(root / "cats" / ".ds.png")
    return root


# --------------------------------------------------------------------------- image folders


def test_folder_items_sorted_hidden_skipped_and_labels(class_folder):
    src = open_image_folder(class_folder)
    assert isinstance(src, ImageFolderSource)
    assert src.items == [
        "cats/cats_0.png",
        "cats/cats_1.png",
        "cats/cats_2.png",
        "cats/deep/x.PNG",
        "dogs/dogs_0.png",
        "dogs/dogs_1.png",
        "dogs/dogs_2.png",
    ]
    assert len(src) == 7
    assert src.skipped == [("dogs/notes.txt", "not an image file (.txt)")]
    meta = src.metadata
    assert list(meta.columns) == ["id", "file", "label"]
    assert meta["id"].tolist() == src.items
    assert meta["file"].tolist()[3] == "x.PNG"
    assert meta["label"].tolist() == ["cats"] * 4 + ["dogs"] * 3
    assert src.path(0) == class_folder / "cats" / "cats_0.png"
    img = src.load(0)
    assert img.shape == (3, 8, 8) and img.dtype == np.float32


def test_flat_folder_has_no_label_column(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png")
    src = open_image_folder(tmp_path)
    assert "label" not in src.metadata.columns
    assert src.items == ["0.png", "1.png", "2.png"]


def test_load_of_broken_file_raises_image_error(tmp_path):
    write_png(tmp_path / "ok.png")
    (tmp_path / "empty.png").write_bytes(b"")
    src = open_image_folder(tmp_path)
    assert src.items == ["empty.png", "ok.png"]
    with pytest.raises(ImageReadError, match="empty file"):
        src.load(0)


def test_symlink_outside_root_is_skipped(tmp_path):
    outside = write_png(tmp_path / "outside" / "o.png")
    root = tmp_path / "root"
    write_png(root / "in.png")
    os.symlink(outside, root / "link.png")
    os.symlink(root / "in.png", root / "inner_link.png")
    os.symlink(tmp_path / "outside", root / "linkdir")
    src = open_image_folder(root)
    assert src.items == ["in.png", "inner_link.png"]
    reasons = dict(src.skipped)
    assert reasons["link.png"] == "link points outside the folder"
    assert reasons["linkdir/"] == "link points outside the folder"


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="folder not found"):
        open_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(SourceError, match="not a folder"):
        open_image_folder(tmp_path / "file.png")
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "a.txt").write_text("a")
    (empty / "b.csv").write_text("b")
    with pytest.raises(SourceError, match=r"no image files found in .*docs \(2 other files seen"):
        open_image_folder(empty)


def test_num_samples_deterministic_subset(tmp_path):
    for i in range(20):
        write_png(tmp_path / f"img_{i:02d}.png", value=i)
    a = open_image_folder(tmp_path, num_samples=5, seed=3)
    b = open_image_folder(tmp_path, num_samples=5, seed=3)
    c = open_image_folder(tmp_path, num_samples=5, seed=4)
    assert a.items == b.items and len(a) == 5
    assert a.items == sorted(a.items)
    assert a.items != c.items
    assert a.metadata["id"].tolist() == a.items
    assert len(open_image_folder(tmp_path, num_samples=500)) == 20
    with pytest.raises(SourceError, match="num_samples must be at least 1"):
        open_image_folder(tmp_path, num_samples=0)


def test_extensions_option(tmp_path):
    write_png(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((4, 4), np.uint16))
    src = open_image_folder(tmp_path, extensions=["TIF"])
    assert src.items == ["b.tif"]
    assert src.skipped == [("a.png", "not an image file (.png)")]


def test_fingerprint_changes_with_content_and_options(tmp_path):
    p = write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    f1 = open_image_folder(tmp_path).fingerprint()
    assert f1 == open_image_folder(tmp_path).fingerprint()
    assert f1 != open_image_folder(tmp_path, num_samples=1).fingerprint()
    p.write_bytes(png_bytes(size=10))
    os.utime(p, ns=(1, 1))
    assert open_image_folder(tmp_path).fingerprint() != f1


# --------------------------------------------------------------------------- labels tables


def micasense_folder(tmp_path: Path) -> Path:
    root = tmp_path / "ms"
    root.mkdir()
    for name in ("IMG_0424_5", "IMG_0407_5", "IMG_0050_2"):
        tifffile.imwrite(root / f"{name}.tif", np.full((6, 6), 1000, np.uint16))
    return root


def test_labels_csv_keyed_by_stem(tmp_path):
    root = micasense_folder(tmp_path)
    labels = root / "labels.csv"
    labels.write_text(
        "image,terrain,count\nIMG_0424_5,rocky,3\nIMG_0407_5,rocky,4\nIMG_0050_2,road,7\n"
        "IMG_9999_1,water,1\n"
    )
    src = open_image_folder(root, labels=labels)
    assert src.items == ["IMG_0050_2.tif", "IMG_0407_5.tif", "IMG_0424_5.tif"]
    assert src.skipped == []  # the labels file itself is not reported
    meta = src.metadata
    assert meta["terrain"].tolist() == ["road", "rocky", "rocky"]
    assert meta["count"].tolist() == [7, 4, 3]
    assert pd.api.types.is_integer_dtype(meta["count"])
    assert meta["image"].tolist() == ["IMG_0050_2", "IMG_0407_5", "IMG_0424_5"]
    assert any("1 rows of labels.csv match no item" in n for n in src.notices)


def test_labels_by_relative_path_and_by_name_with_missing_rows(tmp_path, class_folder):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,score\ncats/cats_0.png,1\ndogs_2.png,2\n")
    src = open_image_folder(class_folder, labels=labels)
    meta = src.metadata.set_index("id")
    assert meta.loc["cats/cats_0.png", "score"] == 1
    assert meta.loc["dogs/dogs_2.png", "score"] == 2
    assert meta["score"].isna().sum() == 5
    assert any("5 of 7 items have no row" in n for n in src.notices)
    assert "label" in meta.columns  # folder label kept


def test_labels_file_label_column_wins_over_folder(tmp_path, class_folder):
    labels = tmp_path / "labels.parquet"
    pd.DataFrame({"filename": ["cats_1.png"], "label": ["tabby"]}).to_parquet(labels)
    src = open_image_folder(class_folder, labels=labels)
    row = src.metadata.set_index("id").loc["cats/cats_1.png"]
    assert row["label"] == "tabby" and row["folder"] == "cats"


def test_labels_subset_follows_num_samples(tmp_path):
    for i in range(10):
        write_png(tmp_path / "imgs" / f"{i}.png")
    labels = tmp_path / "l.csv"
    pd.DataFrame({"file": [f"{i}.png" for i in range(10)], "n": range(10)}).to_csv(
        labels, index=False
    )
    src = open_image_folder(tmp_path / "imgs", labels=labels, num_samples=4, seed=1)
    assert src.metadata["n"].tolist() == [int(Path(i).stem) for i in src.items]
    assert src.notices == []


def test_labels_errors(tmp_path, class_folder):
    with pytest.raises(SourceError, match="labels file not found"):
        open_image_folder(class_folder, labels=tmp_path / "nope.csv")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match="could not read labels file bad.parquet"):
        open_image_folder(class_folder, labels=bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceError, match="labels file empty.csv is empty"):
        open_image_folder(class_folder, labels=empty)
    nokey = tmp_path / "nokey.csv"
    nokey.write_text("score,colour\n1,red\n2,blue\n")
    with pytest.raises(SourceError, match="has no key column matching the items: column 'score'"):
        open_image_folder(class_folder, labels=nokey)


def test_labels_key_falls_back_to_a_matching_column(tmp_path):
    root = micasense_folder(tmp_path)
    labels = tmp_path / "l.csv"
    labels.write_text("id;name;terrain\n1;IMG_0424_5.tif;rocky\n2;IMG_0050_2.tif;road\n")
    src = open_image_folder(root, labels=labels)
    meta = src.metadata.set_index("id")
    assert meta.loc["IMG_0424_5.tif", "terrain"] == "rocky"
    assert pd.isna(meta.loc["IMG_0407_5.tif", "terrain"])
    assert meta["labels_id"].tolist()[0] == 2  # the table's own id column is kept, renamed


def test_find_key_column_priority(tmp_path):
    df = pd.DataFrame({"Name": ["a"], "ID": [1], "File_Name": ["x"]})
    assert find_key_column(df) == "File_Name"
    assert find_key_column(pd.DataFrame({"z": [1], "y": [2]})) == "z"
    path = tmp_path / "t.tsv"
    path.write_text("file\tv\na.png\t1\n")
    assert load_labels_table(path)["v"].tolist() == [1]


# --------------------------------------------------------------------------- embeddings


def b64(data: bytes, uri: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return f"data:image/png;base64,{text}" if uri else text


def write_seed002_npz(path: Path, n: int = 6, bad: tuple[int, ...] = ()) -> np.ndarray:
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(n, 16, 4, 4)).astype(np.float32)
    meta = [
        {"id": f"s{i}", "qa_category": ["left", "right"][i % 2], "qa_type": "choice"}
        for i in range(n)
    ]
    thumbs = []
    for i in range(n):
        if i in bad:
            thumbs.append("!!!not base64!!!" if i % 2 else b64(b"definitely not an image"))
        else:
            thumbs.append(b64(png_bytes(10 * i), uri=i % 2 == 1))
    np.savez(path, latents=latents, metadata=json.dumps(meta), thumbnails=json.dumps(thumbs))
    return latents


def test_seed002_npz_round_trip(tmp_path):
    path = tmp_path / "cosmos_spatial.npz"
    latents = write_seed002_npz(path, n=6, bad=(1, 2, 4))
    src = open_embeddings(path)
    assert isinstance(src, EmbeddingsSource)
    assert src.vectors.shape == (6, 16, 4, 4) and src.vectors.dtype == np.float32
    np.testing.assert_array_equal(src.vectors, latents)
    assert src.metadata["id"].tolist() == [f"s{i}" for i in range(6)]
    assert src.metadata["qa_category"].tolist()[:2] == ["left", "right"]
    assert src.layer == "embedding"
    assert src.thumbnails is not None and len(src.thumbnails) == 6
    assert [t is None for t in src.thumbnails] == [False, True, True, False, True, False]
    assert src.thumbnails[3] == png_bytes(30)
    assert "3 thumbnails were not valid base64 images: shown without images" in src.notices
    assert src.fingerprint() == open_embeddings(path).fingerprint()


def test_npz_key_option_and_extra_columns(tmp_path):
    path = tmp_path / "e.npz"
    np.savez(path, emb=np.ones((3, 4)), labels=np.array([1, 2, 3]), names=np.array(["a", "b", "c"]))
    src = open_embeddings(path, key="emb")
    assert src.vectors.shape == (3, 4)
    assert src.metadata["labels"].tolist() == [1, 2, 3]
    assert src.metadata["names"].tolist() == ["a", "b", "c"]
    assert src.metadata["id"].tolist() == ["0", "1", "2"]
    assert src.thumbnails is None


def test_npz_missing_vectors_key_names_its_keys(tmp_path):
    path = tmp_path / "e.npz"
    np.savez(path, foo=np.ones((3, 4)), bar=np.zeros(3))
    with pytest.raises(SourceError, match=r"no vectors array .*it has: foo, bar"):
        open_embeddings(path)
    with pytest.raises(SourceError, match=r"has no array 'baz'; it has: foo, bar"):
        open_embeddings(path, key="baz")


def test_npz_mismatched_lengths(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, latents=np.ones((4, 2)), metadata=json.dumps([{"a": 1}] * 3))
    with pytest.raises(SourceError, match=r"^m.npz: latents has 4 items but metadata has 3$"):
        open_embeddings(path)
    np.savez(path, latents=np.ones((4, 2)), thumbnails=json.dumps([b64(png_bytes())] * 5))
    with pytest.raises(SourceError, match=r"latents has 4 items but thumbnails has 5"):
        open_embeddings(path)
    np.savez(path, embeddings=np.ones((4, 2)), metadata=json.dumps([{"a": 1}] * 5))
    with pytest.raises(SourceError, match=r"embeddings has 4 items but metadata has 5"):
        open_embeddings(path)


@pytest.mark.parametrize("drop", ["latents", "metadata", "thumbnails"])
def test_seed002_npz_missing_key_names_it_and_the_keys_present(tmp_path, drop):
    arrays = {
        "latents": np.ones((3, 2, 2, 2), np.float32),
        "metadata": json.dumps([{"id": i} for i in range(3)]),
        "thumbnails": json.dumps([b64(png_bytes())] * 3),
    }
    del arrays[drop]
    path = tmp_path / "cache.npz"
    np.savez(path, **arrays)
    present = ", ".join(arrays)
    with pytest.raises(SourceError, match=rf"no '{drop}' array .*; it has: {present}$") as e:
        open_embeddings(path)
    assert "\n" not in str(e.value)


def test_npz_digest_ignores_the_zip_container(tmp_path):
    from latentmap.pipeline.sources import npz_digest

    arrays = {"vectors": np.arange(12, dtype=np.float32).reshape(3, 4), "metadata": "[1, 2, 3]"}
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez_compressed(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "b.npz").read_bytes()
    assert npz_digest(tmp_path / "a.npz") == npz_digest(tmp_path / "b.npz")
    fa = open_embeddings(tmp_path / "a.npz").fingerprint()
    assert fa == open_embeddings(tmp_path / "b.npz").fingerprint()
    np.savez(tmp_path / "c.npz", vectors=arrays["vectors"] + 1, metadata=arrays["metadata"])
    assert open_embeddings(tmp_path / "c.npz").fingerprint() != fa
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    assert npz_digest(tmp_path / "d.npz") is None


def test_npz_metadata_mixing_kinds_of_values_is_stored_as_text(tmp_path, store):
    from latentmap.pipeline.jobs import EncodeRequest, encode

    meta = [
        {"id": "a", "answer": 3, "boxes": [{"bbox": [1, 2, 3, 4], "label": "cup"}], "v": [1, 2]},
        {"id": "b", "answer": "three", "boxes": None, "v": [3, 4]},
    ]
    path = tmp_path / "mixed.npz"
    np.savez(path, embeddings=np.ones((2, 3)), metadata=json.dumps(meta))
    src = open_embeddings(path)
    assert src.metadata["answer"].tolist() == ["3", "three"]
    assert json.loads(src.metadata["boxes"][0]) == meta[0]["boxes"]
    assert pd.isna(src.metadata["boxes"][1])
    assert src.metadata["v"].tolist() == [[1, 2], [3, 4]]
    ds = encode(store, EncodeRequest(source=str(path))).ds_id
    assert store.metadata(ds)["answer"].tolist() == ["3", "three"]


def test_npz_pickled_objects_refused(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, latents=np.ones((2, 2)), metadata=np.array([{"a": 1}, {"a": 2}], dtype=object))
    with pytest.raises(SourceError, match="stores Python objects"):
        open_embeddings(path)


def test_npy_with_labels_by_row_order_and_by_id(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.arange(12, dtype=np.float64).reshape(4, 3))
    src = open_embeddings(path)
    assert src.vectors.dtype == np.float32 and src.metadata["id"].tolist() == ["0", "1", "2", "3"]

    by_order = tmp_path / "order.csv"
    by_order.write_text("cls\na\nb\nc\nd\n")
    assert open_embeddings(path, labels=by_order).metadata["cls"].tolist() == ["a", "b", "c", "d"]

    by_id = tmp_path / "byid.csv"
    by_id.write_text("id,cls\n3,z\n1,y\n")
    src = open_embeddings(path, labels=by_id)
    assert src.metadata["cls"].isna().tolist() == [True, False, True, False]
    assert src.metadata.loc[3, "cls"] == "z" and src.metadata.loc[1, "cls"] == "y"

    short = tmp_path / "short.csv"
    short.write_text("cls\na\nb\n")
    with pytest.raises(SourceError, match="has 2 rows but there are 4 vectors"):
        open_embeddings(path, labels=short)


def test_npy_errors(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(5.0))
    with pytest.raises(SourceError, match=r"is 1-D \(shape \(5,\)\)"):
        open_embeddings(tmp_path / "one.npy")
    np.save(tmp_path / "zero.npy", np.zeros((0, 4)))
    with pytest.raises(SourceError, match="has 0 rows"):
        open_embeddings(tmp_path / "zero.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    with pytest.raises(SourceError, match="not real numbers"):
        open_embeddings(tmp_path / "str.npy")
    with pytest.raises(SourceError, match="file not found"):
        open_embeddings(tmp_path / "missing.npy")


def test_parquet_with_list_column(tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame(
        {
            "name": ["a", "b", "c"],
            "embedding": [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]],
            "thumbnail": [png_bytes(), None, b"junk"],
        }
    ).to_parquet(path)
    src = open_embeddings(path)
    np.testing.assert_array_equal(src.vectors, [[0, 1], [2, 3], [4, 5]])
    assert list(src.metadata.columns) == ["id", "name"]
    assert src.thumbnails is not None
    assert (
        src.thumbnails[0] == png_bytes() and src.thumbnails[1] is None and src.thumbnails[2] is None
    )
    assert "1 thumbnail was not a valid base64 image: shown without an image" in src.notices


def test_csv_with_prefixed_numeric_columns(tmp_path):
    path = tmp_path / "e.csv"
    df = pd.DataFrame({"label": ["x", "y"], "id": ["p", "q"]})
    for j in range(12):
        df[f"f{j}"] = [j, -j]
    df.to_csv(path, index=False)
    src = open_embeddings(path)
    assert src.vectors.shape == (2, 12)
    np.testing.assert_array_equal(src.vectors[1], -np.arange(12))  # f10 sorts after f9
    assert src.metadata["id"].tolist() == ["p", "q"]
    assert list(src.metadata.columns) == ["label", "id"]


def test_csv_with_stringified_list_column_and_errors(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text('vector,c\n"[1, 2, 3]",a\n"[4.0 5.0 6.0]",b\n')
    src = open_embeddings(path)
    np.testing.assert_array_equal(src.vectors, [[1, 2, 3], [4, 5, 6]])
    path.write_text('vector,c\n"[1, 2, 3]",a\n"[4, 5]",b\n')
    with pytest.raises(SourceError, match="vectors of different lengths"):
        open_embeddings(path)
    path.write_text("a,b\nx,y\n")
    with pytest.raises(SourceError, match="no vectors found"):
        open_embeddings(path)
    path.write_text("f0,f1\n")
    with pytest.raises(SourceError, match="has 0 rows"):
        open_embeddings(path)


def test_embeddings_num_samples(tmp_path):
    path = tmp_path / "c.npz"
    write_seed002_npz(path, n=10)
    src = open_embeddings(path, num_samples=4, seed=2)
    assert len(src) == 4 and len(src.metadata) == 4 and src.thumbnails is not None
    assert len(src.thumbnails) == 4
    ids = src.metadata["id"].tolist()
    assert ids == sorted(ids, key=lambda s: int(s[1:]))
    assert ids == open_embeddings(path, num_samples=4, seed=2).metadata["id"].tolist()


def test_decode_thumbnail_variants():
    png = png_bytes()
    assert decode_thumbnail(b64(png)) == png
    assert decode_thumbnail(b64(png, uri=True)) == png
    assert decode_thumbnail("") is None and decode_thumbnail(None) is None
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="WEBP")
    converted = decode_thumbnail(buf.getvalue())
    assert converted is not None and converted[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- dispatch


def test_open_source_dispatch(tmp_path, class_folder):
    assert isinstance(open_source(class_folder, num_samples=2), ImageFolderSource)
    np.save(tmp_path / "v.npy", np.ones((2, 3)))
    assert isinstance(open_source(tmp_path / "v.npy"), EmbeddingsSource)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(
        SourceError,
        match=r"model.pt is neither an image folder nor an embeddings file \(.npy/.npz/.parquet/.csv\)",
    ):
        open_source(tmp_path / "model.pt")
    with pytest.raises(SourceError, match="not found"):
        open_source(tmp_path / "nothing")
    with pytest.raises(SourceError, match="extensions do not apply to an embeddings file"):
        open_source(tmp_path / "v.npy", extensions=["png"])


def test_shared_image_folder_fixture(image_folder):
    src = open_image_folder(image_folder)
    assert len(src) == 27  # 24 good + truncated + empty + tiny (failures surface on load)
    assert src.skipped == [("dark/notes.txt", "not an image file (.txt)")]
    assert set(src.metadata["label"]) == {"bright", "dark"}
    errors = {}
    for i, rel in enumerate(src.items):
        try:
            src.load(i)
        except ImageReadError as e:
            errors[rel] = str(e)
    assert errors == {
        "bright/truncated.png": "truncated file",
        "dark/empty.png": "empty file",
        "dark/tiny.png": "image too small (1x1)",
    }


def test_npz_metadata_ids_become_strings(tmp_path):
    path = tmp_path / "i.npz"
    np.savez(path, embeddings=np.ones((2, 3)), metadata=json.dumps([{"id": 7}, {"id": 9.0}]))
    assert open_embeddings(path).metadata["id"].tolist() == ["7", "9"]
