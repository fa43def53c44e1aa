"""Encoders and the encode job on real files and real torch models."""

from pathlib import Path

import numpy as np
import pytest
import torch
from latentmap.pipeline.encoders import (
    EncoderError,
    _import_class,
    load_model,
    parse_pool,
    pool_tensor,
)
from latentmap.pipeline.jobs import EncodeCancelled, EncodeError, EncodeRequest, encode
from latentmap.pipeline.store import Store

MODELS = Path(__file__).parent / "data" / "user_models.py"


def user_class(name):
    return _import_class(f"{MODELS}:{name}")


def _req(source, **kw):
    kw.setdefault("workers", 0)
    return EncodeRequest(source=str(source), **kw)


# ---------------------------------------------------------------- pooling


def test_pool_tensor_modes():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert pool_tensor(t, "mean").shape == (2, 3)
    np.testing.assert_allclose(pool_tensor(t, "mean")[0, 0], t[0, 0].mean())
    np.testing.assert_allclose(pool_tensor(t, "max")[1, 2], t[1, 2].max())
    np.testing.assert_allclose(
        pool_tensor(t, "p90")[0, 1], np.percentile(t[0, 1].numpy(), 90), rtol=1e-5
    )
    assert pool_tensor(t, "flatten").shape == (2, 60)
    assert pool_tensor(torch.ones(4), "mean").shape == (4, 1)


@pytest.mark.parametrize("bad", ["median", "p", "p101", "", "mean;rm"])
def test_parse_pool_rejects(bad):
    with pytest.raises(EncoderError, match="pooling"):
        parse_pool(bad)


# ---------------------------------------------------------------- image folders


def test_encode_folder_skips_broken_files_and_keeps_good_ones(store, image_folder):
    res = encode(store, _req(image_folder, model="pixels", image_size=8))
    assert res.n_encoded == 24
    reasons = dict(res.skipped)
    assert set(reasons) == {
        "bright/truncated.png",
        "dark/empty.png",
        "dark/notes.txt",
        "dark/tiny.png",
    }
    assert "truncated" in reasons["bright/truncated.png"]
    assert "empty" in reasons["dark/empty.png"]
    assert "too small" in reasons["dark/tiny.png"]
    v = store.vectors(res.ds_id, "output")
    assert v.shape == (24, 3 * 8 * 8)
    md = store.metadata(res.ds_id)
    assert sorted(md["label"].unique()) == ["bright", "dark"]
    # bright images have larger pixel values than dark ones in the pixel encoder
    bright = md["label"].to_numpy() == "bright"
    assert v[bright].mean() > v[~bright].mean() + 0.3
    # every encoded row has a thumbnail that is a real PNG
    for row in range(len(md)):
        p = store.thumbnail_path(res.ds_id, row)
        assert p is not None and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same request again reuses the cache
    again = encode(store, _req(image_folder, model="pixels", image_size=8))
    assert again.reused and again.ds_id == res.ds_id


def test_nothing_readable_is_an_error(store, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_bytes(b"")
    (d / "b.png").write_bytes(b"garbage")
    with pytest.raises(EncodeError, match="could be"):
        encode(store, _req(d))


def test_missing_folder_is_a_clear_error(store, tmp_path):
    with pytest.raises(EncodeError, match="no_such"):
        encode(store, _req(tmp_path / "no_such"))


def test_user_class_with_state_dict_and_hooks(store, image_folder, tmp_path):
    torch.manual_seed(0)
    m = user_class("TinyEncoder")(in_ch=3, dim=8)
    ckpt = tmp_path / "enc.pt"
    torch.save({"state_dict": m.state_dict()}, ckpt)
    res = encode(
        store,
        _req(
            image_folder,
            model=f"{MODELS}:TinyEncoder",
            checkpoint=str(ckpt),
            model_kwargs='{"in_ch": 3, "dim": 8}',
            layers=["backbone", "head"],
            pool="max",
            predictions="head",
        ),
    )
    m_ = store.manifest(res.ds_id)
    assert m_["layers"]["backbone"]["dim"] == 8
    assert m_["layers"]["backbone"]["pooled_from"][0] == 8
    assert m_["layers"]["head"]["dim"] == 2
    assert store.spatial(res.ds_id, "backbone") is not None
    md = store.metadata(res.ds_id)
    assert set(md["pred"]) <= {"bright", "dark"}  # class indices mapped to folder names
    # the hooked values equal a direct forward pass of the same weights
    from latentmap.pipeline.images import read_image, resize_chw

    first = read_image(image_folder / md["id"][0])
    x = torch.from_numpy(resize_chw(first, tuple(m_["key"]["preprocess"]["size"])))[None]
    with torch.inference_mode():
        want = m.backbone(x).amax(dim=(2, 3))[0].numpy()
    np.testing.assert_allclose(store.vectors(res.ds_id, "backbone")[0], want, rtol=1e-4, atol=1e-5)


def test_state_dict_that_does_not_fit_names_keys(store, image_folder, tmp_path):
    ckpt = tmp_path / "wrong.pt"
    torch.save({"backbone.0.weight": torch.zeros(8, 3, 3, 3), "extra.bias": torch.zeros(2)}, ckpt)
    with pytest.raises(EncodeError) as e:
        encode(store, _req(image_folder, model=f"{MODELS}:TinyEncoder", checkpoint=str(ckpt)))
    msg = str(e.value)
    assert "missing keys" in msg and "backbone.0.bias" in msg and "head.weight" in msg
    assert "unexpected keys: extra.bias" in msg


def test_unknown_layer_lists_module_names(store, image_folder):
    with pytest.raises(EncodeError) as e:
        encode(store, _req(image_folder, model=f"{MODELS}:TinyEncoder", layers=["fc7"]))
    assert "unknown layer 'fc7'" in str(e.value)
    assert "backbone" in str(e.value) and "head" in str(e.value)


def test_inconsistent_output_shape_is_reported(store, image_folder):
    with pytest.raises(EncodeError, match="must not"):
        encode(store, _req(image_folder, model=f"{MODELS}:Inconsistent", batch_size=4))


def test_nan_latents_are_flagged(store, image_folder):
    res = encode(store, _req(image_folder, model=f"{MODELS}:NaNForBright"))
    md = store.metadata(res.ds_id)
    valid = store.valid_mask(res.ds_id, "output")
    assert (~valid).sum() == 12
    assert md["has_nan"].sum() == 12
    assert any("NaN" in n for n in res.notices)


def test_pickled_checkpoint_needs_trust(store, image_folder, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(user_class("TinyEncoder")(), path)  # a full pickle: loading it runs code
    with pytest.raises(EncodeError, match="--trust-checkpoint"):
        encode(store, _req(image_folder, model=str(path)))
    res = encode(store, _req(image_folder, model=str(path), trust_checkpoint=True))
    assert res.n_encoded == 24


def test_torchscript_model(store, image_folder, tmp_path):
    path = tmp_path / "enc.ts"
    torch.jit.script(user_class("TinyEncoder")()).save(str(path))
    res = encode(store, _req(image_folder, model=str(path)))
    assert store.vectors(res.ds_id, "output").shape == (24, 2)
    with pytest.raises(EncodeError, match="TorchScript"):
        encode(store, _req(image_folder, model=str(path), layers=["backbone"]))


def test_unknown_model_spec(store, image_folder):
    with pytest.raises(EncodeError, match="unknown model"):
        encode(store, _req(image_folder, model="resnet9000"))
    with pytest.raises(EncodeError, match="no class"):
        encode(store, _req(image_folder, model=f"{MODELS}:Nope"))
    with pytest.raises(EncodeError, match="JSON"):
        encode(store, _req(image_folder, model=f"{MODELS}:TinyEncoder", model_kwargs="{bad"))


def test_single_image(store, tmp_path):
    from PIL import Image

    (tmp_path / "one").mkdir()
    Image.fromarray(np.full((5, 5), 9, np.uint8)).save(tmp_path / "one" / "a.png")
    res = encode(store, _req(tmp_path / "one"))
    assert res.n_encoded == 1


def test_cancel_then_resume(store, image_folder):
    seen = []
    calls = {"n": 0}

    def cancel_after_two():
        calls["n"] += 1
        return calls["n"] > 2

    req = _req(image_folder, model="pixels", batch_size=4, image_size=4)
    with pytest.raises(EncodeCancelled, match="resume"):
        encode(store, req, should_cancel=cancel_after_two)
    res = encode(store, req, progress=lambda d, t, m: seen.append((d, m)))
    assert "resuming" in seen[0][1] and seen[0][0] == 8
    assert res.n_encoded == 24
    other = Store(store.root.parent / "other")
    fresh = encode(other, req)
    assert fresh.ds_id == res.ds_id
    np.testing.assert_array_equal(
        store.vectors(res.ds_id, "output"), other.vectors(fresh.ds_id, "output")
    )


def test_multiband_tiffs_and_band_choice(store, tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    d = tmp_path / "tiles"
    d.mkdir()
    for i in range(6):
        tifffile.imwrite(d / f"tile_{i}.tif", rng.integers(0, 65535, (5, 16, 16), dtype=np.uint16))
    res = encode(store, _req(d, model="pixels", image_size=4, bands=(0, 2, 4)))
    assert store.vectors(res.ds_id, "output").shape == (6, 3 * 4 * 4)
    with pytest.raises(EncodeError):
        encode(store, _req(d, model="pixels", bands=(7,)))


def test_embeddings_file_import(store, tmp_path):
    v = np.random.default_rng(0).normal(size=(30, 4, 5, 5)).astype(np.float32)
    np.save(tmp_path / "lat.npy", v)
    res = encode(store, _req(tmp_path / "lat.npy", pool="max"))
    m = store.manifest(res.ds_id)
    assert m["layers"]["embedding"]["dim"] == 4
    np.testing.assert_allclose(store.vectors(res.ds_id, "embedding"), v.max(axis=(2, 3)), rtol=1e-6)
    assert store.spatial(res.ds_id, "embedding").shape == (30, 4, 5, 5)


def test_load_model_builtins():
    m = load_model("pixels", image_size=4)
    assert m.preprocess.size == (4, 4)
    with pytest.raises(EncoderError, match="weights"):
        load_model("demo-cnn")


def test_micasense_style_single_band_16bit(store, tmp_path):
    """Seed 000's files: one 16-bit band per file (IMG_0424_1.tif ... IMG_0424_5.tif)."""
    import tifffile

    rng = np.random.default_rng(2)
    d = tmp_path / "micasense"
    d.mkdir()
    for cap in (424, 425, 426):
        for band in range(1, 6):
            level = 5000 * band
            img = (level + rng.integers(0, 2000, (24, 32))).astype(np.uint16)
            tifffile.imwrite(d / f"IMG_{cap:04d}_{band}.tif", img)
    res = encode(store, _req(d, model="pixels", image_size=8))
    assert res.n_encoded == 15 and not res.skipped
    v = np.asarray(store.vectors(res.ds_id, "output"))
    ids = store.metadata(res.ds_id)["id"].tolist()
    band5 = [i for i, name in enumerate(ids) if name.endswith("_5.tif")]
    band1 = [i for i, name in enumerate(ids) if name.endswith("_1.tif")]
    # 16-bit values are scaled by 65535, so brighter bands give larger pixel latents
    assert v[band5].mean() > v[band1].mean() * 3
    assert 0.05 < v[band1].mean() < 0.15
