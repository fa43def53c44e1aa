"""Seed 002's workflow end to end: its .npz cache in and out (`encode cache.npz`, `serve
--load-cache`, `export --format npz`, `encode --save-cache`), its bad inputs, and `--reduction`
on encode and export (the three maps side by side as HTML and PNG)."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from latentmap.cli import load_cache, main
from latentmap.pipeline.exports import export_maps, export_npz, maps_figure
from latentmap.pipeline.jobs import EncodeRequest, encode
from latentmap.pipeline.reduce import METHODS, cached_projection
from latentmap.pipeline.sources import open_embeddings
from latentmap.pipeline.store import Store
from PIL import Image

CATEGORIES = ["left_predicate", "right_predicate", "behind_predicate", "tall_choice"]


def image_bytes(i: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def seed002_cache(
    path: Path,
    n: int = 12,
    shape: tuple[int, ...] = (16, 8, 8),
    bad: tuple[int, ...] = (),
    compressed: bool = False,
) -> dict:
    """A cache as the seed 002 script writes it: latents, metadata and thumbnails (JSON)."""
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(n, *shape)).astype(np.float32)
    latents[:, 0] += np.arange(n)[:, None, None] % 4 if len(shape) == 3 else 0
    metadata = [
        {"id": i, "qa_category": CATEGORIES[i % 4], "qa_type": "choice" if i % 3 else "predicate"}
        for i in range(n)
    ]
    thumbs = [
        "not base64 at all!" if i in bad else base64.b64encode(image_bytes(i)).decode()
        for i in range(n)
    ]
    if n > 1 and 1 not in bad:
        thumbs[1] = base64.b64encode(image_bytes(1, "JPEG")).decode()
    save = np.savez_compressed if compressed else np.savez
    save(
        path,
        latents=latents,
        metadata=np.array(json.dumps(metadata)),
        thumbnails=np.array(json.dumps(thumbs)),
    )
    return {"latents": latents, "metadata": metadata, "thumbnails": thumbs}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def thumb_bytes(store: Store, ds: str) -> list[bytes | None]:
    n = store.manifest(ds)["n"]
    return [p.read_bytes() if (p := store.thumbnail_path(ds, r)) else None for r in range(n)]


# --------------------------------------------------------------------------- import


def test_spatial_cache_is_stored_unpooled_and_mean_pooled(store, tmp_path):
    from latentmap.pipeline.spatial import ensure_variant

    cache = seed002_cache(tmp_path / "cosmos.npz")
    res = encode(store, EncodeRequest(source=str(tmp_path / "cosmos.npz")))
    layer = store.manifest(res.ds_id)["default_layer"]
    S = store.spatial(res.ds_id, layer)
    assert S is not None and S.shape == (12, 16, 8, 8)
    np.testing.assert_array_equal(S, cache["latents"])
    np.testing.assert_allclose(
        store.vectors(res.ds_id, layer), cache["latents"].mean(axis=(2, 3)), rtol=1e-6, atol=1e-6
    )
    info = store.manifest(res.ds_id)["layers"][layer]
    assert info["pool"] == "mean" and info["pooled_from"] == [16, 8, 8]
    assert info["spatial_shape"] == [16, 8, 8]
    md = store.metadata(res.ds_id)
    assert md["id"].tolist() == [str(i) for i in range(12)]
    assert md["qa_category"].tolist()[:4] == CATEGORIES
    got = thumb_bytes(store, res.ds_id)
    assert got[0] == image_bytes(0) and got[1] == image_bytes(1, "JPEG")
    # another pooling is a variant of the stored spatial latents
    name = ensure_variant(store, res.ds_id, layer, "max")
    np.testing.assert_allclose(store.vectors(res.ds_id, name), cache["latents"].max(axis=(2, 3)))
    other = encode(store, EncodeRequest(source=str(tmp_path / "cosmos.npz"), pool="max"))
    assert other.ds_id != res.ds_id


def test_round_trip_import_export_import(store, tmp_path):
    seed002_cache(tmp_path / "cache.npz", bad=(5,))
    first = encode(store, EncodeRequest(source=str(tmp_path / "cache.npz"))).ds_id
    layer = store.manifest(first)["default_layer"]
    out = export_npz(store, first, layer, tmp_path / "exported.npz")
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == ["latents", "metadata", "thumbnails"]
        assert z["latents"].dtype == np.float32 and z["latents"].shape == (12, 16, 8, 8)
        metadata = json.loads(str(z["metadata"]))
        thumbs = json.loads(str(z["thumbnails"]))
    assert isinstance(metadata, list) and len(metadata) == 12
    assert set(metadata[0]) == {"id", "qa_category", "qa_type"}
    assert thumbs[5] is None and base64.b64decode(thumbs[0]) == image_bytes(0)
    second = encode(store, EncodeRequest(source=str(out))).ds_id
    assert second != first  # another file (its ids are text now), imported as its own dataset
    np.testing.assert_array_equal(store.spatial(first, layer), store.spatial(second, layer))
    np.testing.assert_array_equal(store.vectors(first, layer), store.vectors(second, layer))
    a, b = store.metadata(first), store.metadata(second)
    assert a.to_dict("records") == b.to_dict("records")
    assert thumb_bytes(store, first) == thumb_bytes(store, second)
    # exporting again gives the same content, hence the same dataset
    again = export_npz(store, second, layer, tmp_path / "again.npz")
    assert encode(store, EncodeRequest(source=str(again))).ds_id == second


def test_round_trip_of_flat_latents_with_boxes(store, tmp_path):
    from latentmap.pipeline.bboxes import COLORS

    metadata = [
        {"id": f"q{i}", "bbox": [[0.1, 0.1, 0.5, 0.9], [0.4, 0.2, 1.3, 0.6]]} for i in range(4)
    ]
    thumbs = [base64.b64encode(image_bytes(i)).decode() for i in range(4)]
    np.savez(
        tmp_path / "flat.npz",
        latents=np.arange(12, dtype=np.float32).reshape(4, 3),
        metadata=json.dumps(metadata),
        thumbnails=json.dumps(thumbs),
    )
    res = encode(store, EncodeRequest(source=str(tmp_path / "flat.npz")))
    assert "bounding boxes (column 'bbox') drawn on thumbnails" in res.notices
    assert "4 bounding boxes reached outside the image and were clipped to it" in res.notices
    t = np.asarray(Image.open(store.thumbnail_path(res.ds_id, 0)).convert("RGB"))
    assert tuple(t[2, 3]) == tuple(round(255 * v) for v in COLORS[0])  # (0.1 * 30, 0.1 * 24)
    out = export_npz(store, res.ds_id, "embedding", tmp_path / "out.npz")
    back = encode(store, EncodeRequest(source=str(out))).ds_id
    np.testing.assert_array_equal(store.vectors(back, "embedding"), np.arange(12).reshape(4, 3))
    assert store.spatial(back, "embedding") is None
    assert thumb_bytes(store, back) == thumb_bytes(store, res.ds_id)  # boxes drawn once
    a, b = store.metadata(res.ds_id), store.metadata(back)
    assert [np.asarray(list(x)).tolist() for x in a["bbox"]] == [
        np.asarray(list(x)).tolist() for x in b["bbox"]
    ]


# --------------------------------------------------------------------------- bad input


def test_invalid_thumbnails_are_counted_and_shown_without_images(capsys, tmp_path):
    seed002_cache(tmp_path / "c.npz", bad=(2, 3, 7))
    code, out, err = run(capsys, "--cache-dir", tmp_path / "cache", "encode", tmp_path / "c.npz")
    assert code == 0, err
    assert "note: 3 thumbnails were not valid base64 images: shown without images" in out
    ds = out.strip().splitlines()[-1]
    store = Store(tmp_path / "cache")
    assert [r for r, t in enumerate(thumb_bytes(store, ds)) if t is None] == [2, 3, 7]
    assert store.manifest(ds)["n"] == 12


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {
                "latents": np.ones((5, 4, 2, 2)),
                "metadata": json.dumps([{"id": i} for i in range(4)]),
            },
            "bad.npz: latents has 5 items but metadata has 4",
        ),
        (
            {"latents": np.ones((3, 2)), "metadata": json.dumps([{"id": i} for i in range(3)])},
            "bad.npz has no 'thumbnails' array (a seed-002 cache holds latents, metadata, "
            "thumbnails); it has: latents, metadata",
        ),
        (
            {"metadata": "[]", "thumbnails": "[]"},
            "bad.npz has no 'latents' array (a seed-002 cache holds latents, metadata, "
            "thumbnails); it has: metadata, thumbnails",
        ),
        (
            {"latents": np.ones((2, 2)), "metadata": "{oops", "thumbnails": "[null, null]"},
            "bad.npz: 'metadata' is not valid JSON",
        ),
    ],
)
def test_bad_caches_are_one_line_errors(capsys, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    for argv in (
        ["encode", tmp_path / "bad.npz"],
        ["serve", "--load-cache", tmp_path / "bad.npz"],
    ):
        code, out, err = run(capsys, "--cache-dir", tmp_path / "cache", *argv)
        assert code == 2
        assert err.startswith(f"latentmap: error: {message}")
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- serve --load-cache


def test_load_cache_imports_once(store, tmp_path, capsys):
    seed002_cache(tmp_path / "cache.npz")
    ds = load_cache(store, tmp_path / "cache.npz")
    assert "cache.npz: imported 12 items" in capsys.readouterr().err
    assert load_cache(store, tmp_path / "cache.npz") == ds
    assert "already imported" in capsys.readouterr().err
    shutil.copy(tmp_path / "cache.npz", tmp_path / "copy.npz")
    assert load_cache(store, tmp_path / "copy.npz") == ds  # same content, same dataset
    seed002_cache(tmp_path / "zipped.npz", compressed=True)  # same arrays, compressed
    assert load_cache(store, tmp_path / "zipped.npz") == ds
    assert [i.id for i in store.list_datasets()] == [ds]
    with pytest.raises(ValueError, match=r"^--load-cache takes a seed-002 .npz cache, got x.csv$"):
        load_cache(store, tmp_path / "x.csv")
    with pytest.raises(ValueError, match="not found: .*missing.npz"):
        load_cache(store, tmp_path / "missing.npz")


def test_serve_load_cache_conflicts(capsys, tmp_path):
    seed002_cache(tmp_path / "cache.npz")
    code, _, err = run(capsys, "serve", "some-id", "--load-cache", tmp_path / "cache.npz")
    assert (
        code == 2 and err == "latentmap: error: give either --load-cache or a dataset, not both\n"
    )


def test_seed_002_flags_exist(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--num-samples",
        "--thumbnail-size",
        "--device",
        "--save-cache",
        "--reduction",
        "--draw-bboxes",
    ):
        assert flag in text
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--load-cache" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "--reduction" in capsys.readouterr().out


# --------------------------------------------------------------------------- encode --save-cache


def test_encode_save_cache_writes_a_seed_002_cache(capsys, tmp_path, image_folder):
    cache = ["--cache-dir", tmp_path / "c"]
    out_npz = tmp_path / "out" / "cosmos.npz"
    code, out, err = run(
        capsys,
        *cache,
        "encode",
        image_folder,
        "--image-size",
        "8",
        "--workers",
        "0",
        "--num-samples",
        "20",
        "--thumbnail-size",
        "40",
        "--device",
        "cpu",
        "--save-cache",
        out_npz,
    )
    assert code == 0, err
    assert f"wrote {out_npz}" in out
    ds = out.strip().splitlines()[-1]
    store = Store(tmp_path / "c")
    n = store.manifest(ds)["n"]
    with np.load(out_npz, allow_pickle=False) as z:
        assert sorted(z.files) == ["latents", "metadata", "thumbnails"]
        assert z["latents"].dtype == np.float32 and z["latents"].shape == (n, 3 * 8 * 8)
        assert len(json.loads(str(z["metadata"]))) == n
        thumbs = json.loads(str(z["thumbnails"]))
    assert len(thumbs) == n and all(thumbs)
    assert max(Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).size) == 40
    src = open_embeddings(out_npz)
    layer = store.manifest(ds)["default_layer"]
    np.testing.assert_array_equal(src.vectors, store.vectors(ds, layer))
    assert not src.notices
    code, _, err = run(capsys, *cache, "encode", image_folder, "--save-cache", tmp_path / "x.txt")
    assert code == 2 and "--save-cache must name a .npz file" in err


# --------------------------------------------------------------------------- --reduction


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """A seed-002 cache imported with --reduction all (PCA, t-SNE and UMAP computed once)."""
    tmp = tmp_path_factory.mktemp("seed002")
    seed002_cache(tmp / "cosmos.npz", n=40, bad=(3,))
    code = main(
        ["--cache-dir", str(tmp / "c"), "encode", str(tmp / "cosmos.npz"), "--reduction", "all"]
    )
    assert code == 0
    store = Store(tmp / "c")
    (info,) = store.list_datasets()
    return tmp, store, info.id


def test_encode_reduction_all_precomputes_three_maps(reduced, capsys):
    tmp, store, ds = reduced
    layer = store.manifest(ds)["default_layer"]
    for method in METHODS:
        entry = cached_projection(store, ds, layer, method)
        assert entry is not None and entry["coords"].shape == (40, 2)
    code, out, _ = run(
        capsys, "--cache-dir", tmp / "c", "encode", tmp / "cosmos.npz", "--reduction", "pca"
    )
    assert code == 0 and "reused 40 items" in out and "pca   embedding:" in out


def test_maps_figure_links_panels_by_row(reduced):
    _, store, ds = reduced
    fig, notes = maps_figure(store, ds, "embedding", ["pca", "tsne", "umap"])
    traces = fig["data"]
    assert len(traces) == 3 * len(CATEGORIES)  # coloured by qa_category, one trace per value
    assert [t["xaxis"] for t in traces[:: len(CATEGORIES)]] == ["x", "x2", "x3"]
    rows = [t["customdata"] for t in traces]
    assert rows[: len(CATEGORIES)] == rows[len(CATEGORIES) : 2 * len(CATEGORIES)]
    assert sorted(r for group in rows[: len(CATEGORIES)] for r in group) == list(range(40))
    left = next(t for t in traces if t["name"] == "left_predicate")
    assert left["hovertext"][0] == "0 · qa_category: left_predicate" and left["customdata"][0] == 0
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["PCA", "t-SNE", "UMAP"]
    assert fig["layout"]["legend"]["title"]["text"] == "qa_category"
    with pytest.raises(ValueError, match="no column 'nope'"):
        maps_figure(store, ds, "embedding", ["pca"], color="nope")


def test_export_reduction_all_html(reduced, capsys):
    tmp, store, ds = reduced
    code, out, err = run(
        capsys,
        "--cache-dir",
        tmp / "c",
        "export",
        ds,
        "--format",
        "html",
        "--reduction",
        "all",
        "--out",
        tmp / "maps",
    )
    assert code == 0, err
    assert f"wrote {tmp / 'maps.html'}" in out
    page = (tmp / "maps.html").read_text()
    for text in ('"PCA"', '"t-SNE"', '"UMAP"', "plotly_hover", "plotly_selected", "customdata"):
        assert text in page
    thumbs = json.loads(page.rsplit("var T=", 1)[1].split(";var box=", 1)[0])
    assert len(thumbs) == 39 and "3" not in thumbs  # 40 items, one without an image
    assert thumbs["1"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(thumbs["0"].split(",", 1)[1]) == image_bytes(0)
    assert "cdn" not in page.lower().split("<body>")[1][:2000]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "csv", "--reduction", "all", "--out", "x.csv"], "--reduction all applies"),
        (["--format", "npz", "--reduction", "pca", "--out", "x.npz"], "does not apply"),
        (["--format", "png", "--color", "nope", "--out", "x.png"], "no column 'nope'"),
        (["--format", "csv", "--color", "qa_type", "--out", "x.csv"], "--color applies"),
    ],
)
def test_export_argument_errors(reduced, capsys, argv, message):
    tmp, _, ds = reduced
    code, _, err = run(capsys, "--cache-dir", tmp / "c", "export", ds, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_export_maps_rejects_other_suffixes(reduced):
    tmp, store, ds = reduced
    with pytest.raises(ValueError, match=r"map exports are .png or .html, not '.svg'"):
        export_maps(store, ds, "embedding", ["pca"], tmp / "maps.svg")


@pytest.mark.slow
def test_export_reduction_all_png(reduced, capsys):
    tmp, _, ds = reduced
    code, out, err = run(
        capsys,
        "--cache-dir",
        tmp / "c",
        "export",
        ds,
        "--format",
        "png",
        "--reduction",
        "all",
        "--out",
        tmp / "maps.png",
    )
    assert code == 0, err
    from latentmap.report import LEGEND_W, PANEL_H, PANEL_W, SCALE, TITLE_H

    with Image.open(tmp / "maps.png") as im:
        assert im.format == "PNG"
        assert im.size == ((3 * PANEL_W + LEGEND_W) * SCALE, (PANEL_H + TITLE_H) * SCALE)
        colours = len(set(im.convert("RGB").getdata()))
    assert colours > 20  # drawn, not blank
