"""Register a complete dataset in the store from in-memory arrays.

Used by the demo, by precomputed-embedding imports and by tests; the encode job writes the
same files incrementally (see ``pipeline.jobs``) and finishes through ``finalize_layer``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from latentmap.pipeline.store import Store, key_hash, save_bytes, save_npy


def finite_rows(vectors: np.ndarray) -> np.ndarray:
    """(N,) bool: rows without NaN or Inf."""
    v = np.asarray(vectors)
    return np.isfinite(v.reshape(len(v), -1)).all(axis=1)


def finalize_layer(store: Store, ds_id: str, layer: str, vectors: np.ndarray) -> dict[str, Any]:
    """Write pooled vectors of one layer with their validity mask; return the manifest entry."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"layer {layer!r}: expected (N, D) vectors, got shape {vectors.shape}")
    valid = finite_rows(vectors)
    save_npy(store.vectors_path(ds_id, layer), vectors)
    save_npy(store._layer_file(ds_id, layer, "vectors", ".valid.npy"), valid)
    return {"dim": int(vectors.shape[1]), "n_invalid": int((~valid).sum())}


def write_dataset(
    store: Store,
    *,
    name: str,
    vectors: dict[str, np.ndarray],
    metadata,
    thumbnails: Sequence[bytes | None] | None = None,
    spatial: dict[str, np.ndarray] | None = None,
    source: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    ds_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write vectors (layer -> (N, D)), metadata (DataFrame, N rows) and optional PNG thumbnails.

    Returns the dataset id (a content key of name/source/model unless given).
    """
    import pandas as pd

    if not vectors:
        raise ValueError("at least one layer of vectors is needed")
    n = len(metadata)
    for layer, v in vectors.items():
        if len(v) != n:
            raise ValueError(f"layer {layer!r} has {len(v)} rows, metadata has {n}")
    if thumbnails is not None and len(thumbnails) != n:
        raise ValueError(f"{len(thumbnails)} thumbnails for {n} items")
    source = source or {"kind": "arrays"}
    model = model or {"spec": "precomputed"}
    if ds_id is None:
        ds_id = key_hash(
            {"name": name, "source": source, "model": model, "layers": sorted(vectors)}, n=16
        )
    store.dataset_dir(ds_id).mkdir(parents=True, exist_ok=True)
    store.write_manifest(
        ds_id,
        {
            "name": name,
            "status": "writing",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": source,
            "model": model,
            "n": n,
            "layers": {},
        },
    )
    df = pd.DataFrame(metadata).reset_index(drop=True)
    if "id" not in df.columns:
        df.insert(0, "id", [str(i) for i in range(n)])
    layers: dict[str, Any] = {}
    invalid_any = np.zeros(n, dtype=bool)
    for layer, v in vectors.items():
        v = np.asarray(v, dtype=np.float32)
        pooled_from = None
        if v.ndim > 2:
            pooled_from = list(v.shape[1:])
            v = v.reshape(n, v.shape[1], -1).mean(axis=2)
        layers[layer] = finalize_layer(store, ds_id, layer, v)
        if pooled_from:
            layers[layer]["pooled_from"] = pooled_from
            layers[layer]["pool"] = "mean"
        invalid_any |= ~finite_rows(v)
    for layer, s in (spatial or {}).items():
        save_npy(store._layer_file(ds_id, layer, "spatial"), np.asarray(s, dtype=np.float32))
        layers.setdefault(layer, {})["spatial_shape"] = list(np.shape(s)[1:])
    df["has_nan"] = invalid_any
    store.write_metadata(ds_id, df)
    n_thumbs = 0
    if thumbnails is not None:
        tdir = store.thumb_dir(ds_id)
        for i, data in enumerate(thumbnails):
            if data:
                save_bytes(tdir / f"{i}.png", data)
                n_thumbs += 1
    store.write_manifest(
        ds_id,
        {
            **store.manifest(ds_id),
            "status": "complete",
            "layers": layers,
            "default_layer": list(vectors)[-1],
            "thumbnails": n_thumbs,
            **(extra or {}),
        },
    )
    store.seal(ds_id)  # checksums of the array files, verified when read
    return ds_id
