"""Single-band files of one capture grouped into multi-band items (real 16-bit TIFFs)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from latentmap.pipeline.captures import (
    Capture,
    CaptureError,
    band_of,
    group_captures,
    open_capture_folder,
    read_capture,
)
from latentmap.pipeline.sources import SourceError

H, W = 12, 10


def _band(path: Path, value: int, shape=(H, W), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.clip(value + rng.integers(-50, 50, size=shape), 0, 65535).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr)
    return arr


@pytest.fixture
def captures_folder(tmp_path):
    """Two fields (sub-folders) of 5-band captures in the three naming styles, one capture
    missing band 3, a stray file and a notes file."""
    root = tmp_path / "msi"
    truth = {}
    for k, (field, name, style) in enumerate(
        [
            ("field_a", "IMG_0424", "_{b}"),
            ("field_a", "IMG_0425", "_B{b}"),
            ("field_b", "IMG_0500", "_band{b}"),
            ("field_b", "IMG_0501", "_{b}"),
        ]
    ):
        bands = [_band(root / field / f"{name}{style.format(b=b)}.tif", 1000 * b + 10 * k, seed=b)
                 for b in range(1, 6)]  # fmt: skip
        truth[f"{field}/{name}"] = np.stack(bands)
    for b in (1, 2, 4, 5):  # band 3 missing
        _band(root / "field_b" / f"IMG_0600_{b}.tif", 500)
    _band(root / "field_a" / "overview.tif", 9)
    (root / "field_a" / "notes.txt").write_text("flight log")
    return root, truth


def test_band_names():
    assert band_of("IMG_0424_1.tif") == ("IMG_0424", 1)
    assert band_of("x/IMG_0424_B5.TIF") == ("IMG_0424", 5)
    assert band_of("IMG_0424_band10.tiff") == ("IMG_0424", 10)
    assert band_of("scene-3.tif") == ("scene", 3)
    assert band_of("IMG_0424.tif") is None
    assert band_of("overview.tif") is None


def test_group_captures(captures_folder):
    root, _ = captures_folder
    paths = sorted(p for p in root.rglob("*.tif"))
    caps, skipped = group_captures(reversed(paths), root=root)
    assert [c.id for c in caps] == [
        "field_a/IMG_0424",
        "field_a/IMG_0425",
        "field_b/IMG_0500",
        "field_b/IMG_0501",
        "field_b/IMG_0600",
    ]
    first = caps[0]
    assert first.bands == (1, 2, 3, 4, 5)
    assert [f.name for f in first.files] == [f"IMG_0424_{b}.tif" for b in range(1, 6)]
    assert caps[2].files[0].name == "IMG_0500_band1.tif"
    assert caps[4].missing == (3,) and not caps[4].complete and first.complete
    assert skipped == [("field_a/overview.tif", pytest.approx(skipped[0][1]))]
    assert "not a band file" in skipped[0][1]
    # an explicit band list: band 6 is missing everywhere
    caps6, _ = group_captures(paths, bands=[1, 2, 3, 4, 5, 6], root=root)
    assert all(6 in c.missing for c in caps6)


def test_duplicate_band_is_skipped(tmp_path):
    _band(tmp_path / "IMG_1_1.tif", 10)
    _band(tmp_path / "IMG_1_B1.tif", 20)
    _band(tmp_path / "IMG_1_2.tif", 30)
    caps, skipped = group_captures(sorted(tmp_path.glob("*.tif")), root=tmp_path)
    assert len(caps) == 1 and caps[0].bands == (1, 2)
    assert skipped == [("IMG_1_B1.tif", "second file for band 1 of IMG_1 (IMG_1_1.tif)")]


def test_read_capture_stacks_bands_in_order(captures_folder):
    root, truth = captures_folder
    caps, _ = group_captures(sorted(root.rglob("*.tif")), root=root)
    for cap in caps[:4]:
        arr = read_capture(cap)
        assert arr.dtype == np.float32 and arr.shape == (5, H, W)
        np.testing.assert_allclose(arr, truth[cap.id] / 65535.0, rtol=1e-6)
        # bands really are in order: band b holds ~1000 * b
        assert np.all(np.diff(arr.mean(axis=(1, 2))) > 0)
    with pytest.raises(CaptureError, match="capture field_b/IMG_0600 is missing band 3"):
        read_capture(caps[4])


def test_mismatched_band_sizes_name_the_files(tmp_path):
    _band(tmp_path / "IMG_7_1.tif", 100)
    _band(tmp_path / "IMG_7_2.tif", 100)
    _band(tmp_path / "IMG_7_3.tif", 100, shape=(6, 5))
    caps, _ = group_captures(sorted(tmp_path.glob("*.tif")))
    with pytest.raises(
        CaptureError,
        match=r"capture .*IMG_7: band files differ in size: IMG_7_1\.tif is 10x12, "
        r"IMG_7_3\.tif is 5x6",
    ):
        read_capture(caps[0])


def test_unreadable_band_names_the_file(tmp_path):
    _band(tmp_path / "IMG_8_1.tif", 100)
    (tmp_path / "IMG_8_2.tif").write_bytes(b"II*\x00garbage")
    caps, _ = group_captures(sorted(tmp_path.glob("*.tif")))
    with pytest.raises(CaptureError, match=r"^IMG_8_2\.tif: "):
        read_capture(caps[0])
    with pytest.raises(CaptureError, match="no band files"):
        read_capture(Capture(id="x", bands=(), files=()))


def test_open_capture_folder(captures_folder, tmp_path):
    root, truth = captures_folder
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {"file": ["IMG_0424", "IMG_0500", "IMG_0501"], "crop": ["corn", "soy", "corn"]}
    ).to_csv(labels, index=False)
    src = open_capture_folder(root, labels=labels)
    assert len(src) == 4
    assert src.items == [
        "field_a/IMG_0424",
        "field_a/IMG_0425",
        "field_b/IMG_0500",
        "field_b/IMG_0501",
    ]
    meta = src.metadata
    assert meta["id"].tolist() == src.items
    assert meta["file"].tolist() == ["IMG_0424", "IMG_0425", "IMG_0500", "IMG_0501"]
    assert meta["label"].tolist() == ["field_a", "field_a", "field_b", "field_b"]
    assert meta["bands"].iloc[0] == "1,2,3,4,5"
    assert meta["crop"].tolist()[2:] == ["soy", "corn"] and pd.isna(meta["crop"].iloc[1])
    assert any("missing bands" in n and "IMG_0600 lacks 3" in n for n in src.notices)
    assert ("field_b/IMG_0600", "missing band 3") in src.skipped
    assert any(p == "field_a/notes.txt" for p, _ in src.skipped)
    np.testing.assert_allclose(src.load(2), truth["field_b/IMG_0500"] / 65535.0, rtol=1e-6)
    # the fingerprint follows the band files
    fp = src.fingerprint()
    assert open_capture_folder(root, labels=labels).fingerprint() == fp
    _band(root / "field_a" / "IMG_0424_2.tif", 7)
    assert open_capture_folder(root, labels=labels).fingerprint() != fp
    sub = open_capture_folder(root, num_samples=2, seed=1)
    assert len(sub) == 2 and set(sub.items) <= set(src.items)


def test_open_capture_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="folder not found"):
        open_capture_folder(tmp_path / "nope")
    _band(tmp_path / "a" / "lonely.tif", 3)
    with pytest.raises(SourceError, match="no complete captures"):
        open_capture_folder(tmp_path / "a")


def test_encode_job_consumes_captures(captures_folder, store):
    """The encode job's own steps, fed a capture folder: every capture becomes a 5-band item."""
    from latentmap.pipeline.encoders import load_model, resolve_layers
    from latentmap.pipeline.jobs import EncodeRequest, ItemDataset, _EncodeJob, _first_readable
    from latentmap.pipeline.store import key_hash

    root, _ = captures_folder
    src = open_capture_folder(root)
    req = EncodeRequest(source=str(root), model="pixels", batch_size=3, workers=0)
    model = load_model("pixels", image_size=8)
    first = _first_readable(src, model.preprocess)
    pre = replace(model.preprocess, channels=int(first.shape[0]))
    _, x, thumb, err = ItemDataset(src, pre, (0, 1, 2), 32)[1][:4]
    assert err is None and x.shape == (5, 8, 8) and thumb.startswith(b"\x89PNG")
    layers = resolve_layers(model, [])
    ds_id = key_hash({"source": src.fingerprint(), "pre": pre.describe()}, n=16)
    job = _EncodeJob(store, ds_id, src, replace(model, preprocess=pre), layers, "mean", req)
    res = job.run({"kind": "test"}, progress=None, should_cancel=None, t0=0.0)
    assert res.n_encoded == 4
    assert store.vectors(ds_id, layers[-1]).shape == (4, 5 * 8 * 8)
    assert store.metadata(ds_id)["id"].tolist() == src.items
    assert any(p == "field_b/IMG_0600" for p, _ in res.skipped)


def test_bands_ordered_by_number_not_name(tmp_path):
    """IMG_9_10 is band 10, after IMG_9_2 (a name sort would put it second)."""
    for b in range(1, 11):
        _band(tmp_path / f"IMG_9_{b}.tif", 100 * b)
    caps, _ = group_captures(sorted(tmp_path.glob("*.tif")))
    assert caps[0].bands == tuple(range(1, 11))
    assert [f.name for f in caps[0].files][1:3] == ["IMG_9_2.tif", "IMG_9_3.tif"]
    means = read_capture(caps[0]).mean(axis=(1, 2)) * 65535
    np.testing.assert_allclose(means, 100 * np.arange(1, 11), atol=10)
