"""Single-band files of one capture grouped into one multi-band item.

Multispectral cameras often write one file per band: ``IMG_0424_1.tif`` … ``IMG_0424_5.tif``
(also ``IMG_0424_B1.tif``, ``IMG_0424_band1.tif``, ``IMG_0424-1.tif``). :func:`group_captures`
groups such files by folder and capture name, orders each capture's bands by number and
reports missing ones; :func:`read_capture` stacks the bands into one (C, H, W) float32 array;
:func:`open_capture_folder` lists a folder as captures, with the same interface as
:func:`latentmap.pipeline.sources.open_image_folder` (``items``, ``metadata``, ``load``,
``fingerprint``, ``skipped``, ``notices``), so the encode job consumes it unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from latentmap.pipeline.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from latentmap.pipeline.sources import (
    SourceError,
    _join_labels,
    _merge_columns,
    _sha,
    _subset,
    file_digest,
    load_labels_table,
    scan_folder,
)

CAPTURE_EXTS: tuple[str, ...] = ("tif", "tiff", "png", "jpg", "jpeg", "bmp", "webp")
# NAME_<n>, NAME_B<n>, NAME_band<n>, NAME-<n> (band numbers of 1 or 2 digits)
_BAND_RE = re.compile(r"^(?P<capture>.+?)[_-](?:b|band)?(?P<band>\d{1,2})$", re.IGNORECASE)


class CaptureError(ValueError):
    """A capture cannot be read as one multi-band image (the message says why)."""


@dataclass(frozen=True)
class Capture:
    """One capture: its id (``folder/NAME``), band numbers and files (in band order), and the
    band numbers the folder's other captures have but this one lacks."""

    id: str
    bands: tuple[int, ...]
    files: tuple[Path, ...]
    missing: tuple[int, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing


def band_of(path: str | Path) -> tuple[str, int] | None:
    """(capture name, band number) of a band file's name, or None when it is not one."""
    m = _BAND_RE.match(PurePosixPath(str(path)).stem)
    if not m:
        return None
    return m.group("capture"), int(m.group("band"))


def group_captures(
    paths: Iterable[str | Path],
    *,
    bands: Sequence[int] | None = None,
    root: str | Path | None = None,
) -> tuple[list[Capture], list[tuple[str, str]]]:
    """Group band files into captures: (captures sorted by id, skipped (path, reason)).

    A capture is the files of one folder sharing a name before ``_<band>``. ``bands``: the
    band numbers every capture should have (default: all band numbers seen); a capture's
    ``missing`` lists those it lacks. Files that are not named like a band, and second files
    for one band, are skipped with the reason. ``root``: ids are relative to it.
    """
    root_path = Path(root) if root is not None else None
    found: dict[str, dict[int, Path]] = {}
    skipped: list[tuple[str, str]] = []
    for raw in sorted(Path(p) for p in paths):
        rel = raw.relative_to(root_path) if root_path is not None else raw
        parsed = band_of(raw)
        if parsed is None:
            skipped.append(
                (rel.as_posix(), "not a band file (expected NAME_<band>, e.g. IMG_0424_1.tif)")
            )
            continue
        name, band = parsed
        parent = rel.parent.as_posix()
        cid = name if parent in ("", ".") else f"{parent}/{name}"
        per = found.setdefault(cid, {})
        if band in per:
            other = per[band].name
            skipped.append((rel.as_posix(), f"second file for band {band} of {cid} ({other})"))
            continue
        per[band] = raw
    expected = (
        sorted({int(b) for b in bands})
        if bands is not None
        else sorted({b for per in found.values() for b in per})
    )
    captures = []
    for cid in sorted(found):
        per = found[cid]
        order = sorted(per)
        captures.append(
            Capture(
                id=cid,
                bands=tuple(order),
                files=tuple(per[b] for b in order),
                missing=tuple(b for b in expected if b not in per),
            )
        )
    return captures, skipped


def read_capture(capture: Capture, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The capture's bands stacked in band order: (C, H, W) float32, each band scaled as
    ``read_image`` scales a file (uint16 / 65535, ...). A file with several bands adds all."""
    if capture.missing:
        missing = ", ".join(map(str, capture.missing))
        raise CaptureError(
            f"capture {capture.id} is missing band{'s' if len(capture.missing) > 1 else ''} "
            f"{missing}"
        )
    if not capture.files:
        raise CaptureError(f"capture {capture.id} has no band files")
    arrays = []
    for path in capture.files:
        try:
            arrays.append(read_image(path, max_pixels=max_pixels))
        except ImageReadError as e:
            raise CaptureError(f"{Path(path).name}: {e}") from None
    sizes = {a.shape[1:] for a in arrays}
    if len(sizes) > 1:
        first = arrays[0].shape[1:]
        odd = next(i for i, a in enumerate(arrays) if a.shape[1:] != first)
        raise CaptureError(
            f"capture {capture.id}: band files differ in size: {capture.files[0].name} is "
            f"{first[1]}x{first[0]}, {capture.files[odd].name} is "
            f"{arrays[odd].shape[2]}x{arrays[odd].shape[1]}"
        )
    return np.ascontiguousarray(np.concatenate(arrays, axis=0), dtype=np.float32)


@dataclass
class CaptureFolderSource:
    """Captures found under ``root``; ``items`` are capture ids (``folder/NAME``)."""

    root: Path
    captures: list[Capture]
    metadata: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    labels_path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def items(self) -> list[str]:
        return [c.id for c in self.captures]

    def __len__(self) -> int:
        return len(self.captures)

    def path(self, i: int) -> Path:
        """The first band file of capture ``i``."""
        return self.captures[i].files[0]

    def load(self, i: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Capture ``i`` as float32 (C, H, W); raises CaptureError (a ValueError) when bad."""
        return read_capture(self.captures[i], max_pixels=max_pixels)

    def fingerprint(self) -> str:
        """Changes when a band file, the labels file or an option changes."""
        stats = []
        for cap in self.captures:
            for f in cap.files:
                rel = f.relative_to(self.root).as_posix()
                try:
                    st = f.stat()
                    stats.append([rel, st.st_size, st.st_mtime_ns])
                except OSError:
                    stats.append([rel, None, None])
        labels = file_digest(self.labels_path) if self.labels_path else None
        return _sha(["capture_folder", stats, labels, self.options])


def open_capture_folder(
    root: str | Path,
    *,
    labels: str | Path | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    extensions: Iterable[str] = CAPTURE_EXTS,
    bands: Sequence[int] | None = None,
) -> CaptureFolderSource:
    """List the captures under ``root`` (band files grouped) with their metadata.

    Captures missing a band are skipped (with a notice), so every item has the same bands.
    ``labels``: a table keyed by capture name (``IMG_0424``) or id (``folder/IMG_0424``);
    ``num_samples``: a seeded random subset of captures; ``bands``: the band numbers every
    capture must have (default: every band number seen in the folder).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise SourceError(f"folder not found: {root}")
    if not root.is_dir():
        raise SourceError(f"not a folder: {root}")
    exts = sorted({e.lower().lstrip(".") for e in extensions})
    labels_path = Path(labels).expanduser() if labels is not None else None
    table = load_labels_table(labels_path) if labels_path is not None else None
    files, skipped = scan_folder(root, exts, exclude=labels_path)
    all_caps, not_bands = group_captures([root / f for f in files], bands=bands, root=root)
    skipped = sorted(skipped + not_bands)
    notices: list[str] = []
    incomplete = [c for c in all_caps if c.missing]
    if incomplete:
        for c in incomplete:
            skipped.append((c.id, f"missing band {', '.join(map(str, c.missing))}"))
        examples = "; ".join(
            f"{c.id} lacks {', '.join(map(str, c.missing))}" for c in incomplete[:3]
        )
        notices.append(
            f"{len(incomplete)} capture{'s' if len(incomplete) > 1 else ''} with missing bands "
            f"skipped ({examples})"
        )
    caps = [c for c in all_caps if not c.missing]
    if not caps:
        raise SourceError(
            f"no complete captures found in {root} ({len(files)} image files, "
            f"{len(incomplete)} incomplete captures; band files are named like IMG_0424_1.tif)"
        )
    items = [c.id for c in caps]
    aligned: pd.DataFrame | None = None
    key = None
    if table is not None and labels_path is not None:
        aligned, key, more = _join_labels(items, table, labels_path.name)
        notices.extend(more)
    subset = _subset(len(caps), num_samples, seed)
    if subset is not None:
        caps = [caps[i] for i in subset]
        items = [items[i] for i in subset]
    meta = pd.DataFrame(
        {
            "id": items,
            "file": [PurePosixPath(c).name for c in items],
            "bands": [",".join(map(str, c.bands)) for c in caps],
            "band_files": [",".join(f.name for f in c.files) for c in caps],
        }
    )
    if any("/" in rel for rel in items):
        meta["label"] = [rel.split("/", 1)[0] if "/" in rel else None for rel in items]
    if aligned is not None:
        if subset is not None:
            aligned = aligned.iloc[subset].reset_index(drop=True)
        meta = _merge_columns(meta, aligned, key)
    return CaptureFolderSource(
        root=root,
        captures=caps,
        metadata=meta,
        skipped=skipped,
        notices=notices,
        labels_path=labels_path,
        options={
            "group_captures": True,
            "num_samples": num_samples,
            "seed": seed,
            "extensions": exts,
            "bands": sorted({int(b) for b in bands}) if bands is not None else None,
        },
    )
