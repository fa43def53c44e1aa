"""Bounding boxes carried in item metadata: find them, put them in pixels, draw them.

Metadata can hold boxes in two ways:

* four columns, one box per item, in any common spelling: ``x_min, y_min, x_max, y_max``,
  ``xmin ...``, ``x0, y0, x1, y1``, ``x1, y1, x2, y2``, ``left, top, right, bottom``, each
  optionally prefixed ``bbox_`` / ``box_`` / ``bb_`` (``bbox_x0`` ...), or ``bbox_x, bbox_y,
  bbox_w, bbox_h`` (corner plus size);
* one column (``bbox``, ``bboxes``, ``box``, ``boxes``, ``bounding_box(es)``) holding per item a
  JSON list (or a list): ``[x0, y0, x1, y1]``, ``[[x0, y0, x1, y1], ...]`` or
  ``[{"bbox": [x0, y0, x1, y1], "label": "cup"}, ...]``.

Coordinates are pixels of the original image, or normalised to 0..1 when every value of the
dataset is at most 1 (or nearly every one: see :func:`looks_normalized`). Boxes reaching outside the image are clipped to it (and counted); boxes
entirely outside are dropped (and counted).

Every user-facing failure is a :class:`BBoxError` with a one-line message.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Box outline colours, in order of a box's place in its item (RGB, 0..1).
COLORS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.10, 0.10),  # red
    (0.10, 0.35, 0.95),  # blue
    (0.10, 0.75, 0.20),  # green
    (1.00, 0.60, 0.00),  # orange
    (0.80, 0.10, 0.80),  # magenta
    (0.00, 0.80, 0.80),  # cyan
    (1.00, 0.90, 0.00),  # yellow
)

JSON_COLUMNS = (
    "bbox",
    "bboxes",
    "box",
    "boxes",
    "boundingbox",
    "boundingboxes",
    "bbs",
)
_PREFIXES = ("", "bbox", "box", "bb", "boundingbox")
_CORNERS = (
    ("xmin", "ymin", "xmax", "ymax"),
    ("minx", "miny", "maxx", "maxy"),
    ("x0", "y0", "x1", "y1"),
    ("x1", "y1", "x2", "y2"),
    ("left", "top", "right", "bottom"),
)
_SIZED = (("x", "y", "w", "h"), ("x", "y", "width", "height"))
_SIZE_COLUMNS = (
    ("imagewidth", "imageheight"),
    ("imgwidth", "imgheight"),
    ("imgw", "imgh"),
    ("originalwidth", "originalheight"),
    ("origwidth", "origheight"),
    ("width", "height"),
)
_BOX_KEYS = ("bbox", "box", "xyxy", "coords", "coordinates")
_LABEL_KEYS = ("label", "name", "category", "class", "text")


class BBoxError(ValueError):
    """Boxes that cannot be read or drawn; the message says why."""


@dataclass(frozen=True)
class Box:
    """One box, corners in (x, y) order: (x0, y0) top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy, self.label)


@dataclass
class BoxSet:
    """The boxes of every item (``boxes[row]`` may be empty) and how they were found."""

    boxes: list[list[Box]]
    normalized: bool
    source: str  # e.g. "columns x_min, y_min, x_max, y_max" or "column 'bbox'"
    invalid: int = 0  # entries present but not readable as boxes
    sizes: list[tuple[float, float] | None] | None = None  # original (width, height) per item
    notices: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def n_boxes(self) -> int:
        return sum(len(b) for b in self.boxes)

    def describe(self) -> dict[str, Any]:
        """What goes into a cache key: where the boxes came from and how they are read."""
        return {"source": self.source, "normalized": self.normalized}


def _norm(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _columns_by_norm(meta) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in meta.columns:
        out.setdefault(_norm(c), str(c))
    return out


def find_box_columns(meta) -> tuple[str, list[str]] | None:
    """("corners" | "sized" | "json", column names) of the boxes in ``meta``, or None."""
    import pandas as pd

    cols = _columns_by_norm(meta)

    def numeric(names: Sequence[str]) -> bool:
        return all(
            pd.api.types.is_numeric_dtype(meta[c]) and not pd.api.types.is_bool_dtype(meta[c])
            for c in names
        )

    for prefix in _PREFIXES:
        for names in _CORNERS:
            found = [cols.get(prefix + n) for n in names]
            if all(found) and numeric(found):  # type: ignore[arg-type]
                return "corners", [str(f) for f in found]
    for prefix in _PREFIXES[1:]:
        for names in _SIZED:
            found = [cols.get(prefix + n) for n in names]
            if all(found) and numeric(found):  # type: ignore[arg-type]
                return "sized", [str(f) for f in found]
    for name in JSON_COLUMNS:
        if name in cols:
            return "json", [cols[name]]
    return None


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _as_list(v: Any) -> Any:
    """JSON text -> Python; numpy arrays (parquet list cells) -> lists, recursively."""
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", errors="replace")
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            return None
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [_as_list(x) if isinstance(x, (np.ndarray, list, tuple, dict)) else x for x in v]
    if isinstance(v, dict):
        return {
            k: _as_list(x) if isinstance(x, (np.ndarray, list, tuple)) else x for k, x in v.items()
        }
    return v


def _box(values: Any, label: Any = None) -> Box | None:
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        return None
    nums = [_number(x) for x in values]
    if any(x is None for x in nums):
        return None
    x0, y0, x1, y1 = nums  # type: ignore[misc]
    lab = None if _is_missing(label) else str(label)
    return Box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), lab)  # type: ignore[type-var]


def _dict_box(d: dict) -> Box | None:
    label = next((d[k] for k in _LABEL_KEYS if k in d), None)
    for k in _BOX_KEYS:
        if k in d:
            return _box(d[k], label)
    keys = {_norm(k): k for k in d}
    for names in _CORNERS:
        if all(n in keys for n in names):
            return _box([d[keys[n]] for n in names], label)
    return None


def parse_box_cell(value: Any) -> tuple[list[Box], int]:
    """One cell of a box column -> (boxes, entries that were not readable boxes)."""
    if _is_missing(value):
        return [], 0
    v = _as_list(value)
    if v is None:
        return [], 1
    if isinstance(v, dict):
        b = _dict_box(v)
        return ([b], 0) if b else ([], 1)
    if not isinstance(v, list):
        return [], 1
    if not v:
        return [], 0
    if len(v) == 4 and all(not isinstance(x, (list, tuple, dict)) for x in v):
        b = _box(v)
        return ([b], 0) if b else ([], 1)
    boxes: list[Box] = []
    bad = 0
    for item in v:
        b = _dict_box(item) if isinstance(item, dict) else _box(item)
        if b is None:
            bad += 1
        else:
            boxes.append(b)
    return boxes, bad


def _sizes(meta) -> list[tuple[float, float] | None] | None:
    cols = _columns_by_norm(meta)
    for wname, hname in _SIZE_COLUMNS:
        if wname in cols and hname in cols:
            ws, hs = meta[cols[wname]].tolist(), meta[cols[hname]].tolist()
            out: list[tuple[float, float] | None] = []
            for w, h in zip(ws, hs, strict=True):
                fw, fh = _number(w), _number(h)
                out.append((fw, fh) if fw and fh and fw > 0 and fh > 0 else None)
            if any(s is not None for s in out):
                return out
    return None


def looks_normalized(values: Sequence[float]) -> bool:
    """True when box coordinates are fractions of the image size: every value is at most 1,
    or a few boxes reach past the image edge (all values at most 2, or three quarters of
    them at most 1), which no box measured in pixels does."""
    if not len(values):
        return False
    v = np.asarray(values, dtype=np.float64)
    return float(v.max()) <= 2.0 or float((v <= 1.0).mean()) >= 0.75


def find_boxes(meta) -> BoxSet | None:
    """The boxes of every row of ``meta``, or None when it has no box columns."""
    found = find_box_columns(meta)
    if found is None:
        return None
    kind, names = found
    boxes: list[list[Box]] = []
    invalid = 0
    if kind == "json":
        for cell in meta[names[0]].tolist():
            bs, bad = parse_box_cell(cell)
            boxes.append(bs)
            invalid += bad
        source = f"column {names[0]!r}"
    else:
        values = meta[names].to_numpy(dtype=np.float64)
        for a, b, c, d in values:
            if not all(np.isfinite([a, b, c, d])):
                boxes.append([])
                continue
            if kind == "sized":
                c, d = a + c, b + d
            box = _box([a, b, c, d])
            boxes.append([box] if box else [])
        source = f"columns {', '.join(names)}" + (
            " (corner, width, height)" if kind == "sized" else ""
        )
    every = [v for bs in boxes for b in bs for v in (b.x0, b.y0, b.x1, b.y1)]
    normalized = looks_normalized(every)
    out = BoxSet(boxes, normalized, source, invalid, None if normalized else _sizes(meta))
    if invalid:
        out.notices.append(
            f"{invalid} entries of {source} are not boxes [x0, y0, x1, y1] and were ignored"
        )
    return out


def require_boxes(meta) -> BoxSet:
    """:func:`find_boxes`, raising BBoxError when the metadata has no readable boxes."""
    found = find_boxes(meta)
    if found is None:
        cols = ", ".join(map(str, list(meta.columns)[:15])) or "none"
        raise BBoxError(
            "the metadata has no bounding boxes: add columns x_min, y_min, x_max, y_max or a "
            f"column 'bbox' holding [x0, y0, x1, y1] per item (columns: {cols})"
        )
    if found.n_boxes == 0:
        raise BBoxError(
            f"{found.source} holds no readable box: expected [x0, y0, x1, y1], a list of them, "
            'or [{"bbox": [x0, y0, x1, y1], "label": ...}] per item'
        )
    return found


def to_pixels(
    boxes: Sequence[Box],
    width: int,
    height: int,
    *,
    normalized: bool,
    source_size: tuple[float, float] | None = None,
) -> tuple[list[Box], int, int]:
    """Boxes in the pixels of a ``width`` x ``height`` image, clipped to it.

    Normalised boxes are scaled by the image size; pixel boxes by image size / ``source_size``
    (the size of the image they were given for) when it is known. Returns (boxes inside the
    image, number clipped, number dropped because they lie entirely outside).
    """
    if normalized:
        sx, sy = float(width), float(height)
    elif source_size is not None:
        sx, sy = width / float(source_size[0]), height / float(source_size[1])
    else:
        sx = sy = 1.0
    out: list[Box] = []
    clipped = dropped = 0
    for b in boxes:
        s = b.scaled(sx, sy)
        if s.x1 <= 0 or s.y1 <= 0 or s.x0 >= width or s.y0 >= height:
            dropped += 1
            continue
        c = Box(
            min(max(s.x0, 0.0), width),
            min(max(s.y0, 0.0), height),
            min(max(s.x1, 0.0), width),
            min(max(s.y1, 0.0), height),
            s.label,
        )
        if c != s:
            clipped += 1
        out.append(c)
    return out, clipped, dropped


def line_width(height: int, width: int) -> int:
    """Outline thickness in pixels for an image of this size (2 px on a thumbnail)."""
    return max(2, round(min(height, width) / 128))


def _as_boxes(boxes: Sequence[Any]) -> list[Box]:
    out = []
    for b in boxes:
        if isinstance(b, Box):
            out.append(b)
            continue
        box = _box(list(b) if isinstance(b, (list, tuple, np.ndarray)) else b)
        if box is None:
            raise BBoxError(f"not a box [x0, y0, x1, y1]: {b!r}")
        out.append(box)
    return out


def _edges(b: Box, h: int, w: int, lw: int) -> tuple[int, int, int, int, int] | None:
    """Integer pixel extent (top, bottom, left, right inclusive) and line width, or None."""
    left, top = int(math.floor(b.x0)), int(math.floor(b.y0))
    right, bottom = int(math.ceil(b.x1)) - 1, int(math.ceil(b.y1)) - 1
    left, top = max(0, min(left, w - 1)), max(0, min(top, h - 1))
    right, bottom = max(left, min(right, w - 1)), max(top, min(bottom, h - 1))
    if right < 0 or bottom < 0:
        return None
    return (
        top,
        bottom,
        left,
        right,
        max(1, min(lw, (right - left) // 2 + 1, (bottom - top) // 2 + 1)),
    )


def _band_value(band: np.ndarray, fraction: float) -> float:
    finite = band[np.isfinite(band)]
    if finite.size == 0:
        return fraction
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif not hi > lo:
        hi = lo + 1.0
    return lo + fraction * (hi - lo)


def _draw_array(a: np.ndarray, boxes: list[Box], lw: int | None) -> np.ndarray:
    arr = np.array(a, dtype=np.float32 if a.dtype.kind != "f" else a.dtype, copy=True)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[None]
    if arr.ndim != 3:
        raise BBoxError(f"draw_boxes needs a (C, H, W) array, got shape {a.shape}")
    c, h, w = arr.shape
    width_px = lw or line_width(h, w)
    for k, b in enumerate(boxes):
        e = _edges(b, h, w, width_px)
        if e is None:
            continue
        top, bottom, left, right, t = e
        rgb = COLORS[k % len(COLORS)]
        for band in range(c):
            frac = rgb[band] if c >= 3 and band < 3 else 1.0
            v = _band_value(a[band] if a.ndim == 3 else a, frac)
            plane = arr[band]
            plane[top : top + t, left : right + 1] = v
            plane[bottom - t + 1 : bottom + 1, left : right + 1] = v
            plane[top : bottom + 1, left : left + t] = v
            plane[top : bottom + 1, right - t + 1 : right + 1] = v
    return arr[0] if squeeze else arr


def _draw_pil(im, boxes: list[Box], lw: int | None):
    from PIL import ImageDraw

    mode = "RGBA" if "A" in im.getbands() else "RGB"
    out = im.convert(mode) if im.mode != mode else im.copy()
    w, h = out.size
    width_px = lw or line_width(h, w)
    draw = ImageDraw.Draw(out)
    for k, b in enumerate(boxes):
        e = _edges(b, h, w, width_px)
        if e is None:
            continue
        top, bottom, left, right, t = e
        color = tuple(round(255 * v) for v in COLORS[k % len(COLORS)])
        if mode == "RGBA":
            color = (*color, 255)
        draw.rectangle([left, top, right, bottom], outline=color, width=t)
    return out


def draw_boxes(image: Any, boxes: Sequence[Any], *, width: int | None = None) -> Any:
    """Draw box outlines (pixel coordinates of ``image``) on a copy of the image.

    ``image`` is a (C, H, W) array (returned as an array of the same shape: bands 0-2 take
    the box colour, other bands their brightest value) or a PIL image (returned as RGB /
    RGBA). Boxes are :class:`Box` or [x0, y0, x1, y1]; each box in its item's order gets the
    next colour of :data:`COLORS`. Parts outside the image are not drawn.
    """
    bs = _as_boxes(boxes)
    if isinstance(image, np.ndarray):
        h, w = image.shape[-2:]
        return _draw_array(image, to_pixels(bs, w, h, normalized=False)[0], width)
    if hasattr(image, "getbands") and hasattr(image, "convert"):
        w, h = image.size
        return _draw_pil(image, to_pixels(bs, w, h, normalized=False)[0], width)
    raise BBoxError(
        f"draw_boxes needs a (C, H, W) array or a PIL image, got {type(image).__name__}"
    )


def draw_on_png(
    data: bytes,
    boxes: Sequence[Box],
    *,
    normalized: bool,
    source_size: tuple[float, float] | None = None,
) -> tuple[bytes, int, int]:
    """A thumbnail (PNG / JPEG bytes) with the item's boxes drawn, as PNG bytes.

    Returns (png, clipped, dropped). Drawing the same boxes twice gives the same bytes.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            w, h = im.size
            px, clipped, dropped = to_pixels(
                boxes, w, h, normalized=normalized, source_size=source_size
            )
            out = _draw_pil(im, px, None)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise BBoxError(f"cannot draw boxes on a thumbnail that is not an image ({e})") from None
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), clipped, dropped


def clip_notice(clipped: int, dropped: int) -> str | None:
    """One line about boxes that reached outside their image (None when none did)."""
    parts = []
    if clipped:
        parts.append(
            f"{clipped} bounding boxes reached outside the image and were clipped to it"
            if clipped != 1
            else "1 bounding box reached outside the image and was clipped to it"
        )
    if dropped:
        parts.append(
            f"{dropped} bounding boxes lay entirely outside the image and were not drawn"
            if dropped != 1
            else "1 bounding box lay entirely outside the image and was not drawn"
        )
    return "; ".join(parts) or None


def draw_on_thumbnails(
    thumbnails: Sequence[bytes | None], boxset: BoxSet
) -> tuple[list[bytes | None], list[str]]:
    """Every thumbnail with its item's boxes drawn (items without boxes keep theirs as is).

    Returns (thumbnails, notices). Pixel boxes are scaled from the original image size when
    the metadata has width / height columns; otherwise they are taken as thumbnail pixels.
    """
    if len(thumbnails) != len(boxset):
        raise BBoxError(f"{len(thumbnails)} thumbnails but {len(boxset)} rows of boxes")
    out: list[bytes | None] = []
    clipped = dropped = 0
    unscaled = False
    for i, (data, boxes) in enumerate(zip(thumbnails, boxset.boxes, strict=True)):
        if not data or not boxes:
            out.append(data)
            continue
        size = boxset.sizes[i] if boxset.sizes is not None else None
        unscaled |= not boxset.normalized and size is None
        png, c, d = draw_on_png(data, boxes, normalized=boxset.normalized, source_size=size)
        out.append(png)
        clipped += c
        dropped += d
    notices = list(boxset.notices)
    note = clip_notice(clipped, dropped)
    if note:
        notices.append(note)
    if unscaled:
        notices.append(
            f"bounding boxes ({boxset.source}) are in pixels but the metadata has no image "
            "width / height columns: drawn in thumbnail pixels"
        )
    return out, notices
