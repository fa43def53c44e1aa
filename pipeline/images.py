"""Read images of any common kind into float32 (C, H, W) arrays and render thumbnails.

* PNG / JPEG / BMP / WebP are decoded with Pillow, TIFF (including multi-band uint16 stacks
  and float32 rasters) with tifffile. The decoder is chosen from the file's magic bytes, so a
  mis-named file still opens.
* Pixel values are scaled to a common range: uint8 / 255, uint16 / 65535, other integer
  types by their dtype maximum, floats kept as they are (NaN / Inf become 0).
* Every failure is an :class:`ImageReadError` with a short reason a user can act on.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTS: frozenset[str] = frozenset({"png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"})

DEFAULT_MAX_PIXELS = 200_000_000
_MAX_MESSAGE = 160
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class ImageReadError(ValueError):
    """An image file could not be turned into an array (the message says why)."""


def is_image_file(
    path: str | Path, extensions: Sequence[str] | frozenset[str] = IMAGE_EXTS
) -> bool:
    """True when the file name has one of ``extensions`` (case-insensitive, no dot)."""
    exts = {e.lower().lstrip(".") for e in extensions}
    return Path(path).suffix.lower().lstrip(".") in exts


def _short(msg: object) -> str:
    """First line of an exception message, trimmed to a readable length."""
    text = str(msg).strip().splitlines()[0].strip() if str(msg).strip() else ""
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text or "unreadable image"


def _too_large(h: int, w: int, max_pixels: int) -> ImageReadError:
    return ImageReadError(f"image too large: {w}x{h} pixels exceeds limit of {max_pixels:,} pixels")


# --------------------------------------------------------------------------- scaling


def scale_to_float(a: np.ndarray) -> np.ndarray:
    """Scale integer pixels to [0, 1] (signed ints to [-1, 1]); floats kept, NaN/Inf -> 0."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(a.dtype, np.integer):
        top = float(np.iinfo(a.dtype).max)
        return (a.astype(np.float64) / top).astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        with np.errstate(over="ignore", invalid="ignore"):
            out = a.astype(np.float32)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0, copy=False)
    raise ImageReadError(f"unsupported pixel type {a.dtype}")


def _check_size(h: int, w: int, max_pixels: int) -> None:
    if h < 2 or w < 2:
        raise ImageReadError(f"image too small ({w}x{h})")
    if h * w > max_pixels:
        raise _too_large(h, w, max_pixels)


# --------------------------------------------------------------------------- Pillow


def _pil_to_array(im) -> np.ndarray:
    """Decoded Pillow image -> (C, H, W) float32 following the mode rules."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        a = np.asarray(im).astype(np.uint16)
        return scale_to_float(a)[None]
    if mode == "I":
        a = np.asarray(im)
        # Older Pillow opens 16-bit greyscale PNG as mode "I": values are really 16-bit.
        if im.format == "PNG" and a.size and a.min() >= 0 and a.max() <= 65535:
            return scale_to_float(a.astype(np.uint16))[None]
        return scale_to_float(a.astype(np.int32))[None]
    if mode == "F":
        return scale_to_float(np.asarray(im, dtype=np.float32))[None]
    if mode in ("L", "1"):
        return scale_to_float(np.asarray(im.convert("L")))[None]
    if mode in ("LA", "La"):
        return scale_to_float(np.asarray(im.convert("LA"))[..., 0])[None]
    if mode == "RGB":
        return scale_to_float(np.asarray(im)).transpose(2, 0, 1)
    if (mode == "P" and "transparency" in im.info) or mode in ("RGBA", "RGBa", "PA"):
        rgb = np.asarray(im.convert("RGBA"))[..., :3]
        return scale_to_float(rgb).transpose(2, 0, 1)
    return scale_to_float(np.asarray(im.convert("RGB"))).transpose(2, 0, 1)


def _read_pil(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                _check_size(h, w, max_pixels)
                im.load()
                return _pil_to_array(im)
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large: {_short(e)}") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image") from None
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        text = str(e).lower()
        if "truncated" in text or "broken data stream" in text or isinstance(e, EOFError):
            raise ImageReadError("truncated file") from None
        raise ImageReadError(_short(e)) from None


# --------------------------------------------------------------------------- TIFF


class _LogCollector(logging.Handler):
    """Collects tifffile's warnings emitted by this thread (tifffile logs, never raises)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _tifffile_warnings() -> Iterator[_LogCollector]:
    logger = logging.getLogger("tifffile")
    handler = _LogCollector()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def channel_axis(shape: Sequence[int]) -> str:
    """Layout of a 3-D stack: ``"CHW"`` or ``"HWC"`` (raises ImageReadError if unclear)."""
    s = tuple(int(x) for x in shape)
    if len(s) != 3:
        raise ImageReadError(f"unsupported image shape {s}")
    if s[-1] <= 16 and s[-1] < s[0]:
        return "HWC"
    if s[0] <= 32:
        return "CHW"
    if s[-1] <= 32:
        return "HWC"
    raise ImageReadError(f"cannot tell which axis holds the bands in shape {s}")


def _tiff_layout(shape: Sequence[int], axes: str) -> tuple[tuple[int, ...], str, tuple[int, int]]:
    """(squeezed shape, layout "HW"/"CHW"/"HWC", (H, W)) decided from the header alone."""
    shape = tuple(int(x) for x in shape)
    axes = axes if len(axes) == len(shape) else ""
    while len(shape) > 2 and shape[0] == 1:
        shape, axes = shape[1:], axes[1:]
    if len(shape) == 2:
        return shape, "HW", (shape[0], shape[1])
    if len(shape) != 3:
        raise ImageReadError(f"unsupported TIFF layout: shape {shape}")
    if axes.endswith("S") and axes[:2] != "SY":
        layout = "HWC"
    elif axes.startswith("S") or axes.startswith("C"):
        layout = "CHW"
    else:
        layout = channel_axis(shape)
    h, w = (shape[1], shape[2]) if layout == "CHW" else (shape[0], shape[1])
    return shape, layout, (h, w)


_TRUNCATION_HINTS = ("invalid page offset", "failed to reshape", "truncat", "failed to read")


def _is_truncation(message: str) -> bool:
    text = message.lower()
    return any(h in text for h in _TRUNCATION_HINTS)


def _is_fatal(message: str) -> bool:
    """tifffile warnings after reading that mean the pixels are wrong (not just odd tags)."""
    text = message.lower()
    return _is_truncation(text) or "decode" in text or "corrupt" in text


def _check_tiff_extent(tf, size: int) -> None:
    """Refuse files whose strips / tiles point beyond the end of the file."""
    for page in tf.pages:
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        for off, cnt in zip(offsets, counts, strict=False):
            if off and cnt and off + cnt > size:
                raise ImageReadError("truncated file")


def _read_tiff(path: Path, max_pixels: int) -> np.ndarray:
    import tifffile

    size = path.stat().st_size
    try:
        with _tifffile_warnings() as logged, tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise ImageReadError("not an image")
            series = tf.series[0]
            shape, layout, (h, w) = _tiff_layout(series.shape, series.axes)
            _check_size(h, w, max_pixels)
            offset = series.dataoffset  # contiguous data: one cheap check, no page parsing
            if offset is not None:
                if offset + series.nbytes > size:
                    raise ImageReadError("truncated file")
            else:
                _check_tiff_extent(tf, size)
            if any(_is_truncation(m) for m in logged.messages):
                raise ImageReadError("truncated file")
            data = series.asarray()
            fatal = [m for m in logged.messages if _is_fatal(m)]
            if fatal:
                raise ImageReadError(_short(fatal[0]))
            for m in logged.messages:
                log.debug("tifffile warning for %s: %s", path, m)
    except ImageReadError:
        raise
    except tifffile.TiffFileError as e:
        raise ImageReadError(f"truncated or corrupted TIFF ({_short(e)})") from None
    except (OSError, ValueError, IndexError, KeyError, EOFError, MemoryError) as e:
        text = str(e).lower()
        if "failed to read" in text or "truncated" in text or isinstance(e, EOFError):
            raise ImageReadError("truncated file") from None
        raise ImageReadError(_short(e)) from None
    data = np.asarray(data).reshape(shape)
    if layout == "HW":
        data = data[None]
    elif layout == "HWC":
        data = np.moveaxis(data, -1, 0)
    return np.ascontiguousarray(scale_to_float(data))


# --------------------------------------------------------------------------- public


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image file as a float32 array (C, H, W); raise ImageReadError with a reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except IsADirectoryError:
        raise ImageReadError("is a folder, not an image file") from None
    except OSError as e:
        raise ImageReadError(f"cannot open file: {_short(e.strerror or e)}") from None
    if size == 0:
        raise ImageReadError("empty file")
    reader = _read_tiff if magic in _TIFF_MAGIC else _read_pil
    arr = reader(path, max_pixels)
    _check_size(arr.shape[1], arr.shape[2], max_pixels)
    return arr


def _validate_rgb(rgb: Sequence[int]) -> tuple[int, int, int]:
    try:
        vals = tuple(rgb)
    except TypeError:
        raise ValueError(f"rgb must be 3 band indices, got {rgb!r}") from None
    if len(vals) != 3 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in vals
    ):
        raise ValueError(f"rgb must be 3 band indices (integers >= 0), got {rgb!r}")
    return int(vals[0]), int(vals[1]), int(vals[2])


def _validate_percentiles(percentiles: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ValueError(
            f"percentiles must be two numbers (low, high), got {percentiles!r}"
        ) from None
    if not (0.0 <= lo < hi <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got ({lo:g}, {hi:g})")
    return lo, hi


def stretch_band(band: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    """Percentile contrast stretch of one 2-D band to uint8 (NaN -> 0, never warns).

    A constant band is drawn at its own value when it lies in [0, 1] (scaled pixels), at mid
    grey otherwise.
    """
    band = np.asarray(band, dtype=np.float32)
    finite = np.isfinite(band)
    values = band[finite]
    if values.size > 1_000_000:
        values = values[:: values.size // 1_000_000 + 1]
    if values.size == 0:
        return np.zeros(band.shape, dtype=np.uint8)
    lo, hi = np.percentile(values, [lo_pct, hi_pct])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        fill = round(lo * 255) if 0.0 <= lo <= 1.0 else 128
        out = np.full(band.shape, fill, dtype=np.uint8)
        out[~finite] = 0
        return out
    scaled = (np.where(finite, band, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def thumbnail_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(h, w) with the longest side equal to ``size``, aspect ratio kept."""
    if h >= w:
        return size, max(1, round(w * size / h))
    return max(1, round(h * size / w)), size


def make_thumbnail(
    arr: np.ndarray,
    *,
    rgb: Sequence[int] = (0, 1, 2),
    percentiles: Sequence[float] = (2.0, 98.0),
    size: int = 96,
) -> bytes:
    """PNG bytes of a contrast-stretched preview of a (C, H, W) array.

    ``rgb`` picks the bands shown as red, green, blue (indices beyond the last band are
    clamped to it); 1- and 2-band images give a greyscale preview of band ``rgb[0]``. The
    longest side becomes ``size``; small images are enlarged with NEAREST, large ones
    reduced with LANCZOS.
    """
    from PIL import Image

    r, g, b = _validate_rgb(rgb)
    lo, hi = _validate_percentiles(percentiles)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] < 1:
        raise ValueError(f"expected a (C, H, W) array, got shape {a.shape}")
    c = a.shape[0]
    bands = [min(r, c - 1)] if c < 3 else [min(i, c - 1) for i in (r, g, b)]
    if len(set(bands)) == 1:
        pixels = stretch_band(a[bands[0]], lo, hi)
        im = Image.fromarray(pixels, mode="L")
    else:
        cache: dict[int, np.ndarray] = {}
        chans = [cache.setdefault(i, stretch_band(a[i], lo, hi)) for i in bands]
        im = Image.fromarray(np.ascontiguousarray(np.stack(chans, axis=-1)), mode="RGB")
    th, tw = thumbnail_size(a.shape[1], a.shape[2], int(size))
    if (th, tw) != (a.shape[1], a.shape[2]):
        if th >= a.shape[1] and tw >= a.shape[2]:
            im = im.resize((tw, th), Image.Resampling.NEAREST)
        else:
            im = im.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # 3x faster than 6, ~same size
    return buf.getvalue()


def resize_chw(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (C, H, W) array to (C, h, w), ``size = (h, w)``, bilinear with antialiasing.

    Works for any number of bands and float data; NaN / Inf are replaced by 0 first so they
    do not spread. A 2-D array is treated as one band.
    """
    import torch
    import torch.nn.functional as F

    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected a (C, H, W) array, got shape {a.shape}")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if a.shape[1:] == (h, w):
        return np.ascontiguousarray(a)
    t = torch.from_numpy(np.ascontiguousarray(a))[None]
    with torch.no_grad():
        out = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out[0].numpy().astype(np.float32, copy=False)
