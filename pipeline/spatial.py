"""Spatial latents (N, C, H, W): pooling chosen after encoding, and per-channel analysis.

A dataset keeps a layer's unpooled tensor (``store.spatial``, memory-mapped) when it fit the
size budget at encode time. ``ensure_variant`` pools it another way (mean, max, pNN, flatten,
optionally over a channel subset) and registers the result as a layer of its own, named
``<layer>@<pool>[:<channels>]``, so maps and neighbours work on it like on any layer; the
pooling streams over the items in chunks of about ``CHUNK_BYTES``, so memory stays bounded
whatever N is, and a second call finds the layer in the manifest and returns at once.

``channel_analysis`` gives the seed 002 channel heatmaps (per-category or per-group mean and
standard deviation of every channel, and each channel's mean spatial map) as a cached entry;
``channel_values`` gives one channel's value per item for colouring the map.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from latentmap.pipeline.groups import metadata_with_groups
from latentmap.pipeline.store import (
    Entry,
    NotCached,
    Store,
    StoreError,
    file_lock,
    safe_name,
    save_npy,
)

_POOL = r"mean|max|flatten|p(\d{1,2}(\.\d+)?|100)"
_POOL_RE = re.compile(rf"^({_POOL})$")
_VARIANT_RE = re.compile(rf"^({_POOL})(:([0-9]+(,[0-9]+)*))?$")
CHUNK_BYTES = 64 * 1024**2  # float32 read per chunk while pooling / analysing
CHANNEL_VERSION = 1
MAX_ANALYSIS_CATEGORIES = 200

Progress = Callable[[int, int, str], None]


class SpatialError(ValueError):
    """A pooling or channel request that cannot be served; the message says why."""


# --------------------------------------------------------------------------- pooling


def parse_variant(spec: str) -> tuple[str, tuple[int, ...] | None]:
    """``"max"`` -> ("max", None); ``"p90:0,3"`` -> ("p90", (0, 3))."""
    m = _VARIANT_RE.match(str(spec).strip().lower())
    if not m:
        raise SpatialError(
            f"unknown pooling {spec!r}: use mean, max, flatten or pNN, optionally with "
            "channels, e.g. max:0,2,5"
        )
    chans = tuple(int(c) for c in m.group(5).split(",")) if m.group(5) else None
    return m.group(1), chans


def parse_channels(channels: str | Iterable[int] | None) -> tuple[int, ...] | None:
    """``"0,2,5"`` / ``"0-3"`` / [5, 2, 2] -> sorted distinct channel indices; None -> None."""
    if channels is None:
        return None
    out: list[int] = []
    if isinstance(channels, str):
        text = channels.strip()
        if not text:
            return None
        for part in text.split(","):
            part = part.strip()
            m = re.match(r"^(\d+)\s*-\s*(\d+)$", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise SpatialError(f"channel range {part!r} runs backwards")
                out.extend(range(a, b + 1))
            elif part.isdigit():
                out.append(int(part))
            else:
                raise SpatialError(
                    f"channels {channels!r}: use numbers separated by commas, e.g. 0,2,5 or 0-3"
                )
    else:
        for c in channels:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise SpatialError(f"channel {c!r} is not a whole number")
            if c < 0:
                raise SpatialError(f"channel {int(c)} does not exist: channels start at 0")
            out.append(int(c))
    if not out:
        raise SpatialError("an empty channel subset was asked for: name at least one channel")
    return tuple(sorted(set(out)))


def variant_name(layer: str, pool: str, channels: tuple[int, ...] | None) -> str:
    return f"{layer}@{pool}" + (":" + ",".join(map(str, channels)) if channels else "")


def _check_channels(channels: tuple[int, ...] | None, n_channels: int, layer: str = "") -> None:
    if channels is None:
        return
    bad = [c for c in channels if c < 0 or c >= n_channels]
    if bad:
        what = f"layer {layer!r}" if layer else "the layer"
        raise SpatialError(f"channel {bad[0]} does not exist: {what} has {n_channels} channels")


def chunk_rows(item_shape: Sequence[int], budget: int = CHUNK_BYTES) -> int:
    """Rows of float32 items of ``item_shape`` that fit ``budget`` bytes (at least 1)."""
    per = 4 * int(np.prod(item_shape, dtype=np.int64)) or 4
    return max(1, int(budget // per))


def _read_rows(S: np.ndarray, start: int, stop: int, channels) -> np.ndarray:
    """Rows [start, stop) as float32, only the channels asked for (a memmap reads just them)."""
    x = S[start:stop] if channels is None else S[start:stop, list(channels)]
    return np.asarray(x, dtype=np.float32)


def _pool_chunk(x: np.ndarray, pool: str) -> np.ndarray:
    if pool == "flatten":
        return x.reshape(x.shape[0], -1)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    if pool == "mean":
        return flat.mean(axis=2, dtype=np.float64).astype(np.float32)
    if pool == "max":
        return flat.max(axis=2)
    return np.percentile(flat, float(pool[1:]), axis=2).astype(np.float32)


def pooled_dim(shape: Sequence[int], pool: str, channels: tuple[int, ...] | None) -> int:
    """Feature count of pooling one item of ``shape`` (C, H, W)."""
    c = len(channels) if channels is not None else int(shape[0])
    return c * int(np.prod(shape[1:], dtype=np.int64)) if pool == "flatten" else c


def pool_spatial(
    S: np.ndarray,
    pool: str,
    channels: tuple[int, ...] | None = None,
    *,
    chunk: int | None = None,
    out: np.ndarray | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Pool (N, C, H, W) (a memmap is fine: read in chunks) to (N, D) float32.

    ``out``: an (N, D) float32 array (e.g. a memmap) to write into instead of allocating.
    """
    if not _POOL_RE.match(str(pool)):
        raise SpatialError(f"unknown pooling {pool!r}: use mean, max, flatten or pNN")
    if S.ndim < 3:
        raise SpatialError(f"expected spatial latents (N, C, H, W), got shape {S.shape}")
    _check_channels(channels, S.shape[1])
    n = len(S)
    d = pooled_dim(S.shape[1:], pool, channels)
    if out is None:
        out = np.empty((n, d), dtype=np.float32)
    elif out.shape != (n, d):
        raise SpatialError(f"output has shape {out.shape}, pooling gives {(n, d)}")
    item = (len(channels) if channels else S.shape[1], *S.shape[2:])
    step = chunk or chunk_rows(item)
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = _pool_chunk(_read_rows(S, start, stop, channels), pool)
        if progress:
            progress(stop, n, f"pooling ({pool}): {stop}/{n} items")
    return out


def _layer_entry(store: Store, ds_id: str, layer: str) -> tuple[dict[str, Any], dict[str, Any]]:
    m = store.manifest(ds_id)
    layers = m.get("layers", {})
    if layer not in layers:
        raise SpatialError(
            f"dataset {ds_id} has no layer {layer!r}; it has: {', '.join(layers) or 'none'}"
        )
    return m, layers[layer]


def base_layer(store: Store, ds_id: str, layer: str) -> str:
    """The stored layer a pooling variant was made from (the layer itself otherwise)."""
    return str(_layer_entry(store, ds_id, layer)[1].get("variant_of", layer))


def _no_spatial(store: Store, ds_id: str, layer: str) -> SpatialError:
    info = _layer_entry(store, ds_id, layer)[1]
    shape = info.get("pooled_from")
    if shape and len(shape) == 3:
        return SpatialError(
            f"layer {layer!r} was stored pooled ({info.get('pool', 'mean')} of "
            f"{'x'.join(map(str, shape))}) and its unpooled latents were not kept: re-encode "
            "within the spatial size budget (LATENTMAP_MAX_SPATIAL_BYTES) to pool it another way"
        )
    dim = info.get("dim")
    return SpatialError(
        f"layer {layer!r} has no spatial latents: it gives one {dim}-value vector per item, "
        "not (C, H, W) maps"
    )


def spatial_latents(store: Store, ds_id: str, layer: str) -> np.ndarray | None:
    """The (N, C, H, W) latents of a stored layer, memory-mapped, or None when not kept.

    A layer encoded with ``--pool flatten`` has them too: its vectors, reshaped.
    """
    S = store.spatial(ds_id, layer)
    if S is not None:
        return S if S.ndim == 4 else None
    info = _layer_entry(store, ds_id, layer)[1]
    shape = info.get("pooled_from")
    if info.get("pool") == "flatten" and shape and len(shape) == 3 and not info.get("variant_of"):
        V = store.vectors(ds_id, layer)
        if V.shape[1] == int(np.prod(shape)):
            return V.reshape(len(V), *(int(s) for s in shape))
    return None


def spatial_layers(store: Store, ds_id: str) -> dict[str, tuple[int, int, int]]:
    """Layers of the dataset whose unpooled (C, H, W) latents are stored -> (C, H, W)."""
    out: dict[str, tuple[int, int, int]] = {}
    for layer, info in store.manifest(ds_id).get("layers", {}).items():
        if info.get("variant_of"):
            continue
        try:
            S = spatial_latents(store, ds_id, layer)
        except (OSError, ValueError, StoreError):
            continue
        if S is not None:
            out[layer] = (int(S.shape[1]), int(S.shape[2]), int(S.shape[3]))
    return out


def _write_pooled(
    store: Store,
    ds_id: str,
    name: str,
    S: np.ndarray,
    pool: str,
    channels: tuple[int, ...] | None,
    progress: Progress | None,
) -> dict[str, Any]:
    """Pool straight into the layer's vectors file (a memmap: nothing N-sized in memory)."""
    n = len(S)
    d = pooled_dim(S.shape[1:], pool, channels)
    dest = store.vectors_path(ds_id, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
        pool_spatial(S, pool, channels, out=out, progress=progress)
        valid = np.ones(n, dtype=bool)
        step = chunk_rows((d,))
        for start in range(0, n, step):
            valid[start : start + step] = np.isfinite(out[start : start + step]).all(axis=1)
        out.flush()
        del out
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    save_npy(store._layer_file(ds_id, name, "vectors", ".valid.npy"), valid)
    return {"dim": int(d), "n_invalid": int((~valid).sum())}


def ensure_variant(
    store: Store,
    ds_id: str,
    layer: str,
    pool: str = "mean",
    channels: str | Iterable[int] | None = None,
    progress: Progress | None = None,
) -> str:
    """Register ``layer`` pooled by ``pool`` over ``channels`` as a layer (once); its name.

    ``pool``: mean | max | flatten | pNN, or a full spec with channels (``"max:0,2"``).
    ``channels``: a subset (``"0,2,5"``, ``"0-3"`` or ints); all channels when None. Asking
    for the pooling the layer was stored with returns the layer itself. On a
    ``store.cached_only()`` view a variant not made yet raises ``NotCached`` (run the call
    from a background job). ``layer`` may itself be a variant: its base layer is used.
    """
    pool, spec_channels = parse_variant(pool)
    chans = parse_channels(channels)
    spec_channels = parse_channels(spec_channels)
    if chans is not None and spec_channels is not None and chans != spec_channels:
        raise SpatialError(
            f"channels given twice and different: {pool} with {spec_channels} and {chans}"
        )
    chans = chans if chans is not None else spec_channels
    m, _ = _layer_entry(store, ds_id, layer)
    base = base_layer(store, ds_id, layer)
    layers = m["layers"]
    info = layers.get(base, {})
    S = spatial_latents(store, ds_id, base)
    if S is not None:
        _check_channels(chans, S.shape[1], base)
        if chans is not None and chans == tuple(range(S.shape[1])):
            chans = None
    elif chans is not None and "pooled_from" not in info:
        _check_channels(chans, int(info.get("dim", 0)), base)
    name = variant_name(base, pool, chans)
    if name in layers:
        return name
    if chans is None and pool == info.get("pool", "mean") and base in layers:
        return base
    if S is None:
        raise _no_spatial(store, ds_id, base)
    if not store.compute:
        raise NotCached({"kind": "variant", "dataset": ds_id, "layer": name})
    with file_lock(store.dataset_dir(ds_id) / f".variant-{safe_name(name)}.lock"):
        if name in store.manifest(ds_id).get("layers", {}):
            return name
        entry = _write_pooled(store, ds_id, name, S, pool, chans, progress)
        entry.update(
            {
                "variant_of": base,
                "pool": pool,
                "channels": list(chans or []),
                "pooled_from": [int(s) for s in S.shape[1:]],
            }
        )
        with file_lock(store.dataset_dir(ds_id) / ".manifest.lock"):
            current = store.manifest(ds_id)
            current.setdefault("layers", {})[name] = entry
            store.write_manifest(ds_id, current)
        store.seal(ds_id)  # the new pooled vectors get their checksum
    return name


def layer_has_spatial(store: Store, ds_id: str, layer: str) -> bool:
    try:
        return spatial_latents(store, ds_id, base_layer(store, ds_id, layer)) is not None
    except (StoreError, SpatialError):
        return False


# --------------------------------------------------------------------------- channel statistics


def _class_index(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    uniq, inv = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    pos = {c: i for i, c in enumerate(classes)}
    remap = np.array([pos.get(str(c), -1) for c in uniq], dtype=np.int64)
    return remap[inv.ravel()] if len(uniq) else np.zeros(0, np.int64)


def channel_stats(
    S: np.ndarray,
    labels,
    *,
    chunk: int | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per category: per-channel mean and (population) standard deviation over the items of
    the category of each item's channel value, and, for (N, C, H, W) input, the per-channel
    spatial mean map (k, C, H, W).

    An item's channel value is the spatial mean of that channel ((N, C, H, W) input) or the
    feature itself ((N, D) input). Items with a missing label or non-finite values are left
    out. ``classes`` fixes the categories and their order (default: the labels' own, in
    natural order); categories without items are dropped. Streams over N in chunks.
    """
    from latentmap.pipeline.diagnostics import _labels, sorted_classes

    if S.ndim not in (2, 4):
        raise SpatialError(
            f"channel analysis needs (N, C, H, W) latents or (N, D) features, got {S.shape}"
        )
    lab = _labels(labels)
    if len(lab) != len(S):
        raise SpatialError(f"{len(lab)} labels for {len(S)} items")
    classes = [str(c) for c in classes] if classes is not None else sorted_classes(lab)
    if not classes:
        raise SpatialError("channel analysis needs a category column with values")
    idx = _class_index(lab, classes)
    k, C = len(classes), S.shape[1]
    spatial = S.ndim == 4
    count = np.zeros(k)
    s1 = np.zeros((k, C))
    s2 = np.zeros((k, C))
    maps = np.zeros((k, C * S.shape[2] * S.shape[3])) if spatial else None
    step = chunk or chunk_rows(S.shape[1:], CHUNK_BYTES // 2)  # float64: half the rows
    for start in range(0, len(S), step):
        stop = min(len(S), start + step)
        x = np.array(S[start:stop], dtype=np.float64)
        flat = x.reshape(len(x), -1)
        rows = idx[start:stop]
        use = (rows >= 0) & np.isfinite(flat).all(axis=1)
        if not use.any():
            continue
        flat[~use] = 0.0  # left-out rows (NaN included) add nothing
        onehot = np.zeros((k, len(x)))
        onehot[rows[use], np.flatnonzero(use)] = 1.0
        v = x.reshape(len(x), C, -1).mean(axis=2) if spatial else flat
        count += onehot.sum(axis=1)
        s1 += onehot @ v
        s2 += onehot @ (v * v)
        if maps is not None:
            maps += onehot @ flat
    keep = count > 0
    if not keep.any():
        raise SpatialError("no item has both a category and finite latents")
    n = np.maximum(count, 1)[:, None]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    out: dict[str, Any] = {
        "classes": [c for c, k_ in zip(classes, keep, strict=True) if k_],
        "counts": count[keep].astype(int),
        "means": mean[keep].astype(np.float32),
        "stds": std[keep].astype(np.float32),
        "dropped": [c for c, k_ in zip(classes, keep, strict=True) if not k_],
    }
    if maps is not None:
        shape = (k, C, S.shape[2], S.shape[3])
        out["maps"] = (maps / n).reshape(shape)[keep].astype(np.float32)
    return out


def _labels_digest(labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for v in labels.tolist():
        h.update(str(v).encode())
        h.update(b"\x00")
    return h.hexdigest()[:24]


def channel_analysis(
    store: Store,
    ds_id: str,
    layer: str,
    column: str,
    groups: Any = None,
) -> Entry:
    """Cached per-category channel statistics of ``layer`` by the metadata ``column``.

    ``groups``: a Groups, a {group: [categories]} mapping, or the name of a mapping stored
    for the dataset; then the rows are the groups (in the mapping's order, then
    ``(other)``) instead of the categories. A pooling variant is analysed through its base
    layer's spatial latents.

    Arrays: ``means`` (k, C) and ``stds`` (k, C) float32 (mean and standard deviation over
    the category's items of each item's channel value: the channel's spatial mean, or the
    feature for a pooled-only layer), ``counts`` (k,) int64, and ``maps`` (k, C, H, W) float32
    (each channel's mean spatial map) when the layer has stored spatial latents. Info:
    ``categories``, ``layer`` (the layer analysed), ``column``, ``groups`` (group names or
    None), ``spatial`` (bool), ``shape`` ([C, H, W] or [D]), ``notes``.
    """
    from latentmap.pipeline.diagnostics import _labels
    from latentmap.pipeline.groups import OTHER, apply_groups, resolve_groups

    base = base_layer(store, ds_id, layer)
    meta = metadata_with_groups(store, ds_id)
    if column not in meta.columns:
        raise SpatialError(
            f"dataset {ds_id} has no column {column!r}; it has: {', '.join(meta.columns)}"
        )
    g = resolve_groups(store, ds_id, groups)
    notes: list[str] = []
    if g is not None:
        values, warnings = apply_groups(meta[column], g)
        notes.extend(warnings)
        labels = _labels(list(values))
        classes = [*g.names, OTHER] if OTHER not in g.names else list(g.names)
    else:
        labels = _labels(meta[column])
        classes = None
        n_cat = len(np.unique(labels[labels != ""]))
        if n_cat > MAX_ANALYSIS_CATEGORIES:
            raise SpatialError(
                f"column {column!r} has {n_cat} distinct values: channel analysis needs a "
                f"categorical column (at most {MAX_ANALYSIS_CATEGORIES}), or a category mapping"
            )
    S = spatial_latents(store, ds_id, base)
    spatial = S is not None
    key = {
        "kind": "channel_analysis",
        "version": CHANNEL_VERSION,
        "dataset": ds_id,
        "layer": base,
        "column": column,
        "groups": g.key() if g is not None else None,
        "labels": _labels_digest(labels),
    }

    def compute() -> Entry:
        if spatial:
            X = S
        else:
            X = store.vectors(ds_id, base)
            dim = X.shape[1]
            notes.append(
                f"layer {base} has no stored spatial latents: statistics of its {dim} pooled "
                "features, no spatial maps"
            )
        st = channel_stats(X, labels, classes=classes)
        if st["dropped"] and g is not None:
            shown = [c for c in st["dropped"] if c != OTHER]
            if shown:
                notes.append(f"groups without items left out: {', '.join(shown)}")
        missing = int((labels == "").sum())
        if missing:
            notes.append(f"{missing} items without a {column!r} value left out")
        arrays = {"means": st["means"], "stds": st["stds"], "counts": st["counts"]}
        if "maps" in st:
            arrays["maps"] = st["maps"]
        info = {
            "categories": st["classes"],
            "layer": base,
            "column": column,
            "groups": g.names if g is not None else None,
            "spatial": bool(spatial),
            "shape": [int(s) for s in X.shape[1:]],
            "notes": notes,
        }
        return Entry(arrays=arrays, info=info)

    return store.get_or_compute(key, compute)


def channel_values(store: Store, ds_id: str, layer: str, channel: int) -> np.ndarray:
    """(N,) float32: each item's value of ``channel`` (its spatial mean for a layer with stored
    spatial latents, else the pooled feature), for colouring the map. A pooling variant's
    channels are its base layer's."""
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise SpatialError(f"channel {channel!r} is not a whole number")
    base = base_layer(store, ds_id, layer)
    S = spatial_latents(store, ds_id, base)
    if S is not None:
        _check_channels((int(channel),), S.shape[1], base)
        src = store.vectors(ds_id, ensure_variant(store, ds_id, base, "mean"))
    else:
        src = store.vectors(ds_id, base)
        _check_channels((int(channel),), src.shape[1], base)
    return np.asarray(src[:, int(channel)], dtype=np.float32)
