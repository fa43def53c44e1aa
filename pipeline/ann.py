"""Approximate nearest neighbours for large layers: a FAISS IVF index, built once per
dataset x layer in the background after the encode (``pipeline.precompute``; never on a
user's first view, where it would compete with the clicks for the cores) and kept in the cache.

Below ``ANN_MIN_ROWS`` valid rows the exact normalised matmul of ``pipeline.neighbors`` is
fast enough (13 ms/query at 100k) and is always used. Above it, a query asks the inverted file
(k-means cells of unit vectors, inner product, 8-bit scalar-quantised codes: a quarter of the
float32 memory; ``nprobe`` of its ``nlist`` cells searched) for ``CANDIDATES`` candidates and
re-ranks them exactly in float32 from the memory-mapped vectors, so the returned similarities
are exact and the order among candidates is the exact order; only a true neighbour outside the
probed cells can be missed (recall measured by ``bench/bench_knn.py --ann``).

IVF rather than HNSW: measured at 1M x 512 on 2 cores, HNSW (M=32, SQ8) took 18 min to build
and reached recall@10 0.94 at 12 ms; IVF4096,SQ8 builds in ~5 min and reaches 1.00 at 7 ms
(nprobe 128).

The serialised index is stored as a uint8 array in an ordinary cache entry, so it carries the
store's checksum and key and a corrupt file is detected and rebuilt, never used. FAISS runs
single-threaded for queries (one query gains nothing from threads, and it keeps clear of busy
torch threads in the same process). No Dash here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from latentmap.pipeline.store import Entry, Store

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

ANN_VERSION = 2  # 1 was HNSW
ANN_MIN_ROWS = 200_000  # below this the exact search is used (and no index is built)
TRAIN_PER_CELL = 40  # k-means training points per cell (FAISS wants >= 39)
CANDIDATES = 200  # re-ranked exactly
_ADD_CHUNK = 50_000

_loaded: OrderedDict[tuple, tuple] = OrderedDict()  # process-local cache of loaded indexes
_loaded_lock = threading.Lock()
_MAX_LOADED = 2


class AnnUnavailable(RuntimeError):
    """FAISS is not installed (the exact search is used instead)."""


def faiss_module():
    try:
        import faiss
    except ImportError as e:  # an optional dependency in principle; installed by default
        raise AnnUnavailable("faiss-cpu is not installed: using the exact search") from e
    return faiss


def n_cells(n: int) -> int:
    """IVF cells for n vectors: the power of two nearest 4 * sqrt(n) (4096 at 1M), fewer when
    there are not enough vectors to train them."""
    cells = 2 ** int(round(np.log2(max(4.0 * np.sqrt(max(n, 1)), 1.0))))
    while cells > 16 and cells * TRAIN_PER_CELL > n:
        cells //= 2
    return int(min(cells, 65536))


def n_probe(cells: int) -> int:
    """Cells searched per query: 1/32 of them, at least 32 (128 of 4096 at 1M)."""
    return int(min(cells, max(32, cells // 32)))


def ann_key(ds_id: str, layer: str) -> dict:
    return {
        "kind": "ann",
        "version": ANN_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "index": "IVF,SQ8,IP",
        "train_per_cell": TRAIN_PER_CELL,
    }


def wants_index(store: Store, ds_id: str, layer: str) -> bool:
    """True when the layer is large enough for the approximate search."""
    return int(store.valid_mask(ds_id, layer).sum()) >= ANN_MIN_ROWS


def _unit_chunk(X, rows: np.ndarray, norms: np.ndarray) -> np.ndarray:
    C = np.asarray(X[rows], dtype=np.float32)
    n = norms[rows]
    C /= np.where(n > 0, n, 1.0)[:, None]
    return np.ascontiguousarray(C)


def build_index(store: Store, ds_id: str, layer: str, *, progress: Progress | None = None) -> Entry:
    """Build (or find) the layer's IVF index. Arrays: ``index`` (serialised, uint8) and
    ``rows`` (int64: index position -> dataset row). Info: cells, build seconds, sizes."""
    from latentmap.pipeline.neighbors import row_norms

    faiss = faiss_module()

    def compute():
        t0 = time.perf_counter()
        X = store.vectors(ds_id, layer)
        valid = store.valid_mask(ds_id, layer)
        rows = np.flatnonzero(valid).astype(np.int64)
        norms = row_norms(store, ds_id, layer)
        d = int(X.shape[1])
        cells = n_cells(len(rows))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, cells, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        n_train = min(len(rows), TRAIN_PER_CELL * cells)
        sample = (
            rows
            if n_train == len(rows)
            else np.sort(np.random.default_rng(0).choice(rows, n_train, replace=False))
        )
        if progress is not None:
            progress(0.0, f"search index of {layer}: {cells:,} cells from {n_train:,} vectors")
        index.train(_unit_chunk(X, sample, norms))
        t_train = time.perf_counter() - t0
        for start in range(0, len(rows), _ADD_CHUNK):
            part = rows[start : start + _ADD_CHUNK]
            index.add(_unit_chunk(X, part, norms))
            if progress is not None:
                done = start + len(part)
                progress(
                    0.4 + 0.6 * done / len(rows),
                    f"search index of {layer}: {done:,}/{len(rows):,}",
                )
        blob = faiss.serialize_index(index)
        seconds = time.perf_counter() - t0
        log.info(
            "IVF index %s/%s: %d rows, %d cells, %.1f s", ds_id, layer, len(rows), cells, seconds
        )
        info = {
            "n": int(len(rows)),
            "dim": d,
            "cells": cells,
            "nprobe": n_probe(cells),
            "train_seconds": round(t_train, 2),
            "seconds": round(seconds, 2),
            "bytes": int(blob.size),
        }
        return {"index": np.asarray(blob, dtype=np.uint8), "rows": rows}, info

    return store.get_or_compute(ann_key(ds_id, layer), compute)


def cached_index(store: Store, ds_id: str, layer: str):
    """(faiss index, rows, row norms) when the layer's index is built, else None (never
    builds); kept loaded per process (the two most recent)."""
    key = (str(store.root), ds_id, layer)
    with _loaded_lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
    try:
        faiss = faiss_module()
    except AnnUnavailable:
        return None
    entry = store.lookup(ann_key(ds_id, layer))
    if entry is None:
        return None
    index = faiss.deserialize_index(np.asarray(entry["index"], dtype=np.uint8))
    index.nprobe = n_probe(int(index.nlist))
    from latentmap.pipeline.neighbors import row_norms

    norms = np.asarray(row_norms(store, ds_id, layer), dtype=np.float32)
    got = (index, np.asarray(entry["rows"], dtype=np.int64), norms)
    with _loaded_lock:
        _loaded[key] = got
        while len(_loaded) > _MAX_LOADED:
            _loaded.popitem(last=False)
    return got


def ann_search(
    index, rows: np.ndarray, X, norms: np.ndarray, q: np.ndarray, k: int, exclude=()
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k dataset rows by cosine to ``q``: IVF candidates re-ranked exactly.

    Returns (rows (k',) int64, sims (k',) float32), k' <= k, best first, ties -> lower row.
    """
    faiss = faiss_module()
    qn = float(np.linalg.norm(q))
    qu = (np.asarray(q, np.float32) / (qn if qn > 0 else 1.0))[None, :]
    want = max(CANDIDATES, 4 * (k + len(tuple(exclude))))
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        _, pos = index.search(qu, min(want, len(rows)))
    finally:
        faiss.omp_set_num_threads(prev)
    pos = pos[0][pos[0] >= 0]
    cand = np.unique(rows[pos])  # sorted: lower rows first among ties
    cand = cand[~np.isin(cand, np.asarray(list(exclude), dtype=np.int64))]
    if not len(cand):
        return np.empty(0, np.int64), np.empty(0, np.float32)
    V = np.asarray(X[cand], dtype=np.float32)
    n = norms[cand]
    sims = (V @ qu[0]) / np.where(n > 0, n, np.inf)
    order = np.argsort(-sims, kind="stable")[:k]
    return cand[order], sims[order].astype(np.float32)
