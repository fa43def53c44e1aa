"""Reading real image files (Pillow + tifffile) and rendering thumbnails."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from latentmap.pipeline.images import (
    IMAGE_EXTS,
    ImageReadError,
    channel_axis,
    is_image_file,
    make_thumbnail,
    read_image,
    resize_chw,
)
from PIL import Image


def save_pil(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def decode_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# --------------------------------------------------------------------------- Pillow formats


def test_extensions_cover_common_formats():
    assert {"png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"} <= set(IMAGE_EXTS)
    assert is_image_file("a/B.TIF") and is_image_file("x.JPeG")
    assert not is_image_file("notes.txt") and not is_image_file("noext")


def test_rgb_png_scaled_to_unit_range(tmp_path):
    arr = np.zeros((6, 9, 3), np.uint8)
    arr[..., 0] = 255
    arr[2, 3] = (10, 20, 30)
    out = read_image(save_pil(tmp_path / "a.png", arr))
    assert out.dtype == np.float32 and out.shape == (3, 6, 9)
    assert out[0, 0, 0] == 1.0 and out[1, 0, 0] == 0.0
    np.testing.assert_allclose(out[:, 2, 3], np.array([10, 20, 30]) / 255, rtol=1e-6)


def test_grayscale_png_is_one_band(tmp_path):
    arr = np.arange(48, dtype=np.uint8).reshape(6, 8)
    out = read_image(save_pil(tmp_path / "g.png", arr))
    assert out.shape == (1, 6, 8)
    np.testing.assert_allclose(out[0], arr / 255, rtol=1e-6)


def test_la_rgba_and_palette_modes(tmp_path):
    la = Image.fromarray(np.full((5, 7, 2), 100, np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (1, 5, 7)

    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 7
    out = read_image(save_pil(tmp_path / "rgba.png", rgba))
    assert out.shape == (3, 5, 7) and out[1].min() == 1.0

    p = Image.fromarray(np.full((5, 7, 3), (0, 0, 255), np.uint8)).convert("P")
    p.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (3, 5, 7) and out[2].max() == 1.0


def test_16bit_png_scaled_by_65535(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], np.uint16).repeat(3, 0).repeat(3, 1)
    out = read_image(save_pil(tmp_path / "d.png", arr))
    assert out.shape == (1, 6, 6)
    assert out.max() == 1.0 and out.min() == 0.0


def test_jpeg_bmp_webp(tmp_path):
    arr = np.full((12, 10, 3), 128, np.uint8)
    for name in ("x.jpg", "x.bmp", "x.webp"):
        out = read_image(save_pil(tmp_path / name, arr))
        assert out.shape == (3, 12, 10)
        assert abs(float(out.mean()) - 128 / 255) < 0.02


def test_float_and_int32_pillow_modes(tmp_path):
    f = np.linspace(-2, 2, 20, dtype=np.float32).reshape(4, 5)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    out = read_image(tmp_path / "f.tif")
    np.testing.assert_allclose(out[0], f)


# --------------------------------------------------------------------------- TIFF


def test_16bit_single_band_tiff(tmp_path):
    arr = np.array([[0, 65535, 32767], [1, 2, 3], [4, 5, 6]], np.uint16)
    path = tmp_path / "IMG_0424_5.tif"
    tifffile.imwrite(path, arr)
    out = read_image(path)
    assert out.shape == (1, 3, 3) and out.dtype == np.float32
    assert out[0, 0, 1] == 1.0
    assert out[0, 0, 2] == pytest.approx(32767 / 65535)


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_five_band_uint16_stack(tmp_path, layout):
    rng = np.random.default_rng(1)
    chw = rng.integers(0, 65536, size=(5, 20, 24), dtype=np.uint16)
    data = chw if layout == "CHW" else np.moveaxis(chw, 0, -1)
    path = tmp_path / f"stack_{layout}.tiff"
    tifffile.imwrite(path, data)
    out = read_image(path)
    assert out.shape == (5, 20, 24)
    np.testing.assert_allclose(out, chw / 65535, rtol=1e-6)


def test_rgb_and_planar_tiff(tmp_path):
    hwc = np.zeros((10, 12, 3), np.uint8)
    hwc[..., 2] = 255
    tifffile.imwrite(tmp_path / "rgb.tif", hwc, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "planar.tif",
        np.moveaxis(hwc, -1, 0),
        photometric="rgb",
        planarconfig="separate",
    )
    for name in ("rgb.tif", "planar.tif"):
        out = read_image(tmp_path / name)
        assert out.shape == (3, 10, 12)
        assert out[2].min() == 1.0 and out[0].max() == 0.0


def test_leading_singleton_dims_squeezed(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.ones((1, 1, 4, 6), np.uint8) * 255)
    out = read_image(tmp_path / "s.tif")
    assert out.shape == (1, 4, 6) and out.max() == 1.0


def test_float32_tiff_nan_and_inf_become_zero(tmp_path):
    arr = np.array([[1.5, np.nan, -3.0], [np.inf, 0.25, -np.inf]], np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    out = read_image(tmp_path / "f.tif")
    assert out.shape == (1, 2, 3) and np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], [[1.5, 0.0, -3.0], [0.0, 0.25, 0.0]])


def test_signed_int_scaled_by_dtype_max(tmp_path):
    arr = np.array([[0, 32767], [-32767, 100]], np.int16)
    tifffile.imwrite(tmp_path / "i.tif", arr)
    out = read_image(tmp_path / "i.tif")
    np.testing.assert_allclose(out[0], arr / 32767, rtol=1e-6)


def test_channel_axis_rules():
    assert channel_axis((64, 64, 5)) == "HWC"
    assert channel_axis((5, 64, 64)) == "CHW"
    assert channel_axis((16, 16, 16)) == "CHW"
    assert channel_axis((100, 200, 20)) == "HWC"
    with pytest.raises(ImageReadError, match="which axis holds the bands"):
        channel_axis((100, 200, 300))


def test_huge_tiff_header_refused_without_reading(tmp_path):
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, shape=(100000, 100000), dtype="uint8")
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match=r"image too large: 100000x100000 pixels exceeds"):
        read_image(path)
    assert time.perf_counter() - start < 2.0


def test_max_pixels_applies_to_pillow_images(tmp_path):
    path = save_pil(tmp_path / "a.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(
        ImageReadError, match=r"image too large: 40x30 pixels exceeds limit of 1,000"
    ):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=1200).shape == (1, 30, 40)


# --------------------------------------------------------------------------- failures


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="^empty file$"):
        read_image(tmp_path / "e.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello, this is text")
    with pytest.raises(ImageReadError, match="^not an image$"):
        read_image(tmp_path / "notes.png")


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    good = save_pil(tmp_path / "g.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = good.read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="^truncated file$"):
        read_image(tmp_path / "t.png")


def test_truncated_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "g.tif", np.ones((5, 40, 40), np.uint16))
    data = (tmp_path / "g.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "t.tif")


def test_one_pixel_image_too_small(tmp_path):
    path = save_pil(tmp_path / "tiny.png", np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageReadError, match=r"^image too small \(1x1\)$"):
        read_image(path)
    tifffile.imwrite(tmp_path / "row.tif", np.zeros((1, 50), np.uint16))
    with pytest.raises(ImageReadError, match=r"image too small \(50x1\)"):
        read_image(tmp_path / "row.tif")


def test_error_is_value_error():
    assert issubclass(ImageReadError, ValueError)


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_png_size_and_aspect():
    arr = np.random.default_rng(0).random((3, 50, 100), dtype=np.float32)
    im = decode_png(make_thumbnail(arr, size=64))
    assert im.mode == "RGB" and im.size == (64, 32)
    im = decode_png(make_thumbnail(arr[:, :, :25], size=40))
    assert im.size == (20, 40)


def test_thumbnail_single_band_is_grayscale():
    arr = np.random.default_rng(0).random((1, 20, 20), dtype=np.float32)
    assert decode_png(make_thumbnail(arr)).mode == "L"
    two = np.random.default_rng(0).random((2, 20, 20), dtype=np.float32)
    assert decode_png(make_thumbnail(two)).mode == "L"
    two_first = np.asarray(decode_png(make_thumbnail(two[:1])))
    np.testing.assert_array_equal(np.asarray(decode_png(make_thumbnail(two))), two_first)


def test_thumbnail_band_selection_changes_output():
    rng = np.random.default_rng(0)
    arr = rng.random((5, 32, 32), dtype=np.float32)
    a = np.asarray(decode_png(make_thumbnail(arr, rgb=(0, 1, 2))))
    b = np.asarray(decode_png(make_thumbnail(arr, rgb=(4, 3, 2))))
    assert a.shape == b.shape == (96, 96, 3)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a[..., 2], b[..., 2])
    # indices past the last band are clamped, not an error
    assert decode_png(make_thumbnail(arr[:3], rgb=(9, 9, 9))).mode == "L"


def test_thumbnail_percentile_stretch_uses_full_range():
    arr = np.linspace(0.4, 0.6, 400, dtype=np.float32).reshape(1, 20, 20)
    px = np.asarray(decode_png(make_thumbnail(arr, size=20, percentiles=(0, 100))))
    assert px.min() == 0 and px.max() == 255


def test_thumbnail_constant_and_nan_images_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zeros = np.asarray(decode_png(make_thumbnail(np.zeros((3, 10, 10), np.float32))))
        assert zeros.max() == 0
        half = np.asarray(decode_png(make_thumbnail(np.full((1, 10, 10), 0.5, np.float32))))
        assert np.all(half == 128)
        nan = np.asarray(decode_png(make_thumbnail(np.full((3, 10, 10), np.nan, np.float32))))
        assert nan.max() == 0


def test_small_image_upscaled_with_nearest():
    digit = np.zeros((1, 8, 8), np.float32)
    digit[0, :, 4:] = 1.0
    px = np.asarray(decode_png(make_thumbnail(digit, size=96)))
    assert px.shape == (96, 96)
    assert set(np.unique(px).tolist()) == {0, 255}  # blocky, no interpolated greys
    assert (px[:, :48] == 0).all() and (px[:, 48:] == 255).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rgb": (0, 1)}, "rgb must be 3 band indices"),
        ({"rgb": (0, -1, 2)}, "integers >= 0"),
        ({"rgb": (0, 1.5, 2)}, "integers >= 0"),
        ({"percentiles": (50, 10)}, "0 <= low < high <= 100"),
        ({"percentiles": (0, 101)}, "0 <= low < high <= 100"),
        ({"percentiles": (5,)}, "two numbers"),
        ({"size": 0}, "size must be a positive integer"),
    ],
)
def test_thumbnail_validates_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_thumbnail(np.zeros((3, 4, 4), np.float32), **kwargs)


def test_thumbnail_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"expected a \(C, H, W\) array"):
        make_thumbnail(np.zeros((2, 3, 4, 4), np.float32))


def test_thumbnail_of_read_image_roundtrip(tmp_path):
    tifffile.imwrite(
        tmp_path / "s.tif", np.random.default_rng(0).integers(0, 4000, (5, 30, 40), dtype=np.uint16)
    )
    im = decode_png(make_thumbnail(read_image(tmp_path / "s.tif"), rgb=(2, 1, 0), size=48))
    assert im.size == (48, 36) and im.mode == "RGB"


# --------------------------------------------------------------------------- resize


def test_resize_chw_any_band_count_and_float():
    rng = np.random.default_rng(0)
    arr = (rng.random((7, 40, 30)) * 1000 - 500).astype(np.float32)
    out = resize_chw(arr, (20, 15))
    assert out.shape == (7, 20, 15) and out.dtype == np.float32
    # antialiased downscale by 2 is close to 2x2 block means
    blocks = arr.reshape(7, 20, 2, 15, 2).mean(axis=(2, 4))
    assert np.abs(out - blocks).mean() < np.abs(arr[:, ::2, ::2] - blocks).mean()
    np.testing.assert_allclose(out.mean(axis=(1, 2)), arr.mean(axis=(1, 2)), atol=5.0)


def test_resize_chw_upscale_constant_and_identity():
    arr = np.full((2, 4, 4), 3.25, np.float32)
    out = resize_chw(arr, (9, 13))
    assert out.shape == (2, 9, 13)
    np.testing.assert_allclose(out, 3.25, rtol=1e-6)
    same = resize_chw(arr, (4, 4))
    np.testing.assert_array_equal(same, arr)


def test_resize_chw_nan_does_not_spread_and_validates():
    arr = np.ones((1, 8, 8), np.float32)
    arr[0, 0, 0] = np.nan
    assert np.isfinite(resize_chw(arr, (4, 4))).all()
    assert resize_chw(np.ones((8, 8), np.float32), (4, 4)).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="size must be positive"):
        resize_chw(arr, (0, 4))
    with pytest.raises(ValueError, match=r"expected a \(C, H, W\)"):
        resize_chw(np.ones((1, 1, 8, 8), np.float32), (4, 4))
