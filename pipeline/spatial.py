"""Spatial latents (N, C, H, W): pooling chosen after encoding, and per-channel analysis.

A dataset keeps a layer's unpooled tensor (``store.spatial``) when it fits the size budget.
``ensure_variant`` pools it another way (max, p90, flatten, a channel subset) and registers the
result as a layer of its own, named ``<layer>@<pool>[:<channels>]``, so maps and neighbours
work on it like on any layer. ``channel_stats`` gives the seed 002 channel heatmaps.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from latentmap.pipeline.datasets import finalize_layer
from latentmap.pipeline.store import Store, StoreError, file_lock

_VARIANT_RE = re.compile(r"^(mean|max|flatten|p(\d{1,2}(\.\d+)?|100))(:([0-9]+(,[0-9]+)*))?$")


class SpatialError(ValueError):
    """A pooling request that cannot be served; the message says why."""


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


def variant_name(layer: str, pool: str, channels: tuple[int, ...] | None) -> str:
    return f"{layer}@{pool}" + (":" + ",".join(map(str, channels)) if channels else "")


def pool_spatial(
    S: np.ndarray, pool: str, channels: tuple[int, ...] | None = None, *, chunk: int = 512
) -> np.ndarray:
    """Pool (N, C, H, W) (a memmap is fine: read in chunks) to (N, D) float32."""
    if S.ndim < 3:
        raise SpatialError(f"expected spatial latents (N, C, H, W), got shape {S.shape}")
    if channels is not None:
        bad = [c for c in channels if c >= S.shape[1]]
        if bad:
            raise SpatialError(
                f"channel {bad[0]} does not exist: the layer has {S.shape[1]} channels"
            )
    out = []
    for start in range(0, len(S), chunk):
        x = np.asarray(S[start : start + chunk], dtype=np.float32)
        if channels is not None:
            x = x[:, list(channels)]
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if pool == "flatten":
            out.append(x.reshape(x.shape[0], -1))
        elif pool == "mean":
            out.append(flat.mean(axis=2))
        elif pool == "max":
            out.append(flat.max(axis=2))
        else:
            out.append(np.percentile(flat, float(pool[1:]), axis=2).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def ensure_variant(store: Store, ds_id: str, layer: str, spec: str) -> str:
    """Register ``layer`` pooled as ``spec`` as a layer of the dataset (once); return its name."""
    pool, channels = parse_variant(spec)
    m = store.manifest(ds_id)
    base = m["layers"].get(layer, {}).get("variant_of", layer)
    name = variant_name(base, pool, channels)
    if name in m["layers"]:
        return name
    info = m["layers"].get(base, {})
    if pool == info.get("pool", "mean") and channels is None and base in m["layers"]:
        return base
    S = store.spatial(ds_id, base)
    if S is None:
        raise SpatialError(
            f"layer {base!r} has no stored spatial latents (the layer is not (N, C, H, W), or they "
            "exceeded the size budget at encode time): re-encode with a larger "
            "LATENTMAP_MAX_SPATIAL_BYTES, or pick the pooling with --pool"
        )
    with file_lock(store.dataset_dir(ds_id) / ".variant.lock"):
        if name in store.manifest(ds_id)["layers"]:
            return name
        entry = finalize_layer(store, ds_id, name, pool_spatial(S, pool, channels))
        entry.update({"variant_of": base, "pool": pool, "channels": list(channels or [])})
        entry["pooled_from"] = list(S.shape[1:])
        layers = dict(store.manifest(ds_id)["layers"])
        layers[name] = entry
        store.update_manifest(ds_id, layers=layers)
    return name


def channel_stats(S: np.ndarray, labels, *, chunk: int = 512) -> dict[str, Any]:
    """Per category: per-channel mean and std of the spatial mean, and the per-channel spatial
    mean map (k, C, H, W). Streams over N so a memmap of any size works."""
    from latentmap.pipeline.diagnostics import _labels, sorted_classes

    if S.ndim != 4:
        raise SpatialError(f"channel analysis needs (N, C, H, W) latents, got shape {S.shape}")
    lab = _labels(labels)
    classes = sorted_classes(lab)
    if not classes:
        raise SpatialError("channel analysis needs a category column with values")
    index = {c: i for i, c in enumerate(classes)}
    k, C, H, W = len(classes), S.shape[1], S.shape[2], S.shape[3]
    count = np.zeros(k)
    s1 = np.zeros((k, C))
    s2 = np.zeros((k, C))
    maps = np.zeros((k, C, H, W))
    for start in range(0, len(S), chunk):
        x = np.asarray(S[start : start + chunk], dtype=np.float64)
        m = x.mean(axis=(2, 3))
        for row, c in enumerate(lab[start : start + chunk]):
            if c == "" or not np.isfinite(m[row]).all():
                continue
            i = index[c]
            count[i] += 1
            s1[i] += m[row]
            s2[i] += m[row] ** 2
            maps[i] += x[row]
    n = np.maximum(count, 1)[:, None]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    return {
        "classes": classes,
        "counts": count.astype(int),
        "means": mean.astype(np.float32),
        "stds": std.astype(np.float32),
        "maps": (maps / np.maximum(count, 1)[:, None, None, None]).astype(np.float32),
    }


def layer_has_spatial(store: Store, ds_id: str, layer: str) -> bool:
    try:
        return store.spatial(ds_id, layer) is not None
    except StoreError:
        return False
