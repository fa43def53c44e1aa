"""Classifier diagnostics in the latent space: centroids, confusion, confusion vs. distance,
and how far a 2-D map can be trusted (trustworthiness, k-NN recall, silhouette).

All functions take numpy arrays; the ``*_for`` helpers read a dataset from the store and cache
their result by key like every other derived entry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from latentmap.pipeline.store import Entry, Store

DIAG_VERSION = 1


class DiagnosticsError(ValueError):
    """A diagnostic that cannot be computed; the message says what is missing."""


# --------------------------------------------------------------------------- helpers


def _labels(values) -> np.ndarray:
    """Labels as strings (so 3 and "3" are one class); missing values become ''."""
    arr = np.asarray(values, dtype=object)
    out = np.empty(len(arr), dtype=object)
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[i] = ""
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out.astype(str)


def sorted_classes(labels: np.ndarray) -> list[str]:
    """Classes in natural order: numbers numerically, then strings."""
    uniq = [c for c in np.unique(labels) if c != ""]

    def key(c: str):
        try:
            return (0, float(c), c)
        except ValueError:
            return (1, 0.0, c)

    return sorted(uniq, key=key)


# --------------------------------------------------------------------------- centroids


def class_centroids(
    X: np.ndarray, labels, valid: np.ndarray | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes, centroids (k, D) float32, counts (k,)) over valid rows."""
    X = np.asarray(X, dtype=np.float32)
    lab = _labels(labels)
    if len(lab) != len(X):
        raise DiagnosticsError(f"{len(lab)} labels for {len(X)} vectors")
    keep = np.ones(len(X), bool) if valid is None else np.asarray(valid, bool)
    keep &= lab != ""
    classes = sorted_classes(lab[keep])
    if not classes:
        raise DiagnosticsError("no labelled items with finite latents")
    cents = np.zeros((len(classes), X.shape[1]), np.float32)
    counts = np.zeros(len(classes), np.int64)
    for i, c in enumerate(classes):
        rows = keep & (lab == c)
        counts[i] = int(rows.sum())
        cents[i] = X[rows].mean(axis=0)
    return classes, cents, counts


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


# --------------------------------------------------------------------------- confusion


def confusion(true, pred, classes: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(classes, counts (k, k)) with rows = true class, columns = predicted class."""
    t, p = _labels(true), _labels(pred)
    if len(t) != len(p):
        raise DiagnosticsError(f"{len(t)} true labels but {len(p)} predictions")
    keep = (t != "") & (p != "")
    if classes is None:
        classes = sorted_classes(np.concatenate([t[keep], p[keep]]))
    index = {c: i for i, c in enumerate(classes)}
    M = np.zeros((len(classes), len(classes)), np.int64)
    for a, b in zip(t[keep], p[keep], strict=True):
        if a in index and b in index:
            M[index[a], index[b]] += 1
    return classes, M


def normalize_rows(M: np.ndarray) -> np.ndarray:
    s = M.sum(axis=1, keepdims=True).astype(np.float64)
    s[s == 0] = 1.0
    return M / s


def confusion_vs_distance(
    X: np.ndarray, true, pred, valid: np.ndarray | None = None
) -> dict[str, Any]:
    """For every ordered class pair A→B (A ≠ B): confusion rate P(pred B | true A) and the
    cosine and euclidean distance between the latent centroids of A and B, with Spearman's
    rank correlation of rate vs distance (a negative rho: closer classes are confused more).
    """
    from scipy.stats import spearmanr

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
        "rate": rate[a_idx, b_idx],
        "count": M[a_idx, b_idx],
        "cosine": dc[a_idx, b_idx],
        "euclidean": de[a_idx, b_idx],
    }
    out: dict[str, Any] = {"classes": classes, "counts": counts, "matrix": M, "pairs": pairs}
    for metric in ("cosine", "euclidean"):
        x, y = pairs[metric], pairs["rate"]
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho, p = spearmanr(x, y)
            out[f"spearman_{metric}"] = (float(rho), float(p))
        else:
            out[f"spearman_{metric}"] = (float("nan"), float("nan"))
    return out


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
    for pos, r in enumerate(rows):
        lat = latent_idx[r, :kk]
        lat = lat[lat >= 0]
        if len(lat):
            out[r] = len(np.intersect1d(lat, map_nb[pos], assume_unique=False)) / len(lat)
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
    return float(tw(np.asarray(X[rows]), coords[rows], n_neighbors=k, metric="cosine"))


def silhouette(X: np.ndarray, labels, *, sample: int = 5000, seed: int = 0) -> float:
    """Cosine silhouette of the labels in the latent space (seeded sample for large N)."""
    from sklearn.metrics import silhouette_score

    lab = _labels(labels)
    keep = (lab != "") & np.isfinite(np.asarray(X)).all(1)
    rows = np.flatnonzero(keep)
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    n_classes = len(np.unique(lab[rows]))
    if n_classes < 2 or n_classes >= len(rows):
        return float("nan")
    return float(silhouette_score(np.asarray(X[rows]), lab[rows], metric="cosine"))


# --------------------------------------------------------------------------- cached, per dataset


def trust_for(
    store: Store, ds_id: str, layer: str, method: str, params=None, *, k: int = 10
) -> Entry:
    """Trustworthiness, mean k-NN recall and per-point recall of one cached projection."""
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
        X = np.asarray(store.vectors(ds_id, layer))
        valid = store.valid_mask(ds_id, layer) & np.isfinite(coords).all(1)
        graph = knn_graph(store, ds_id, layer, k=k)
        recall = knn_recall(graph["idx"], coords, valid)
        info = {
            "trustworthiness": trustworthiness(X, coords, k=k),
            "knn_recall": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
            "k": k,
        }
        return {"recall": recall}, info

    return store.get_or_compute(key, compute)
