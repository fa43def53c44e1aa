"""Thumbnail band choice: which three bands make a multispectral item's RGB preview, and the
contrast stretch, regenerated from the source images per choice and cached.

A choice is a *variant* (``variant_key``: "b3-2-1_p2-98"); its PNGs live beside the encoded
thumbnails in ``datasets/<id>/thumbs_<variant>/<row>.png`` and a cache entry records that the
variant is complete. Only datasets encoded from an image folder can be regenerated: the
encode records how the folder was opened (``manifest["source"]["open"]``), the band count and
which source item each row came from (``item_index.npy``). No Dash here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from latentmap.pipeline.store import Entry, Store, save_bytes

log = logging.getLogger(__name__)

DEFAULT_PERCENTILES = (2.0, 98.0)
VARIANT_RE = re.compile(r"^b\d{1,4}-\d{1,4}-\d{1,4}_p\d{1,3}(?:\.\d{1,2})?-\d{1,3}(?:\.\d{1,2})?$")
ITEM_INDEX = "item_index.npy"
THUMBS_VERSION = 1


class BandsError(ValueError):
    """A band choice that cannot be applied (message meant for the user)."""


@dataclass(frozen=True)
class BandInfo:
    """What the band picker of a dataset can offer."""

    n_bands: int | None  # bands of the source images (None: unknown / not regenerable)
    encoded_rgb: tuple[int, int, int]  # the bands of the thumbnails made at encode time
    reason: str | None = None  # why thumbnails cannot be regenerated (None: they can)

    @property
    def available(self) -> bool:
        return self.reason is None and bool(self.n_bands)


def _fmt_pct(p: float) -> str:
    return f"{round(float(p), 2):g}"


def variant_key(rgb: Sequence[int], percentiles: Sequence[float]) -> str:
    """The name of a band choice: ``b<r>-<g>-<b>_p<lo>-<hi>`` (0-based bands)."""
    r, g, b = (int(x) for x in rgb)
    lo, hi = (float(p) for p in percentiles)
    return f"b{r}-{g}-{b}_p{_fmt_pct(lo)}-{_fmt_pct(hi)}"


def parse_variant_key(key: str) -> tuple[tuple[int, int, int], tuple[float, float]]:
    if not isinstance(key, str) or not VARIANT_RE.match(key):
        raise BandsError(f"not a band choice: {str(key)[:60]!r}")
    bands, pct = key[1:].split("_p")
    r, g, b = (int(x) for x in bands.split("-"))
    lo, hi = (float(x) for x in pct.split("-"))
    return (r, g, b), (lo, hi)


def band_info(store: Store, ds_id: str) -> BandInfo:
    """The band count and encode-time choice of a dataset, and whether it can be regenerated."""
    m = store.manifest(ds_id)
    thumb = (m.get("key") or {}).get("thumb") or [[0, 1, 2], 96]
    try:
        encoded = tuple(int(x) for x in thumb[0])[:3]
        encoded = encoded if len(encoded) == 3 else (0, 1, 2)
    except (TypeError, ValueError):
        encoded = (0, 1, 2)
    src = m.get("source") or {}
    if src.get("kind") != "folder":
        return BandInfo(None, encoded, "its thumbnails came with the data, not from images")
    if "open" not in src or "bands" not in src:
        return BandInfo(None, encoded, "it was encoded before band picking existed: re-encode it")
    if not (store.dataset_dir(ds_id) / ITEM_INDEX).is_file():
        return BandInfo(None, encoded, "its item index is missing: re-encode it")
    if not Path(src.get("path", "")).is_dir():
        return BandInfo(None, encoded, f"its image folder {src.get('path')} is not there any more")
    return BandInfo(int(src["bands"]), encoded, None)


def check_choice(
    info: BandInfo, rgb: Sequence[Any], percentiles: Sequence[Any] | None
) -> tuple[tuple[int, int, int], tuple[float, float]]:
    """Validate a choice against a dataset: three band numbers that exist, 0 <= lo < hi <= 100."""
    if not info.available:
        raise BandsError(f"Thumbnails of this dataset cannot be regenerated: {info.reason}.")
    try:
        vals = [int(str(x).strip()) for x in rgb]
    except (TypeError, ValueError):
        raise BandsError(f"Bands must be three band numbers, got {list(rgb)!r}") from None
    if len(vals) != 3:
        raise BandsError(f"Bands must be three band numbers (red, green, blue), got {len(vals)}")
    n = int(info.n_bands or 0)
    bad = [v for v in vals if not 0 <= v < n]
    if bad:
        raise BandsError(
            f"Band {bad[0]} does not exist: the images have {n} band{'s' if n != 1 else ''} "
            f"(0–{n - 1})"
        )
    if n < 3:  # fewer than 3 bands: a greyscale preview of the red choice
        vals = [vals[0]] * 3
    pct = DEFAULT_PERCENTILES if percentiles is None else percentiles
    try:
        lo, hi = (float(str(p).strip()) for p in pct)
    except (TypeError, ValueError):
        raise BandsError(f"Stretch must be two percentiles (low, high), got {pct!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi <= 100):
        raise BandsError(
            f"Stretch percentiles must satisfy 0 <= low < high <= 100, got {lo:g}, {hi:g}"
        )
    return (vals[0], vals[1], vals[2]), (round(lo, 2), round(hi, 2))


def is_default(info: BandInfo, rgb: Sequence[int], percentiles: Sequence[float]) -> bool:
    """True when the choice equals the thumbnails made at encode time."""
    n = int(info.n_bands or 3)
    clamp = tuple(min(int(i), n - 1) for i in info.encoded_rgb)
    if n < 3:
        clamp = (clamp[0],) * 3
    return tuple(rgb) == clamp and tuple(float(p) for p in percentiles) == DEFAULT_PERCENTILES


def variant_dir(store: Store, ds_id: str, key: str) -> Path:
    if not VARIANT_RE.match(key):
        raise BandsError(f"not a band choice: {key[:60]!r}")
    return store.dataset_dir(ds_id) / f"thumbs_{key}"


def thumbs_key(store: Store, ds_id: str, key: str) -> dict[str, Any]:
    """The cache key recording that a variant's thumbnails are complete."""
    m = store.manifest(ds_id)
    return {
        "kind": "thumbs",
        "version": THUMBS_VERSION,
        "dataset": ds_id,
        "source": (m.get("key") or {}).get("source"),
        "variant": key,
    }


def _open_source(store: Store, ds_id: str):
    from latentmap.pipeline.sources import SourceError, open_source

    m = store.manifest(ds_id)
    src_info = m["source"]
    opts = {k: v for k, v in (src_info.get("open") or {}).items() if v is not None}
    try:
        src = open_source(src_info["path"], **opts)
    except SourceError as e:
        raise BandsError(f"cannot reopen the image folder: {e}") from None
    want = (m.get("key") or {}).get("source")
    if want and src.fingerprint() != want:
        raise BandsError(
            f"the image folder {src_info['path']} changed since it was encoded: "
            "re-encode it to regenerate thumbnails"
        )
    return src, m


def ensure_thumbs(
    store: Store,
    ds_id: str,
    rgb: Sequence[int],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    *,
    progress: Callable[[float, str], None] | None = None,
    workers: int | None = None,
) -> Entry:
    """Write (or find) the thumbnails of one band choice; returns the completion entry.

    Files already written by an interrupted run are kept and skipped. The entry's ``ok``
    array flags the rows that got a thumbnail; ``info`` has the variant and counts.
    """
    info = band_info(store, ds_id)
    rgb, pct = check_choice(info, rgb, percentiles)
    key = variant_key(rgb, pct)

    def compute():
        import os

        from latentmap.pipeline.bboxes import draw_on_png, find_boxes, to_pixels
        from latentmap.pipeline.images import make_thumbnail

        src, m = _open_source(store, ds_id)
        index = np.load(store.dataset_dir(ds_id) / ITEM_INDEX)
        size = int(((m.get("key") or {}).get("thumb") or [None, 96])[1])
        boxes = find_boxes(src.metadata) if (m.get("key") or {}).get("bboxes") else None
        out = variant_dir(store, ds_id, key)
        out.mkdir(parents=True, exist_ok=True)
        n = len(index)
        ok = np.zeros(n, dtype=bool)

        def one(row: int) -> bool:
            dest = out / f"{row}.png"
            if dest.is_file():
                return True
            item = int(index[row])
            try:
                arr = src.load(item)
                png = make_thumbnail(arr, rgb=rgb, percentiles=pct, size=size)
                if boxes is not None and boxes.boxes[item]:
                    h, w = arr.shape[-2:]
                    px, _, _ = to_pixels(boxes.boxes[item], w, h, normalized=boxes.normalized)
                    if px:
                        png = draw_on_png(png, px, normalized=False, source_size=(w, h))[0]
            except (ValueError, OSError, MemoryError) as e:
                log.info("thumbnail of row %d (%s): %s", row, key, e)
                return False
            save_bytes(dest, png)
            return True

        n_workers = workers or max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(n_workers) as pool:
            for done, (row, good) in enumerate(
                zip(range(n), pool.map(one, range(n)), strict=True), start=1
            ):
                ok[row] = good
                if progress is not None and (done % 64 == 0 or done == n):
                    progress(done / max(n, 1), f"thumbnails {done:,}/{n:,} ({describe(key)})")
        return {"ok": ok}, {
            "variant": key,
            "written": int(ok.sum()),
            "failed": int(n - ok.sum()),
        }

    return store.get_or_compute(thumbs_key(store, ds_id, key), compute)


def ready_variant(store: Store, ds_id: str, key: str) -> bool:
    """True when a variant's thumbnails are complete (cache lookup only, never computes)."""
    try:
        return store.lookup(thumbs_key(store, ds_id, key)) is not None
    except (OSError, ValueError, KeyError):
        return False


def describe(key: str) -> str:
    """ "bands 3, 2, 1 · stretch 2–98 %" for a variant key."""
    (r, g, b), (lo, hi) = parse_variant_key(key)
    return f"bands {r}, {g}, {b} · stretch {_fmt_pct(lo)}–{_fmt_pct(hi)} %"
