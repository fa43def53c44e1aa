"""Classifier diagnostics in the latent space: centroids, confusion, confusion vs. distance,
and how far a 2-D map can be trusted (trustworthiness, k-NN recall, silhouette).

All functions take numpy arrays; the ``*_for`` helpers (and ``centroid_map``,
``layer_summary``) read a dataset from the store and cache their result by key like every
other derived entry. Their ``info`` is plain JSON: NaN is stored as None.

Labels are compared as strings (``_labels``): 3, 3.0 and "3" are one class; missing values
(None, NaN, pd.NA) are no class at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from latentmap.pipeline.groups import grouped_key, metadata_with_groups
from latentmap.pipeline.store import Entry, Store

DIAG_VERSION = 2
# Rows of a (possibly memory-mapped) layer read at once.
_CHUNK = 1 << 16
# Largest (queries x rows) distance block computed at once, in elements (32M -> 256 MB f64).
_MAX_BLOCK_ELEMS = 1 << 25
_PRED_HINT = (
    "encode with the classifier's output layer (the encode job writes `pred` and "
    "`pred_score` when the model's last layer gives class scores)"
)


class DiagnosticsError(ValueError):
    """A diagnostic that cannot be computed; the message says what is missing."""


# --------------------------------------------------------------------------- helpers


def _label_of(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        if v != v:  # NaN
            return ""
        return str(int(v)) if float(v).is_integer() else str(v)
    if not isinstance(v, str):
        import pandas as pd

        try:
            if pd.isna(v) is True:  # pd.NA, NaT
                return ""
        except (TypeError, ValueError):
            pass
    return str(v)


def _labels(values) -> np.ndarray:
    """Labels as strings (so 3, 3.0 and "3" are one class); missing values become ''.

    Vectorised for numeric, string and pandas columns: a million labels take well under a
    second (each distinct value is converted once).
    """
    import pandas as pd

    if isinstance(values, (list, tuple)):
        arr = np.asarray(values, dtype=object)  # keeps 3 and "a" as they are
    else:
        arr = np.asarray(values)
    arr = arr.ravel()
    if len(arr) == 0:
        return np.zeros(0, dtype="<U1")
    kind = arr.dtype.kind
    if kind in "USbiu":
        return arr.astype(str)
    if kind in "mM":
        return np.array([_label_of(v) for v in pd.Index(arr)], dtype=str)
    if kind == "f":
        uniq, inv = np.unique(arr, return_inverse=True)
        names = np.array([_label_of(v) for v in uniq.tolist()], dtype=str)
        return names[inv.ravel()]
    arr = arr.astype(object, copy=False)
    inferred = pd.api.types.infer_dtype(arr, skipna=True)
    if inferred in ("string", "empty"):
        missing = np.asarray(pd.isna(arr), dtype=bool)
        out = np.where(missing, "", arr).astype(str)
        return out
    if inferred in ("integer", "floating", "mixed-integer-float"):
        codes, uniq = pd.factorize(arr, use_na_sentinel=True)
        names = np.array([_label_of(v) for v in list(uniq)] + [""], dtype=str)
        return names[codes]  # code -1 (missing) picks the trailing ""
    return np.array([_label_of(v) for v in arr], dtype=str)


def sorted_classes(labels: np.ndarray) -> list[str]:
    """Classes in natural order: numbers numerically, then strings."""
    uniq = [str(c) for c in np.unique(np.asarray(labels, dtype=str)) if c != ""]

    def key(c: str):
        try:
            return (0, float(c), c)
        except ValueError:
            return (1, 0.0, c)

    return sorted(uniq, key=key)


def _index_of(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """(N,) int64 position of each label in ``classes``; -1 where it is not one of them."""
    uniq, inv = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    pos = {c: i for i, c in enumerate(classes)}
    remap = np.array([pos.get(str(c), -1) for c in uniq], dtype=np.int64)
    return remap[inv.ravel()] if len(uniq) else np.zeros(0, np.int64)


def _nan_to_none(x: Any) -> Any:
    """A float (None for NaN/Inf) for JSON info; lists and tuples element-wise."""
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _short_list(items, limit: int = 12) -> str:
    items = [str(i) for i in items]
    if not items:
        return "none"
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" (+{more} more)" if more > 0 else "")


def _column(meta, col: str, what: str, hint: str) -> np.ndarray:
    """Labels of metadata column ``col`` as strings, or a DiagnosticsError saying what to do."""
    if col not in meta.columns:
        raise DiagnosticsError(
            f"no {what} column '{col}': {hint}; columns available: {_short_list(meta.columns)}"
        )
    return _labels(meta[col])


def _true_column(meta, col: str) -> np.ndarray:
    return _column(
        meta, col, "label", f"add a '{col}' column to the labels table or pick another column"
    )


def _pred_column(meta, col: str) -> np.ndarray:
    return _column(
        meta, col, "predictions", f"{_PRED_HINT} or add a '{col}' column to the labels table"
    )


def _group_sums(X: np.ndarray, rows: np.ndarray, group: np.ndarray, k: int) -> np.ndarray:
    """(k, D) float64 sums of X[rows] per group (group[i] in [0, k) for rows[i]), read in
    chunks so that a memory-mapped X is never loaded whole."""
    import scipy.sparse as sp

    out = np.zeros((k, X.shape[1]), np.float64)
    for start in range(0, len(rows), _CHUNK):
        r = rows[start : start + _CHUNK]
        g = group[start : start + _CHUNK]
        block = np.asarray(X[r], dtype=np.float64)
        ind = sp.csr_matrix((np.ones(len(r)), (g, np.arange(len(r)))), shape=(k, len(r)))
        out += ind @ block
    return out


def _class_index(lab: np.ndarray, keep: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes in natural order, rows kept with a label, class index of each such row)."""
    keep = keep & (lab != "")
    rows = np.flatnonzero(keep)
    classes = sorted_classes(lab[rows])
    return classes, rows, _index_of(lab[rows], classes)


# --------------------------------------------------------------------------- centroids


def class_centroids(
    X: np.ndarray, labels, valid: np.ndarray | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes, centroids (k, D) float32, counts (k,)) over valid rows."""
    X = np.asarray(X)
    if X.dtype.kind != "f":
        X = X.astype(np.float32)
    lab = _labels(labels)
    if len(lab) != len(X):
        raise DiagnosticsError(f"{len(lab)} labels for {len(X)} vectors")
    keep = np.ones(len(X), bool) if valid is None else np.asarray(valid, bool).copy()
    classes, rows, group = _class_index(lab, keep)
    if not classes:
        raise DiagnosticsError("no labelled items with finite latents")
    counts = np.bincount(group, minlength=len(classes)).astype(np.int64)
    sums = _group_sums(X, rows, group, len(classes))
    return classes, (sums / counts[:, None]).astype(np.float32), counts


def pairwise_distances(C: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(k, k) distances between centroids: cosine (1 - cos) or euclidean."""
    C = np.asarray(C, dtype=np.float64)
    if metric == "euclidean":
        sq = (C**2).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * C @ C.T, 0.0)
        d = np.sqrt(d2)
    elif metric == "cosine":
        n = np.linalg.norm(C, axis=1)
        n[n == 0] = 1.0
        U = C / n[:, None]
        d = 1.0 - np.clip(U @ U.T, -1.0, 1.0)
    else:
        raise DiagnosticsError(f"unknown metric {metric!r}: use cosine or euclidean")
    np.fill_diagonal(d, 0.0)
    return d


def project_to_map(
    X_unit: np.ndarray, coords: np.ndarray, queries: np.ndarray, *, k: int = 15
) -> np.ndarray:
    """Place new latent points on an existing 2-D map (t-SNE / UMAP / PCA alike).

    Each query lands at the similarity-weighted mean of the 2-D positions of its k nearest
    items in the latent space (cosine): the same initialisation openTSNE's and UMAP's
    ``transform`` start from. ``X_unit`` are unit-norm valid rows, ``coords`` their 2-D positions.
    """
    Q = np.asarray(queries, dtype=np.float32)
    qn = np.linalg.norm(Q, axis=1, keepdims=True)
    qn[qn == 0] = 1.0
    sims = (Q / qn) @ X_unit.T
    k = max(1, min(k, len(X_unit)))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.take_along_axis(sims, top, axis=1)
    w = np.clip(w, 0.0, None) + 1e-6
    return (coords[top] * w[..., None]).sum(1) / w.sum(1, keepdims=True)


# --------------------------------------------------------------------------- map alignment


def procrustes_align(ref: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotate/reflect, scale uniformly and shift ``coords`` (N, 2) onto ``ref`` (N, 2).

    The similarity transform is fitted by least squares on the rows finite in both and
    applied to every row of ``coords`` (rows NaN there stay NaN). Returns (aligned (N, 2)
    float32, disparity): the disparity is ``scipy.spatial.procrustes(ref, coords)[2]`` on the
    shared rows, the sum of squared differences after both are centred and scaled to unit
    norm (0 = same shape, 1 = nothing in common). With fewer than 3 shared rows or a
    constant input the coordinates come back unchanged and the disparity is NaN.
    """
    ref = np.asarray(ref, dtype=np.float64)
    X = np.asarray(coords, dtype=np.float64)
    if ref.ndim != 2 or X.ndim != 2 or ref.shape != X.shape or X.shape[1] != 2:
        raise DiagnosticsError(
            f"procrustes_align needs two (N, 2) arrays, got {ref.shape} and {X.shape}"
        )
    unchanged = X.astype(np.float32)
    shared = np.isfinite(ref).all(axis=1) & np.isfinite(X).all(axis=1)
    if int(shared.sum()) < 3:
        return unchanged, float("nan")
    A, B = ref[shared], X[shared]
    mu_a, mu_b = A.mean(axis=0), B.mean(axis=0)
    A = A - mu_a
    B = B - mu_b
    norm_a, norm_b = np.linalg.norm(A), np.linalg.norm(B)
    if not (norm_a > 0 and norm_b > 0) or not (np.isfinite(norm_a) and np.isfinite(norm_b)):
        return unchanged, float("nan")
    A /= norm_a
    B /= norm_b
    # scipy.linalg.orthogonal_procrustes(A, B) as scipy.spatial.procrustes calls it:
    # R minimises ||A R - B||, scale s = sum of singular values; B R^T s is B fitted onto A.
    u, w, vt = np.linalg.svd((B.T @ A).T)
    R = u @ vt
    s = float(w.sum())
    disparity = float(((A - (B @ R.T) * s) ** 2).sum())
    aligned = ((X - mu_b) @ R.T) * (s * norm_a / norm_b) + mu_a
    return aligned.astype(np.float32), disparity


# --------------------------------------------------------------------------- UMAP transform


def _topk_neighbours(
    X: np.ndarray,
    rows: np.ndarray,
    Q: np.ndarray,
    k: int,
    metric: str,
    norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest of each query among ``X[rows]`` (cosine: 1 - cos; euclidean).

    Returns (positions into ``rows`` (m, k) int64, distances (m, k) float32), ascending.
    X is read in chunks (it may be a memmap); ``norms`` are the norms of X[rows] (cosine).
    """
    Q = np.asarray(Q, dtype=np.float64)
    m = len(Q)
    if metric == "cosine":
        qn = np.linalg.norm(Q, axis=1)
        Q = Q / np.where(qn > 0, qn, 1.0)[:, None]
    else:
        qsq = (Q**2).sum(1)
    best_d = np.full((m, 0), np.inf)
    best_i = np.zeros((m, 0), np.int64)
    step = int(max(1, min(_CHUNK, _MAX_BLOCK_ELEMS // max(m, 1))))
    for start in range(0, len(rows), step):
        block = np.asarray(X[rows[start : start + step]], dtype=np.float64)
        if metric == "cosine":
            bn = norms[start : start + step] if norms is not None else np.linalg.norm(block, axis=1)
            sims = (Q @ block.T) / np.where(bn > 0, bn, np.inf)[None, :]
            d = np.clip(1.0 - sims, 0.0, 2.0)
        else:
            d2 = qsq[:, None] + (block**2).sum(1)[None, :] - 2.0 * Q @ block.T
            d = np.sqrt(np.maximum(d2, 0.0))
        idx = np.broadcast_to(np.arange(start, start + len(block)), d.shape)
        cand_d = np.hstack([best_d, d])
        cand_i = np.hstack([best_i, idx])
        if cand_d.shape[1] > k:
            part = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
            cand_d = np.take_along_axis(cand_d, part, axis=1)
            cand_i = np.take_along_axis(cand_i, part, axis=1)
        order = np.lexsort((cand_i, cand_d), axis=1)
        best_d = np.take_along_axis(cand_d, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    return best_i.astype(np.int64), best_d.astype(np.float32)


def _umap_place(
    indices: np.ndarray,
    dists: np.ndarray,
    embedding: np.ndarray,
    *,
    n_neighbors: int,
    min_dist: float,
    seed: int,
    disconnection_distance: float,
) -> np.ndarray:
    """The body of umap-learn 0.5's ``UMAP.transform`` from the kNN of the queries on.

    ``indices`` / ``dists``: (m, n_neighbors) neighbours of each query among the training rows,
    ascending; ``embedding``: the training rows' map. Default UMAP settings throughout
    (local_connectivity 1, spread 1, learning rate 1, repulsion 1, 5 negative samples).
    """
    from latentmap.pipeline import localworker

    if localworker.wanted():  # a job of the embedded server: no numba compile here
        kwargs = {
            "n_neighbors": n_neighbors,
            "min_dist": min_dist,
            "seed": seed,
            "disconnection_distance": disconnection_distance,
        }
        done, xy = localworker.umap_place((indices, dists, embedding), kwargs)
        if done:
            return xy
    import scipy.sparse
    from sklearn.utils import check_random_state
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import (
        INT32_MAX,
        INT32_MIN,
        compute_membership_strengths,
        find_ab_params,
        init_graph_transform,
        make_epochs_per_sample,
        smooth_knn_dist,
    )

    m = len(indices)
    embedding = np.asarray(embedding, dtype=np.float32)
    random_state = check_random_state(seed)
    rng_state = random_state.randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    indices = np.array(indices, dtype=np.int64, copy=True)
    dists = np.ascontiguousarray(dists, dtype=np.float32)
    indices[dists >= disconnection_distance] = -1
    sigmas, rhos = smooth_knn_dist(dists, float(n_neighbors), local_connectivity=0.0)
    rows, cols, vals, _ = compute_membership_strengths(indices, dists, sigmas, rhos, bipartite=True)
    graph = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(m, len(embedding)))
    csr = graph.tocsr()
    csr.eliminate_zeros()
    placed = init_graph_transform(csr, embedding)
    if csr.nnz == 0:
        return placed.astype(np.float32)
    n_epochs = 100 if graph.shape[0] <= 10000 else 30
    graph.data[graph.data < (graph.data.max() / float(n_epochs))] = 0.0
    graph.eliminate_zeros()
    epochs_per_sample = make_epochs_per_sample(graph.data, n_epochs)
    a, b = find_ab_params(1.0, min_dist)
    placed = optimize_layout_euclidean(
        placed,
        embedding.astype(np.float32, copy=True),
        graph.row,
        graph.col,
        n_epochs,
        graph.shape[1],
        epochs_per_sample,
        a,
        b,
        rng_state,
        gamma=1.0,
        initial_alpha=1.0 / 4.0,
        negative_sample_rate=5.0,
        parallel=False,
        move_other=False,
    )
    return np.asarray(placed, dtype=np.float32)


def _check_transform_inputs(n_train: int, n_neighbors: int, min_dist: float) -> int:
    if n_train < 2:
        raise DiagnosticsError(
            f"a UMAP transform needs at least 2 points on the map, got {n_train}"
        )
    if isinstance(n_neighbors, bool) or int(n_neighbors) != n_neighbors or n_neighbors < 2:
        raise DiagnosticsError(f"n_neighbors must be a whole number >= 2, got {n_neighbors!r}")
    if not 0.0 <= float(min_dist) <= 1.0:
        raise DiagnosticsError(f"min_dist must be between 0 and 1, got {min_dist!r}")
    return int(min(int(n_neighbors), n_train))


def umap_transform(
    X_unit: np.ndarray,
    coords: np.ndarray,
    queries: np.ndarray,
    *,
    n_neighbors: int,
    min_dist: float,
    seed: int = 0,
) -> np.ndarray:
    """Place new latent points on an existing UMAP map as umap-learn's ``UMAP.transform`` does.

    ``X_unit`` (N, D): the unit-norm training rows the map was fitted on; ``coords`` (N, 2):
    their map positions; ``queries`` (m, D). The cosine kNN of each query among X_unit gives
    a bipartite fuzzy graph (``smooth_knn_dist`` + ``compute_membership_strengths``); each
    query starts at the membership-weighted mean of its neighbours' positions and is then
    optimised with the training map held fixed (``optimize_layout_euclidean``, a/b from
    ``find_ab_params(1, min_dist)``), all with umap-learn's own functions. (Our fits pass a
    precomputed kNN graph and the fitted model is not kept, so ``model.transform`` is not
    available.) Returns (m, 2) float32; a query with no neighbour closer than the
    disconnection distance (cosine 2) is NaN.
    """
    X_unit = np.asarray(X_unit, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.float32)
    Q = np.asarray(queries, dtype=np.float32)
    if Q.ndim == 1:
        Q = Q[None, :]
    if X_unit.ndim != 2 or coords.shape != (len(X_unit), 2):
        raise DiagnosticsError(
            f"X_unit must be (N, D) and coords (N, 2), got {X_unit.shape} and {coords.shape}"
        )
    if Q.ndim != 2 or Q.shape[1] != X_unit.shape[1]:
        raise DiagnosticsError(
            f"queries must have {X_unit.shape[1]} columns like X_unit, got shape {Q.shape}"
        )
    if not np.isfinite(coords).all():
        raise DiagnosticsError("coords contain NaN/Inf: pass only the rows on the map")
    k = _check_transform_inputs(len(X_unit), n_neighbors, min_dist)
    if len(Q) == 0:
        return np.zeros((0, 2), np.float32)
    rows = np.arange(len(X_unit))
    idx, dist = _topk_neighbours(X_unit, rows, Q, k, "cosine", norms=np.ones(len(X_unit)))
    return _umap_place(
        idx,
        dist,
        coords,
        n_neighbors=k,
        min_dist=float(min_dist),
        seed=seed,
        disconnection_distance=2.0,
    )


# --------------------------------------------------------------------------- confusion


def confusion(true, pred, classes: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(classes, counts (k, k)) with rows = true class, columns = predicted class."""
    t, p = _labels(true), _labels(pred)
    if len(t) != len(p):
        raise DiagnosticsError(f"{len(t)} true labels but {len(p)} predictions")
    keep = (t != "") & (p != "")
    if classes is None:
        classes = sorted_classes(np.concatenate([t[keep], p[keep]]))
    k = len(classes)
    ti, pi = _index_of(t[keep], classes), _index_of(p[keep], classes)
    ok = (ti >= 0) & (pi >= 0)
    M = np.bincount(ti[ok] * k + pi[ok], minlength=k * k).reshape(k, k).astype(np.int64)
    return list(classes), M


def normalize_rows(M: np.ndarray) -> np.ndarray:
    s = M.sum(axis=1, keepdims=True).astype(np.float64)
    s[s == 0] = 1.0
    return M / s


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        rho, p = spearmanr(x, y)
        return float(rho), float(p)
    return float("nan"), float("nan")


def confusion_vs_distance(
    X: np.ndarray, true, pred, valid: np.ndarray | None = None
) -> dict[str, Any]:
    """For every ordered class pair A→B (A ≠ B): confusion rate P(pred B | true A) and the
    cosine and euclidean distance between the latent centroids of A and B, with Spearman's
    rank correlation of rate vs distance (a negative rho: closer classes are confused more).
    """
    classes, cents, counts = class_centroids(X, true, valid)
    keep = np.ones(len(X), bool) if valid is None else np.asarray(valid, bool)
    _, M = confusion(_labels(true)[keep], _labels(pred)[keep], classes)
    rate = normalize_rows(M)
    dc = pairwise_distances(cents, "cosine")
    de = pairwise_distances(cents, "euclidean")
    a_idx, b_idx = np.where(~np.eye(len(classes), dtype=bool))
    pairs = {
        "a": [classes[i] for i in a_idx],
        "b": [classes[j] for j in b_idx],
        "a_idx": a_idx,
        "b_idx": b_idx,
        "rate": rate[a_idx, b_idx],
        "count": M[a_idx, b_idx],
        "cosine": dc[a_idx, b_idx],
        "euclidean": de[a_idx, b_idx],
    }
    out: dict[str, Any] = {
        "classes": classes,
        "counts": counts,
        "matrix": M,
        "pairs": pairs,
        "centroids": cents,
    }
    for metric in ("cosine", "euclidean"):
        out[f"spearman_{metric}"] = _spearman(pairs[metric], pairs["rate"])
    return out


def label_rows(meta, col: str, value) -> np.ndarray:
    """Sorted int64 rows whose ``col`` equals ``value`` (compared as strings: 3 == "3")."""
    lab = _true_column(meta, col)
    return np.flatnonzero(lab == _labels([value])[0]).astype(np.int64)


def pair_rows(meta, true_col: str, pred_col: str, a: str, b: str) -> np.ndarray:
    """Sorted int64 rows with true class ``a`` predicted as ``b`` (compared as strings)."""
    t = _true_column(meta, true_col)
    p = _pred_column(meta, pred_col)
    a_s, b_s = _labels([a, b])
    return np.flatnonzero((t == a_s) & (p == b_s) & (t != "")).astype(np.int64)


def confusion_distance_for(
    store: Store, ds_id: str, layer: str, true_col: str = "label", pred_col: str = "pred"
) -> Entry:
    """Confusion matrix of a dataset's predictions and, per ordered class pair, the confusion
    rate next to the distance between the two classes' latent centroids in ``layer``.

    Over items with finite latents in the layer and both a label and a prediction. Arrays:
    ``matrix`` (k, k) int64 (rows true, columns predicted), and per ordered pair A≠B in the
    order of ``confusion_vs_distance``: ``rate`` P(pred B | true A), ``count``, ``cosine``,
    ``euclidean`` centroid distances, ``a_idx`` / ``b_idx`` (int32 class indices). Info:
    ``classes``, ``spearman_cosine`` / ``spearman_euclidean`` as [rho, p] (None when
    undefined), ``n_items``, ``accuracy``, ``notes``.
    """
    meta = metadata_with_groups(store, ds_id)
    t = _true_column(meta, true_col)
    p = _pred_column(meta, pred_col)
    store.vectors(ds_id, layer)  # a clear error for an unknown layer
    key = {
        "kind": "confusion_distance",
        "version": DIAG_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "true_col": true_col,
        "pred_col": pred_col,
        **grouped_key(store, ds_id, true_col, pred_col),
    }

    def compute():
        X = store.vectors(ds_id, layer)
        valid = store.valid_mask(ds_id, layer)
        both = (t != "") & (p != "")
        keep = valid & both
        if not keep.any():
            raise DiagnosticsError(
                f"no item has a '{true_col}', a '{pred_col}' and finite latents in layer "
                f"{layer}: nothing to compare"
            )
        out = confusion_vs_distance(X, t, p, keep)
        M, classes, pairs = out["matrix"], out["classes"], out["pairs"]
        notes: list[str] = []
        n_bad = int((both & ~valid).sum())
        if n_bad:
            notes.append(f"{_plural(n_bad, 'item')} with NaN/Inf latents left out")
        n_unlab = int((~both).sum())
        if n_unlab:
            notes.append(
                f"{_plural(n_unlab, 'item')} without a '{true_col}' or a '{pred_col}' left out"
            )
        foreign = keep & (_index_of(p, classes) < 0)
        if foreign.any():
            names = sorted_classes(p[foreign])
            notes.append(
                f"{_plural(int(foreign.sum()), 'prediction')} of classes that no item is "
                f"labelled with ({_short_list(names, 5)}) left out of the matrix"
            )
        one = [c for c, n in zip(classes, out["counts"], strict=True) if n == 1]
        if one:
            notes.append(
                f"{_plural(len(one), 'class', 'classes')} with one member: its centroid "
                "is that item"
            )
        n_items = int(M.sum())
        arrays = {
            "matrix": M.astype(np.int64),
            "rate": np.asarray(pairs["rate"], np.float64),
            "count": np.asarray(pairs["count"], np.int64),
            "cosine": np.asarray(pairs["cosine"], np.float64),
            "euclidean": np.asarray(pairs["euclidean"], np.float64),
            "a_idx": np.asarray(pairs["a_idx"], np.int32),
            "b_idx": np.asarray(pairs["b_idx"], np.int32),
        }
        info = {
            "classes": classes,
            "counts": [int(c) for c in out["counts"]],
            "true_col": true_col,
            "pred_col": pred_col,
            "spearman_cosine": _nan_to_none(out["spearman_cosine"]),
            "spearman_euclidean": _nan_to_none(out["spearman_euclidean"]),
            "n_items": n_items,
            "accuracy": _nan_to_none(np.trace(M) / n_items) if n_items else None,
            "notes": notes,
        }
        return arrays, info

    return store.get_or_compute(key, compute)


# --------------------------------------------------------------------------- centroids on a map


def centroid_map(
    store: Store,
    ds_id: str,
    layer: str,
    method: str,
    params: dict[str, Any] | None,
    column: str,
    *,
    seed: int = 0,
) -> Entry:
    """Where each class of metadata ``column`` sits on the ``method`` map of ``layer``.

    Per class (values compared as strings, missing values left out; items with finite
    latents only) the latent centroid is placed on the map: PCA exactly (the PCA of the
    latent mean), UMAP with ``umap_transform`` of the latent mean, t-SNE (no transform) at
    the 2-D mean of the class's points. Arrays: ``xy`` (k, 2) float32, ``cov`` (k, 2, 2)
    float32 covariance of the class's map points (NaN for a class of one). Info:
    ``classes`` (natural order), ``counts``, ``how`` ("transform" or "mean2d"), ``column``,
    ``label`` (legend text), ``notes``, ``method``, ``params``.
    """
    from latentmap.pipeline.reduce import _LABELS, _check_method, projection

    method = _check_method(method)
    meta = metadata_with_groups(store, ds_id)
    if column not in meta.columns:
        raise DiagnosticsError(
            f"no column '{column}' to group by: pick one of {_short_list(meta.columns)}"
        )
    proj = projection(store, ds_id, layer, method, params, seed=seed)
    used = proj.info.get("params", {})
    key = {
        "kind": "centroids",
        "version": DIAG_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "method": method,
        "params": used,
        "seed": int(seed),
        "column": column,
        **grouped_key(store, ds_id, column),
    }

    def compute():
        lab = _labels(meta[column])
        coords = np.asarray(proj["coords"], dtype=np.float64)
        valid = store.valid_mask(ds_id, layer) & np.isfinite(coords).all(axis=1)
        classes, rows, group = _class_index(lab, valid)
        if not classes:
            raise DiagnosticsError(
                f"no item has a '{column}' value and finite latents in layer {layer}"
            )
        k = len(classes)
        counts = np.bincount(group, minlength=k).astype(np.int64)
        pts = coords[rows]
        mean2d = (
            np.stack([np.bincount(group, weights=pts[:, j], minlength=k) for j in range(2)], axis=1)
            / counts[:, None]
        )
        dev = pts - mean2d[group]
        cov = np.empty((k, 2, 2), np.float64)
        denom = np.where(counts > 1, counts - 1, 1).astype(np.float64)
        for i in range(2):
            for j in range(2):
                cov[:, i, j] = np.bincount(group, weights=dev[:, i] * dev[:, j], minlength=k)
        cov /= denom[:, None, None]
        cov[counts < 2] = np.nan

        ran = proj.info.get("ran")
        if ran is None:  # entries made before "ran" was recorded: fallbacks say so
            fell_back = any("showing PCA" in n for n in proj.info.get("notices", []))
            ran = "pca" if fell_back or method == "pca" else method
        notes: list[str] = []
        if ran == "pca":
            # PCA is affine (x -> (x - mean) @ W.T), so the map position of the latent mean
            # IS the 2-D mean of the class's map points: exact, no transform needed.
            xy, how = mean2d, "transform"
            label = "centroids (PCA of the latent mean)"
            if method != "pca":
                notes.append(
                    f"{_LABELS[method]} fell back to PCA for this layer: centroids are "
                    "exact PCA positions"
                )
        elif ran == "umap":
            X = store.vectors(ds_id, layer)
            sums = _group_sums(X, rows, group, k)
            cents = sums / counts[:, None]
            train = np.flatnonzero(valid)
            metric = used.get("metric", "cosine")
            nn = _check_transform_inputs(len(train), used.get("n_neighbors", 15), 0.0)
            norms = None
            if metric == "cosine":
                from latentmap.pipeline.neighbors import row_norms

                norms = np.asarray(row_norms(store, ds_id, layer), np.float64)[train]
            idx, dist = _topk_neighbours(X, train, cents, nn, metric, norms=norms)
            xy = _umap_place(
                idx,
                dist,
                coords[train],
                n_neighbors=nn,
                min_dist=float(used.get("min_dist", 0.1)),
                seed=seed,
                disconnection_distance=2.0 if metric == "cosine" else float("inf"),
            ).astype(np.float64)
            how, label = "transform", "centroids (UMAP transform of the latent mean)"
            lost = ~np.isfinite(xy).all(axis=1)
            if lost.any():
                xy[lost] = mean2d[lost]
                notes.append(
                    f"{_plural(int(lost.sum()), 'class', 'classes')} with no neighbour on "
                    "the map: shown at the 2-D mean"
                )
        else:
            xy, how = mean2d, "mean2d"
            label = f"centroids (2-D mean: {_LABELS[method]} has no transform)"
        n_one = int((counts == 1).sum())
        if n_one:
            notes.append(
                f"{_plural(n_one, 'class', 'classes')} "
                f"{'has' if n_one == 1 else 'have'} one member: no spread ellipse"
            )
        n_missing = int((store.valid_mask(ds_id, layer) & (lab == "")).sum())
        if n_missing:
            notes.append(f"{_plural(n_missing, 'item')} without a '{column}' value left out")
        info = {
            "classes": classes,
            "counts": [int(c) for c in counts],
            "how": how,
            "column": column,
            "label": label,
            "notes": notes,
            "method": method,
            "params": used,
        }
        return {"xy": xy.astype(np.float32), "cov": cov.astype(np.float32)}, info

    return store.get_or_compute(key, compute)


# --------------------------------------------------------------------------- trust


def knn_recall(
    latent_idx: np.ndarray, coords: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Per point: the share of its k latent neighbours that are also among its k nearest
    points on the 2-D map. ``latent_idx`` (N, k) holds full-row indices (-1 = none)."""
    from sklearn.neighbors import NearestNeighbors

    n, k = latent_idx.shape
    valid = np.isfinite(coords).all(1) if valid is None else np.asarray(valid, bool)
    rows = np.flatnonzero(valid)
    out = np.full(n, np.nan, np.float32)
    if len(rows) < 2 or k == 0:
        return out
    kk = min(k, len(rows) - 1)
    nn = NearestNeighbors(n_neighbors=kk + 1).fit(coords[rows])
    _, ind = nn.kneighbors(coords[rows])
    map_nb = rows[ind[:, 1:]]
    step = max(1, (1 << 24) // max(kk * kk, 1))
    for start in range(0, len(rows), step):
        lat = latent_idx[rows[start : start + step], :kk]
        mnb = map_nb[start : start + step]
        hit = (lat[:, :, None] == mnb[:, None, :]).any(axis=2) & (lat >= 0)
        n_lat = (lat >= 0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rec = hit.sum(axis=1) / n_lat
        rec[n_lat == 0] = np.nan
        out[rows[start : start + step]] = rec
    return out


def trustworthiness(
    X: np.ndarray, coords: np.ndarray, *, k: int = 10, sample: int = 2000, seed: int = 0
) -> float:
    """scikit-learn's trustworthiness (cosine in the latent space) on a seeded sample of
    at most ``sample`` valid points (its cost is quadratic in N)."""
    from sklearn.manifold import trustworthiness as tw

    keep = np.isfinite(coords).all(1) & np.isfinite(X).all(1)
    rows = np.flatnonzero(keep)
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    k = min(k, (len(rows) - 1) // 2)
    if k < 1:
        return float("nan")
    Xs = np.asarray(X[rows], dtype=np.float64)
    if np.ptp(Xs, axis=0).max(initial=0.0) == 0.0:
        return float("nan")  # every point is the same: no neighbourhood to keep
    return float(tw(Xs, coords[rows], n_neighbors=k, metric="cosine"))


def _silhouette_rows(lab: np.ndarray, keep: np.ndarray, sample: int, seed: int) -> np.ndarray:
    rows = np.flatnonzero(keep & (lab != ""))
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    return rows


def _silhouette_of(Xs: np.ndarray, lab: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    n_classes = len(np.unique(lab))
    if n_classes < 2 or n_classes >= len(lab):
        return float("nan")
    return float(silhouette_score(Xs, lab, metric="cosine"))


def silhouette(X: np.ndarray, labels, *, sample: int = 5000, seed: int = 0) -> float:
    """Cosine silhouette of the labels in the latent space (seeded sample for large N)."""
    lab = _labels(labels)
    rows = _silhouette_rows(lab, np.isfinite(np.asarray(X)).all(1), sample, seed)
    return _silhouette_of(np.asarray(X[rows]), lab[rows])


# --------------------------------------------------------------------------- cached, per dataset


def trust_for(
    store: Store, ds_id: str, layer: str, method: str, params=None, *, k: int = 10
) -> Entry:
    """Trustworthiness, mean k-NN recall and per-point recall of one cached projection.

    Info values are None where undefined (e.g. a layer whose items are all identical)."""
    from latentmap.pipeline.neighbors import knn_graph
    from latentmap.pipeline.reduce import projection

    proj = projection(store, ds_id, layer, method, params)
    key = {
        "kind": "trust",
        "version": DIAG_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "method": method,
        "params": proj.info.get("params", {}),
        "k": k,
    }

    def compute():
        coords = proj["coords"]
        X = store.vectors(ds_id, layer)
        valid = store.valid_mask(ds_id, layer) & np.isfinite(coords).all(1)
        graph = knn_graph(store, ds_id, layer, k=k)
        recall = knn_recall(graph["idx"], coords, valid)
        info = {
            "trustworthiness": _nan_to_none(trustworthiness(X, coords, k=k)),
            "knn_recall": _nan_to_none(np.nanmean(recall)) if np.isfinite(recall).any() else None,
            "k": k,
        }
        return {"recall": recall}, info

    return store.get_or_compute(key, compute)


def _is_constant(X: np.ndarray, rows: np.ndarray) -> bool:
    """True when every row in ``rows`` is the same vector (read in chunks)."""
    if len(rows) == 0:
        return False
    first = np.asarray(X[rows[:1]], dtype=np.float64)[0]
    for start in range(0, len(rows), _CHUNK):
        block = np.asarray(X[rows[start : start + _CHUNK]], dtype=np.float64)
        if not (block == first[None, :]).all():
            return False
    return True


def layer_summary(
    store: Store,
    ds_id: str,
    layer: str,
    label_col: str = "label",
    pred_col: str | None = "pred",
) -> dict[str, Any]:
    """One row of a per-layer comparison table (cached): how well the layer separates the
    classes and how its class distances relate to the classifier's confusions.

    Keys: ``layer``, ``dim``, ``n_valid``, ``silhouette`` (cosine, seeded sample of 5,000),
    ``n_classes``, ``spearman_cosine`` / ``spearman_euclidean`` (rho of confusion rate vs
    centroid distance), ``accuracy`` (None without a predictions column), ``constant``
    (every valid item has the same vector) and ``notes``. A missing predictions column is
    noted, never raised; a missing label column raises DiagnosticsError.
    """
    meta = metadata_with_groups(store, ds_id)
    lab = _true_column(meta, label_col)
    X = store.vectors(ds_id, layer)
    key = {
        "kind": "layer_summary",
        "version": DIAG_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "label_col": label_col,
        "pred_col": pred_col,
        **grouped_key(store, ds_id, label_col, pred_col),
    }

    def compute():
        valid = store.valid_mask(ds_id, layer)
        rows = np.flatnonzero(valid)
        notes: list[str] = []
        constant = _is_constant(X, rows)
        classes = sorted_classes(lab[rows])
        out: dict[str, Any] = {
            "layer": layer,
            "dim": int(X.shape[1]),
            "n_valid": len(rows),
            "silhouette": None,
            "n_classes": len(classes),
            "spearman_cosine": None,
            "spearman_euclidean": None,
            "accuracy": None,
            "constant": constant,
        }
        if len(rows) == 0:
            notes.append(f"no item of layer {layer} has finite latents")
        elif constant:
            notes.append(
                f"layer {layer} outputs the same vector for every item: nothing to separate"
            )
        else:
            srows = _silhouette_rows(lab, valid, 5000, 0)
            out["silhouette"] = _nan_to_none(
                _silhouette_of(np.asarray(X[srows], dtype=np.float64), lab[srows])
            )
            if out["silhouette"] is None:
                notes.append(f"silhouette needs at least 2 classes in '{label_col}'")
        if pred_col is None or pred_col not in meta.columns:
            name = pred_col or "pred"
            notes.append(
                f"no predictions column '{name}': {_PRED_HINT} or add a '{name}' "
                "column to the labels table"
            )
        elif classes:
            try:
                cd = confusion_distance_for(store, ds_id, layer, label_col, pred_col)
            except DiagnosticsError as e:
                notes.append(str(e))
            else:
                out["accuracy"] = cd.info.get("accuracy")
                sc, se = cd.info.get("spearman_cosine"), cd.info.get("spearman_euclidean")
                out["spearman_cosine"] = sc[0] if sc else None
                out["spearman_euclidean"] = se[0] if se else None
        out["notes"] = notes
        return {}, out

    return dict(store.get_or_compute(key, compute).info)
