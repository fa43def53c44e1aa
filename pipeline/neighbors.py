"""Exact cosine nearest neighbours in latent space.

Everything here is brute force on normalised vectors with BLAS matmuls, done in blocks so
that memory stays bounded: exact results, no index to build, fast enough up to ~1M x 512 per
query and ~100k rows for a full kNN graph.

Ties are broken deterministically: among equally similar rows the lower row index comes
first, so results never depend on BLAS blocking or thread count beyond float rounding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
from latentmap.pipeline.store import Entry, Store

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

NORMS_VERSION = 1
KNN_VERSION = 1

# Largest similarity block computed at once, in float32 elements (64M -> 256 MB).
_MAX_BLOCK_ELEMS = 1 << 26
# Rows of X read at once when computing norms of a (possibly memory-mapped) matrix.
_NORM_CHUNK = 1 << 16


class NeighborsError(ValueError):
    """A nearest-neighbour request that cannot be answered (message is shown to the user)."""


# --------------------------------------------------------------------------- helpers


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def _as_2d(X: np.ndarray, what: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise NeighborsError(f"{what} must be a 2-D (N, D) array, got shape {X.shape}")
    return X


def vector_norms(X: np.ndarray) -> np.ndarray:
    """(N,) float32 Euclidean row norms, computed in float64 chunks (X may be a memmap)."""
    out = np.empty(len(X), dtype=np.float32)
    for start in range(0, len(X), _NORM_CHUNK):
        chunk = np.asarray(X[start : start + _NORM_CHUNK], dtype=np.float64)
        out[start : start + len(chunk)] = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
    return out


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """float32 copy of X with unit-length rows; all-zero rows stay zero (never NaN)."""
    X = _as_2d(X)
    out = np.array(X, dtype=np.float32, copy=True)
    norms = vector_norms(out)
    nz = norms > 0
    out[nz] /= norms[nz, None]
    out[~nz] = 0.0
    return out


def _top_k(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of S (B, N) by descending value, ties -> lower column index first.

    Entries equal to -inf are treated as unavailable; callers make sure at least k finite
    entries exist per row. Returns (idx (B, k) int64, vals (B, k) float32).
    """
    B, N = S.shape
    if k == 0:
        return np.empty((B, 0), np.int64), np.empty((B, 0), np.float32)
    if k < N:
        part = np.argpartition(S, N - k, axis=1)[:, N - k :]  # no negated copy of S
    else:
        part = np.broadcast_to(np.arange(N), (B, N)).copy()
    vals = np.take_along_axis(S, part, axis=1)
    if k < N:
        # argpartition picks an arbitrary subset among values tied with the k-th one; fix the
        # (rare) rows where more than k entries reach the k-th value by choosing lowest indices.
        kth = vals.min(axis=1)
        n_ge = (kth[:, None] <= S).sum(axis=1)
        for r in np.flatnonzero(n_ge > k):
            cand = np.flatnonzero(kth[r] <= S[r])
            order = np.lexsort((cand, -S[r, cand]))[:k]
            part[r] = cand[order]
            vals[r] = S[r, part[r]]
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32, copy=False)
    return idx, vals


# --------------------------------------------------------------------------- in-memory kNN


def cosine_knn(
    X: np.ndarray, k: int, *, block: int = 2048, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among the rows (itself excluded), by cosine.

    Returns ``(idx, sims)``: (N, k) int64 row indices and (N, k) float32 cosine similarities,
    sorted by descending similarity (ties: lower index first). k is clamped to N - 1. Rows are
    processed ``block`` at a time (fewer when N is large, to bound memory).
    """
    X = _as_2d(X)
    n = len(X)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise NeighborsError(f"k must be a non-negative integer, got {k!r}")
    k = int(min(k, max(n - 1, 0)))
    idx = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    if n == 0 or k == 0:
        _report(progress, 1.0, "kNN graph: nothing to compare")
        return idx, sims
    if not np.isfinite(X).all():
        raise NeighborsError("X has NaN/Inf values: pass only the valid rows to cosine_knn")
    Xn = normalize_rows(X)
    step = int(max(1, min(block, _MAX_BLOCK_ELEMS // n)))
    for start in range(0, n, step):
        stop = min(start + step, n)
        S = Xn[start:stop] @ Xn.T
        S[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        idx[start:stop], sims[start:stop] = _top_k(S, k)
        _report(progress, stop / n, f"kNN graph: {stop:,} of {n:,} rows")
    return idx, sims


def nearest_to_vectors(
    X: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
    exclude: Iterable[int] | np.ndarray | None = None,
    norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of each query among the rows of X.

    X may be a read-only memmap: it is never copied or normalised as a whole; similarities are
    ``(X @ q) / (norms * |q|)`` with ``norms`` the precomputed row norms (computed here if
    None). Rows where ``valid`` is False, rows listed in ``exclude`` and rows with NaN/Inf are
    skipped; zero rows and zero queries have similarity 0. ``queries`` is (m, D) or (D,).
    k is clamped to the number of eligible rows. Returns (idx (m, k) int64, sims (m, k) float32).
    """
    X = _as_2d(X)
    Q = np.asarray(queries, dtype=np.float32)
    if Q.ndim == 1:
        Q = Q[None, :]
    if Q.ndim != 2 or Q.shape[1] != X.shape[1]:
        raise NeighborsError(
            f"queries must have {X.shape[1]} columns like X, got shape {np.shape(queries)}"
        )
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise NeighborsError(f"k must be a positive integer, got {k!r}")
    n, m = len(X), len(Q)
    if norms is None:
        norms = vector_norms(X)
    norms = np.asarray(norms, dtype=np.float32)
    if norms.shape != (n,):
        raise NeighborsError(f"norms must have shape ({n},), got {norms.shape}")
    eligible = np.isfinite(norms)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (n,):
            raise NeighborsError(f"valid must have shape ({n},), got {valid.shape}")
        eligible &= valid
    if exclude is not None:
        ex = np.asarray(list(exclude) if not isinstance(exclude, np.ndarray) else exclude)
        ex = ex.astype(np.int64).ravel()
        ex = ex[(ex >= 0) & (ex < n)]
        eligible[ex] = False
    k = int(min(k, int(eligible.sum())))
    if k == 0 or m == 0:
        return np.empty((m, k), np.int64), np.empty((m, k), np.float32)

    qn = np.sqrt(np.einsum("ij,ij->i", Q.astype(np.float64), Q.astype(np.float64)))
    denom_rows = np.where(norms > 0, norms, np.inf)  # zero rows -> similarity 0
    q_chunk = int(max(1, min(m, _MAX_BLOCK_ELEMS // max(n, 1))))
    out_idx = np.empty((m, k), np.int64)
    out_sims = np.empty((m, k), np.float32)
    for start in range(0, m, q_chunk):
        Qc = Q[start : start + q_chunk]
        # X @ q streams X (memmap pages) once per chunk of queries; no copy of X is made.
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf rows: made -inf below
            S = np.ascontiguousarray((X @ Qc.T).T, dtype=np.float32)  # (mc, n)
            S /= denom_rows[None, :]
            qc = qn[start : start + len(Qc)]
            S /= np.where(qc > 0, qc, np.inf).astype(np.float32)[:, None]
        S[~np.isfinite(S)] = -np.inf
        S[:, ~eligible] = -np.inf
        out_idx[start : start + len(Qc)], out_sims[start : start + len(Qc)] = _top_k(S, k)
    return out_idx, out_sims


# --------------------------------------------------------------------------- store-backed


def norms_key(ds_id: str, layer: str) -> dict:
    return {"kind": "norms", "version": NORMS_VERSION, "dataset": ds_id, "layer": layer}


def row_norms(store: Store, ds_id: str, layer: str) -> np.ndarray:
    """(N,) float32 Euclidean norms of a layer's vectors (NaN for invalid rows), cached."""
    key = norms_key(ds_id, layer)

    def compute() -> tuple[dict[str, np.ndarray], dict]:
        return {"norms": vector_norms(store.vectors(ds_id, layer))}, {}

    return store.get_or_compute(key, compute)["norms"]


def knn_key(ds_id: str, layer: str, k: int) -> dict:
    return {"kind": "knn", "version": KNN_VERSION, "dataset": ds_id, "layer": layer, "k": int(k)}


def knn_graph(
    store: Store, ds_id: str, layer: str, k: int = 15, *, progress: Progress | None = None
) -> Entry:
    """Cached exact cosine kNN graph of a layer, in full-row indexing of the dataset.

    Arrays ``idx`` (N, k) int64 and ``sims`` (N, k) float32. Invalid rows (NaN/Inf latents)
    are never neighbours, and their own rows are -1 / NaN. k is clamped to (valid rows - 1);
    ``info["k"]`` is the k used.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise NeighborsError(f"k must be a positive integer, got {k!r}")
    valid = store.valid_mask(ds_id, layer)
    n_valid = int(valid.sum())
    k_used = int(min(k, max(n_valid - 1, 0)))

    def compute() -> tuple[dict[str, np.ndarray], dict]:
        t0 = time.perf_counter()
        rows = np.flatnonzero(valid)
        _report(progress, 0.0, f"reading {n_valid:,} vectors of {layer}")
        X = np.asarray(store.vectors(ds_id, layer)[rows], dtype=np.float32)
        cidx, csims = cosine_knn(X, k_used, progress=progress)
        idx = np.full((len(valid), k_used), -1, dtype=np.int64)
        sims = np.full((len(valid), k_used), np.nan, dtype=np.float32)
        idx[rows] = rows[cidx]
        sims[rows] = csims
        seconds = time.perf_counter() - t0
        log.info("kNN graph %s/%s k=%d: %.2f s", ds_id, layer, k_used, seconds)
        info = {"k": k_used, "k_requested": int(k), "n_valid": n_valid, "seconds": seconds}
        return {"idx": idx, "sims": sims}, info

    return store.get_or_compute(knn_key(ds_id, layer, k_used), compute)


def nearest(store: Store, ds_id: str, layer: str, row: int, k: int = 12) -> list[tuple[int, float]]:
    """The k rows most cosine-similar to ``row`` in the layer's latent space (not the 2-D map).

    Excludes the row itself and rows with NaN/Inf latents; k is clamped to what is available.
    """
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
        raise NeighborsError(f"row must be an integer, got {row!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise NeighborsError(f"k must be a positive integer, got {k!r}")
    X = store.vectors(ds_id, layer)
    n = len(X)
    row = int(row)
    if not 0 <= row < n:
        raise NeighborsError(f"row {row} is out of range: dataset {ds_id} has {n} items")
    valid = store.valid_mask(ds_id, layer)
    if not valid[row]:
        raise NeighborsError(f"item {row} has NaN/Inf latents in layer {layer}")
    q = np.asarray(X[row], dtype=np.float32)
    got = _index_for(store, ds_id, layer, valid)
    if got is not None:  # (index, rows, norms), loaded once per process
        from latentmap.pipeline.ann import ann_search

        rows, sims = ann_search(got[0], got[1], X, got[2], q, int(k), exclude=[row])
        return [(int(i), float(s)) for i, s in zip(rows, sims, strict=True)]
    norms = row_norms(store, ds_id, layer)
    idx, sims = nearest_to_vectors(X, q, int(k), valid=valid, exclude=[row], norms=norms)
    return [(int(i), float(s)) for i, s in zip(idx[0], sims[0], strict=True)]


def _index_for(store: Store, ds_id: str, layer: str, valid: np.ndarray):
    """The layer's built IVF index (index, rows) when it is large enough to use one."""
    from latentmap.pipeline.ann import ANN_MIN_ROWS, cached_index

    if int(valid.sum()) < ANN_MIN_ROWS:
        return None
    return cached_index(store, ds_id, layer)


def search_method(store: Store, ds_id: str, layer: str) -> str:
    """How ``nearest`` answers for this layer: "exact", "IVF index" or "exact (index building)"."""
    from latentmap.pipeline.ann import ANN_MIN_ROWS

    valid = store.valid_mask(ds_id, layer)
    if int(valid.sum()) < ANN_MIN_ROWS:
        return "exact"
    return (
        "IVF index"
        if _index_for(store, ds_id, layer, valid) is not None
        else "exact (index building)"
    )
