"""Decoders: the demo decoder trained for real, loading (TorchScript and file.py:Class with a
state dict), size checks, and latent -> PNG thumbnails for every output layout and range."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from latentmap.pipeline.decoders import (
    check_decoder,
    decode_images,
    load_decoder,
    to_uint8,
    train_demo_decoder,
)
from latentmap.pipeline.sampling import SamplingError, sample_latents
from PIL import Image
from torch import nn

MODELS = Path(__file__).parent / "data" / "user_models.py"


@pytest.fixture(scope="module")
def demo_decoder(demo) -> tuple[Path, float]:
    store, ds = demo
    t0 = time.perf_counter()
    path = train_demo_decoder(store, ds, "encoder")
    return path, time.perf_counter() - t0


def open_png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_demo_decoder_is_real_and_decodes_samples(demo, demo_decoder):
    store, ds = demo
    path, seconds = demo_decoder
    print(f"demo decoder trained in {seconds:.2f} s")
    assert path.is_file() and path.parent == store.root / "decoders"
    assert train_demo_decoder(store, ds, "encoder") == path  # second call: the saved file
    dec = load_decoder(str(path))
    assert dec.kind == "torchscript"
    assert check_decoder(dec, 32, layer="encoder") == (1, 8, 8)
    # it learned the digits: decoding items' own latents gives back their images
    from latentmap.pipeline.demo import load_digits_arrays

    meta = store.metadata(ds)
    images, _, _ = load_digits_arrays()
    X = np.array(store.vectors(ds, "encoder"), dtype=np.float32)
    with torch.inference_mode():
        out = dec.module(torch.from_numpy(X)).numpy()[:, 0]
    truth = images[meta["digit_index"].to_numpy()]
    mse = float(((out - truth) ** 2).mean())
    assert mse < 0.03, mse  # predicting the mean image gives 0.073
    # decode the samples of a sample_latents request: PNG thumbnails
    e = sample_latents(store, ds, "encoder", n=6, seed=1)
    pngs = decode_images(dec, e["latents"])
    assert len(pngs) == 6
    for data in pngs:
        im = open_png(data)
        assert im.format == "PNG" and im.size == (96, 96) and im.mode == "L"
    native = decode_images(dec, e["latents"][:1], size=None)
    assert open_png(native[0]).size == (8, 8)


def test_state_dict_decoder_from_a_python_file(demo_decoder, tmp_path):
    path, _ = demo_decoder
    scripted = torch.jit.load(str(path))
    ckpt = tmp_path / "decoder_weights.pt"
    torch.save(scripted.state_dict(), ckpt)
    dec = load_decoder(f"{MODELS}:DemoDecoder", ckpt)
    assert dec.kind == "class"
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        np.testing.assert_allclose(dec.module(z).numpy(), scripted(z).numpy(), atol=1e-6)
    assert decode_images(dec, z.numpy()) == decode_images(load_decoder(str(path)), z.numpy())


def test_size_mismatch_names_both_sizes(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_models_for_test", MODELS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    wide = mod.DemoDecoder(dim=64)
    ckpt = tmp_path / "wide.pt"
    torch.save(wide.state_dict(), ckpt)
    # file.py:Class built with kwargs + checkpoint
    dec = load_decoder(f"{MODELS}:DemoDecoder", ckpt, kwargs={"dim": 64})
    with pytest.raises(SamplingError) as e:
        check_decoder(dec, 32, layer="encoder")
    assert str(e.value) == "decoder expects latents of size 64 but layer encoder has 32"
    # TorchScript
    ts = tmp_path / "wide.ts"
    torch.jit.script(wide).save(str(ts))
    with pytest.raises(SamplingError) as e:
        check_decoder(load_decoder(str(ts)), 10, layer="head")
    assert str(e.value) == "decoder expects latents of size 64 but layer head has 10"
    with pytest.raises(SamplingError, match="expects latents of size 64 but the latents have"):
        decode_images(dec, np.zeros((2, 32), np.float32))


def test_bad_decoder_specs(tmp_path):
    with pytest.raises(SamplingError, match="decoder not found"):
        load_decoder(str(tmp_path / "missing.pt"))
    with pytest.raises(SamplingError, match="needs its trained weights"):
        load_decoder(f"{MODELS}:DemoDecoder")
    with pytest.raises(SamplingError, match="has no class 'Nope'"):
        load_decoder(f"{MODELS}:Nope", tmp_path / "x.pt")
    torch.save({"net.0.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(SamplingError, match="does not fit"):
        load_decoder(f"{MODELS}:DemoDecoder", tmp_path / "other.pt")
    (tmp_path / "plain.pt").write_bytes(b"not a model")
    with pytest.raises(SamplingError, match="not a TorchScript archive"):
        load_decoder(str(tmp_path / "plain.pt"))
    with pytest.raises(SamplingError, match="NaN"):
        decode_images(nn.Linear(4, 16), np.full((1, 4), np.nan, np.float32))


class Flat(nn.Module):
    """Latent -> a flat 3 x 6 x 6 image (reshaped by decode_images)."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.lin = nn.Linear(dim, 3 * 6 * 6)

    def forward(self, z):
        return torch.tanh(self.lin(z))


@pytest.mark.parametrize(
    ("module", "mode", "size"),
    [
        (
            nn.Sequential(nn.Linear(4, 3 * 5 * 7), nn.Tanh(), nn.Unflatten(1, (3, 5, 7))),
            "RGB",
            (96, 69),
        ),
        (nn.Sequential(nn.Linear(4, 5 * 6 * 6), nn.Unflatten(1, (5, 6, 6))), "RGB", (96, 96)),
        (nn.Sequential(nn.Linear(4, 36), nn.Unflatten(1, (6, 6))), "L", (96, 96)),
        (nn.Sequential(nn.Linear(4, 2 * 6 * 6), nn.Unflatten(1, (2, 6, 6))), "L", (96, 96)),
        (
            nn.Sequential(nn.Linear(4, 6 * 6 * 3), nn.Sigmoid(), nn.Unflatten(1, (6, 6, 3))),
            "RGB",
            (96, 96),
        ),
        (Flat(), "RGB", (96, 96)),
        (nn.Linear(4, 49), "L", (96, 96)),
    ],
)
def test_output_layouts(module, mode, size):
    torch.manual_seed(0)
    z = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    pngs = decode_images(module, z)
    assert len(pngs) == 3
    im = open_png(pngs[0])
    assert im.mode == mode and im.size == size


def test_ranges_are_normalised_to_uint8():
    a = np.array([[[[0.0, 0.5], [1.0, 0.25]]]])
    np.testing.assert_array_equal(to_uint8(a)[0, 0], [[0, 128], [255, 64]])
    b = np.array([[[[-1.0, 0.0], [1.0, 0.5]]]])
    np.testing.assert_array_equal(to_uint8(b)[0, 0], [[0, 128], [255, 191]])
    c = np.array([[[[10.0, 20.0], [30.0, 50.0]]], [[[-5.0, -5.0], [-5.0, -5.0]]]])
    np.testing.assert_array_equal(to_uint8(c)[0, 0], [[0, 64], [128, 255]])  # per image
    np.testing.assert_array_equal(to_uint8(c)[1, 0], [[128, 128], [128, 128]])  # constant
    d = np.zeros((1, 5, 2, 2))
    assert to_uint8(d).shape == (1, 3, 2, 2)  # more channels: the first 3
    e = np.array([[[[np.nan, 1.0], [0.0, 1.0]]]])
    assert to_uint8(e)[0, 0, 0, 0] == 0


def test_not_an_image_output():
    with pytest.raises(SamplingError, match="not a tensor|expected an image"):
        check_decoder(nn.Linear(4, 7), 4)  # 7 values: not a square image
