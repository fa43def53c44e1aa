"""Read-only access to the store for callbacks, with small per-process caches.

Cached values are immutable arrays / frames keyed by the cache root, the dataset id and the
modification time of the file they come from, so a dataset that is deleted or rewritten is
never served stale. No per-user state lives here.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from latentmap.components.figures import Group, categories, column_kind, trace_groups
from latentmap.pipeline.groups import GROUP_SEP as _SEP
from latentmap.pipeline.store import DatasetNotFound, Store, StoreError

GROUP_SEP = _SEP  # "<column> ▸ <mapping>": the grouped twin of a column

EXPECTED_ERRORS: tuple[type[Exception], ...] = (StoreError, ValueError, OSError)


class _LRU:
    """A tiny thread-safe LRU of computed values."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        value = make()
        with self._lock:
            self._d[key] = value
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return value


_META = _LRU(8)
_COLUMNS = _LRU(8)
_GROUPS = _LRU(32)
_COORDS = _LRU(16)


def _mtime(store: Store, ds_id: str) -> float:
    try:
        return store.manifest_path(ds_id).stat().st_mtime
    except FileNotFoundError:
        raise DatasetNotFound(
            f"dataset {ds_id!r} is no longer in the cache (it was deleted or is being rebuilt)"
        ) from None


def _groups_mtime(store: Store, ds_id: str) -> float:
    from latentmap.pipeline.groups import GROUPS_FILE

    try:
        return (store.dataset_dir(ds_id) / GROUPS_FILE).stat().st_mtime
    except FileNotFoundError:
        return 0.0


def metadata(store: Store, ds_id: str):
    """The dataset's metadata frame (do not modify it: it is shared by callbacks), with the
    grouped columns of saved category-group mappings."""
    key = (str(store.root), ds_id, _mtime(store, ds_id), _groups_mtime(store, ds_id))
    from latentmap.pipeline.groups import metadata_with_groups

    return _META.get(key, lambda: metadata_with_groups(store, ds_id))


def columns(store: Store, ds_id: str) -> dict[str, dict[str, Any]]:
    """Column name -> {"kind": categorical|continuous, "values": [...] (categorical only)}."""
    key = (str(store.root), ds_id, _mtime(store, ds_id), _groups_mtime(store, ds_id))

    def make() -> dict[str, dict[str, Any]]:
        meta = metadata(store, ds_id)
        out = {}
        for c in meta.columns:
            kind = column_kind(meta[c])
            out[str(c)] = {
                "kind": kind,
                "values": categories(meta[c]) if kind == "categorical" else [],
            }
        return out

    return _COLUMNS.get(key, make)


def groups(store: Store, spec: dict[str, Any]) -> list[Group]:
    """The trace groups of a plot spec (dataset, layer, colour, filter)."""
    ds, layer = spec["dataset"], spec["layer"]
    fv = tuple(spec.get("filter_values") or ())
    key = (
        str(store.root),
        ds,
        layer,
        _mtime(store, ds),
        _groups_mtime(store, ds),
        spec.get("color"),
        spec.get("filter_col"),
        fv,
        spec.get("filter_mode", "dim"),
    )

    def make() -> list[Group]:
        return trace_groups(
            metadata(store, ds),
            store.valid_mask(ds, layer),
            color=spec.get("color"),
            filter_col=spec.get("filter_col"),
            filter_values=list(fv),
            filter_mode=spec.get("filter_mode", "dim"),
        )

    full = _GROUPS.get(key, make)
    view = spec.get("view") or {}
    if view.get("mode") == "density":
        return []  # drawn as a density: no point traces (nothing to hover or click)
    if view.get("mode") == "window":  # only the points inside the zoomed view are drawn
        from dataclasses import replace

        from latentmap.components.figures import in_box

        got = projection_coords(store, ds, layer, spec["method"], spec.get("params"))
        if got is None:
            return []
        return [replace(g, rows=in_box(got[0], g.rows, view["box"])) for g in full]
    return full


def projection_coords(
    store: Store, ds_id: str, layer: str, method: str, params: dict | None
) -> tuple[np.ndarray, list[str]] | None:
    """(coords, notices) of a cached projection, or None when it is not computed yet."""
    key = (
        str(store.root),
        ds_id,
        layer,
        _mtime(store, ds_id),
        method,
        json.dumps(params, sort_keys=True),
    )
    try:
        return _COORDS.get(key, lambda: _load_coords(store, ds_id, layer, method, params))
    except _Missing:
        return None


class _Missing(Exception):
    """Not cached (kept out of the LRU: it may be computed later)."""


def _load_coords(store: Store, ds_id: str, layer: str, method: str, params: dict | None):
    from latentmap.pipeline.reduce import cached_projection

    entry = cached_projection(store, ds_id, layer, method, params)
    if entry is None:
        raise _Missing
    coords = np.asarray(entry["coords"], dtype=np.float32)
    coords.setflags(write=False)
    return coords, list(entry.info.get("notices", []))


def dataset_options(store: Store) -> list[dict[str, str]]:
    return [
        {"label": f"{d.name} ({d.n:,})", "value": d.id}
        for d in store.list_datasets(include_incomplete=False)
    ]


def thumb_variant(thumbs: dict | None, ds_id: str | None) -> str | None:
    """The band choice whose thumbnails the cards of ``ds_id`` show (None: as encoded)."""
    if not thumbs or not ds_id or thumbs.get("dataset") != ds_id:
        return None
    return thumbs.get("v") or None


def row_details(
    store: Store,
    ds_id: str,
    row: int,
    extra: list[str] | None = None,
    thumbs: str | None = None,
) -> dict:
    """What a tooltip / gallery card shows for one row; ``thumbs`` is the band choice
    (``pipeline.bands`` variant) whose thumbnail the card shows, None for the encoded one."""
    from latentmap.components.gallery import thumb_url

    meta = metadata(store, ds_id)
    rec = meta.iloc[int(row)]
    cols = list(meta.columns)
    name_col = next((c for c in ("file", "filename", "path", "name", "id") if c in cols), None)
    fields = []
    for c in ["label", "pred", *(extra or [])]:
        if c in cols and c != name_col and c not in [f[0] for f in fields]:
            fields.append((c, _fmt(rec[c])))
    return {
        "row": int(row),
        "name": _fmt(rec[name_col]) if name_col else f"row {row}",
        "label": _fmt(rec["label"]) if "label" in cols else None,
        "pred": _fmt(rec["pred"]) if "pred" in cols else None,
        "fields": fields,
        "thumb": thumb_url(ds_id, int(row), thumbs)
        if store.thumbnail_path(ds_id, int(row)) is not None
        else None,
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return "–" if not np.isfinite(v) else f"{float(v):.4g}"
    return str(v)
