"""Thumbnail band picker: regenerating multispectral previews per band choice, cached."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from latentmap.callbacks import bands as bands_cb
from latentmap.callbacks import data, tasks, url
from latentmap.components import ids
from latentmap.pipeline import bands
from latentmap.pipeline.jobs import EncodeRequest, encode
from PIL import Image

N, C, H, W = 6, 5, 16, 16


@pytest.fixture
def multispectral(tmp_path: Path) -> Path:
    return write_multispectral(tmp_path / "ms")


def write_multispectral(root: Path) -> Path:
    """Six 5-band uint16 TIFFs: band b of item i is a ramp (1000 * b + i + x), with a bright
    square in band 4 only, so each band choice gives a different preview."""
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    for i in range(N):
        arr = np.zeros((C, H, W), np.uint16)
        for b in range(C):
            arr[b] = 1000 * b + i + np.arange(W, dtype=np.uint16)[None, :]
        arr[4, 4:12, 4:12] = 60000
        tifffile.imwrite(root / ("a" if i % 2 else "b") / f"item_{i}.tif", arr)
    return root


@pytest.fixture
def encoded(store, multispectral):
    res = encode(store, EncodeRequest(source=str(multispectral), model="pixels", workers=0))
    return store, res.ds_id


def _thumbs(out: dict):
    """The THUMBS store after a sync that started from an empty one."""
    return None if out["thumbs"] is url.no_update else out["thumbs"]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))


def test_encode_records_what_regeneration_needs(encoded):
    store, ds = encoded
    info = bands.band_info(store, ds)
    assert info.available and info.n_bands == C and info.encoded_rgb == (0, 1, 2)
    index = np.load(store.dataset_dir(ds) / bands.ITEM_INDEX)
    assert sorted(index.tolist()) == list(range(N))


def test_variant_key_round_trip_and_bad_keys():
    key = bands.variant_key((4, 2, 0), (0.5, 99.5))
    assert key == "b4-2-0_p0.5-99.5"
    assert bands.parse_variant_key(key) == ((4, 2, 0), (0.5, 99.5))
    for bad in ("../etc", "b1-2_p2-98", "b1-2-3_p2-98/x", "", "b1-2-3_p2-98;rm"):
        with pytest.raises(bands.BandsError):
            bands.parse_variant_key(bad)


def test_check_choice_names_the_problem(encoded):
    store, ds = encoded
    info = bands.band_info(store, ds)
    assert bands.check_choice(info, ["4", "3", "2"], [1, 99]) == ((4, 3, 2), (1.0, 99.0))
    with pytest.raises(bands.BandsError, match="Band 7 does not exist: the images have 5 bands"):
        bands.check_choice(info, [7, 1, 0], None)
    with pytest.raises(bands.BandsError, match="three band numbers"):
        bands.check_choice(info, [1, 2], None)
    with pytest.raises(bands.BandsError, match="0 <= low < high <= 100"):
        bands.check_choice(info, [0, 1, 2], [90, 10])
    with pytest.raises(bands.BandsError, match="band numbers"):
        bands.check_choice(info, ["x", 1, 2], None)


def test_ensure_thumbs_writes_the_chosen_bands_and_is_cached(encoded):
    store, ds = encoded
    seen = []
    e = bands.ensure_thumbs(store, ds, (4, 4, 4), (2, 98), progress=lambda f, m: seen.append(f))
    key = bands.variant_key((4, 4, 4), (2, 98))
    assert e.info == {"variant": key, "written": N, "failed": 0}
    assert seen and seen[-1] == 1.0
    for row in range(N):
        p = store.thumbnail_path(ds, row, key)
        assert p is not None and p.parent.name == f"thumbs_{key}"
        px = _png(p)
        # band 4 has the bright square: centre white, corner dark, greyscale (r == g == b)
        mid = (px.shape[0] // 2, px.shape[1] // 2)
        assert px[mid].tolist() == [255, 255, 255]
        assert px[0, 0, 0] < 128
        assert (px[..., 0] == px[..., 1]).all()
        # the encoded preview (bands 0, 1, 2) has no square
        enc = _png(store.thumbnail_path(ds, row))
        assert not (enc[mid] == 255).all()
    # a second call is a cache hit: deleting a file does not make it recompute
    (store.dataset_dir(ds) / f"thumbs_{key}" / "0.png").unlink()
    again = bands.ensure_thumbs(store, ds, (4, 4, 4), (2, 98))
    assert again.info == e.info
    # ... and the route falls back to the encoded thumbnail for the missing row
    assert store.thumbnail_path(ds, 0, key) == store.thumbnail_path(ds, 0)
    assert bands.ready_variant(store, ds, key)
    assert not bands.ready_variant(store, ds, bands.variant_key((3, 2, 1), (2, 98)))


def test_stretch_changes_the_preview(encoded):
    store, ds = encoded
    a = bands.ensure_thumbs(store, ds, (1, 1, 1), (0, 100)).info["variant"]
    b = bands.ensure_thumbs(store, ds, (1, 1, 1), (40, 60)).info["variant"]
    pa = _png(store.thumbnail_path(ds, 0, a))
    pb = _png(store.thumbnail_path(ds, 0, b))
    assert a != b and not np.array_equal(pa, pb)
    # a tighter stretch saturates more pixels
    assert (pb == 255).sum() > (pa == 255).sum()


def test_a_changed_folder_is_refused_not_mismatched(encoded, multispectral):
    store, ds = encoded
    tifffile.imwrite(multispectral / "a" / "new.tif", np.zeros((C, H, W), np.uint16))
    with pytest.raises(bands.BandsError, match="changed since it was encoded"):
        bands.ensure_thumbs(store, ds, (3, 2, 1))


def test_a_moved_folder_hides_the_picker(encoded, multispectral):
    store, ds = encoded
    multispectral.rename(multispectral.with_name("moved"))
    info = bands.band_info(store, ds)
    assert not info.available and "not there any more" in info.reason
    style, note = bands_cb.box(store, {"dataset": ds}, None, None)
    assert style == bands_cb.HIDDEN


def test_embeddings_have_no_picker(store, tmp_path):
    p = tmp_path / "emb.npy"
    np.save(p, np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    ds = encode(store, EncodeRequest(source=str(p))).ds_id
    info = bands.band_info(store, ds)
    assert not info.available and "came with the data" in info.reason
    out = url.sync(store, None, None, f"?ds={ds}&rgb=2,1,0", {}, None, None)
    assert _thumbs(out) is None
    assert any("cannot be changed" in n for n in out["notices"])


def test_url_round_trip_task_and_ready_switch(encoded):
    store, ds = encoded
    out = url.sync(store, None, None, f"?ds={ds}&rgb=4,3,2&stretch=1,99", {}, None, None)
    th = out["thumbs"]
    key = "b4-3-2_p1-99"
    assert th == {"dataset": ds, "want": key, "v": None, "rgb": [4, 3, 2], "pct": [1.0, 99.0]}
    assert out["controls"]["br"] == 4 and out["controls"]["stretch"] == [1.0, 99.0]
    assert [o["value"] for o in out["options"][ids.BAND_R]] == list(range(C))
    # the pending choice is a background task; cards keep the encoded thumbnails meanwhile
    want = tasks.missing_tasks(store, None, None, None, th)
    assert want == [tasks.task("thumbs", ds, None, variant=key)]
    assert data.thumb_variant(th, ds) is None
    assert bands_cb.ready_thumbs(store, th) is None
    assert "making thumbnails" in bands_cb.box(store, {"dataset": ds}, th, None)[1]
    token = tasks.run_request(store, {"tasks": want, "nonce": 1})
    assert token == {"nonce": 1, "errors": []}
    ready = bands_cb.ready_thumbs(store, th)
    assert ready["v"] == key
    assert tasks.missing_tasks(store, None, None, None, ready) == []
    details = data.row_details(store, ds, 0, None, data.thumb_variant(ready, ds))
    assert details["thumb"] == f"/thumb/{ds}/0.png?v={key}"
    assert "showing bands 4, 3, 2" in bands_cb.box(store, {"dataset": ds}, ready, None)[1]
    # a link opened later finds the variant ready at once, and writes it back the same way
    again = url.sync(store, None, None, f"?ds={ds}&rgb=4,3,2&stretch=1,99", {}, None, None)
    assert again["thumbs"]["v"] == key
    from latentmap.callbacks.state import resolve_view, to_query

    view, _ = resolve_view(store, {"ds": ds, "rgb": "4,3,2", "stretch": "1,99"})
    assert "rgb=4%2C3%2C2&stretch=1%2C99" in to_query(view)


def test_controls_write_the_link(encoded):
    store, ds = encoded
    first = url.sync(store, None, None, f"?ds={ds}", {}, None, None)
    assert _thumbs(first) is None
    values = {k: v for k, v in first["controls"].items() if v is not url.no_update}
    values.update(ds=ds, br=4, bg=0, bb=0, stretch=[5, 95])
    out = url.sync(store, None, ids.BAND_R, "", values, None, first["spec"])
    assert "rgb=4%2C0%2C0" in out["search"] and "stretch=5%2C95" in out["search"]
    assert out["thumbs"]["want"] == "b4-0-0_p5-95"
    # back to the encoded choice -> no band parameters in the link
    values.update(br=0, bg=1, bb=2, stretch=[2, 98])
    out = url.sync(store, None, ids.BAND_R, "", values, None, first["spec"])
    assert "rgb" not in out["search"] and _thumbs(out) is None


@pytest.mark.parametrize(
    "query, words",
    [
        ("rgb=9,1,0", "Band 9 does not exist"),
        ("rgb=1,2", "three band numbers"),
        ("rgb=a,b,c", "band numbers"),
        ("stretch=99,1", "0 <= low < high <= 100"),
        ("stretch=nan,5", "0 <= low < high <= 100"),
    ],
)
def test_bad_band_links_fall_back_with_a_notice(encoded, query, words):
    store, ds = encoded
    out = url.sync(store, None, None, f"?ds={ds}&{query}", {}, None, None)
    assert _thumbs(out) is None
    assert any(words in n and "as encoded" in n for n in out["notices"]), out["notices"]


def test_thumb_route_serves_variants_and_rejects_paths(encoded):
    from latentmap.app import create_app
    from latentmap.settings import Settings

    store, ds = encoded
    key = bands.ensure_thumbs(store, ds, (4, 4, 4)).info["variant"]
    app = create_app(Settings(cache_dir=store.root))
    client = app.server.test_client()
    enc = client.get(f"/thumb/{ds}/1.png")
    var = client.get(f"/thumb/{ds}/1.png?v={key}")
    assert enc.status_code == var.status_code == 200
    assert enc.data != var.data
    assert var.data == store.thumbnail_path(ds, 1, key).read_bytes()
    # a bad variant name is never joined into a path: the encoded thumbnail is served
    for bad in ("../../../etc/passwd", "b1-2-3_p2-98/../../x", "%2e%2e"):
        r = client.get(f"/thumb/{ds}/1.png", query_string={"v": bad})
        assert r.status_code == 200 and r.data == enc.data


def test_datasets_without_images_get_no_band_notice_from_the_controls(store, tmp_path):
    p = tmp_path / "emb.npy"
    np.save(p, np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    ds = encode(store, EncodeRequest(source=str(p))).ds_id
    first = url.sync(store, None, None, f"?ds={ds}", {}, None, None)
    values = {k: v for k, v in first["controls"].items() if v is not url.no_update}
    values.update(ds=ds, br=None, bg=None, bb=None, stretch=[2, 98], k=20)
    out = url.sync(store, None, ids.K, "", values, None, first["spec"])
    assert not any("Thumbnail bands" in n for n in out["notices"]), out["notices"]
