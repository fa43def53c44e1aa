"""2-D projections of latent vectors: PCA, t-SNE (openTSNE) and UMAP (umap-learn).

``reduce`` works on an in-memory (N, D) array of valid rows; ``projection`` is the cached,
store-backed version the app uses: it reads a layer, leaves out rows with NaN/Inf latents
(their coordinates are NaN) and stores the result keyed by every parameter and the seed.

Results are deterministic for a fixed seed. Small inputs are handled rather than refused:
parameters are clamped to what N allows (with a notice), and inputs t-SNE/UMAP cannot embed
(too few points, all points identical) fall back to PCA with a notice saying so.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from latentmap.pipeline import localworker
from latentmap.pipeline.store import Entry, Store

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

METHODS = ("pca", "tsne", "umap")
METRICS = ("cosine", "euclidean")
PROJECTION_VERSION = 1
# Fewer points than this cannot be embedded by t-SNE / UMAP: PCA is used instead.
MIN_POINTS = {"tsne": 5, "umap": 4}
# FFT-accelerated gradients have a fixed per-iteration grid cost (~15 ms on 2 cores) that
# makes them slower than Barnes-Hut below ~10k points (50 points: 13 s vs 0.2 s measured).
FFT_MIN_POINTS = 10_000
# UMAP projections (cosine) reuse a cached kNN graph of the layer: the exact one (shared with
# other views) up to this many points; above it the exact graph costs minutes on a laptop
# (100k x 512: ~2 min on 2 cores) and an NN-descent graph (pynndescent, umap-learn's own
# search, with its settings) is cached instead, so a second UMAP of the layer (other
# min_dist, seed or start layout) skips the search. Depends only on N: cache keys stay exact.
EXACT_KNN_MAX = 50_000
APPROX_KNN_VERSION = 1
_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


class ReduceError(ValueError):
    """Bad reduction request (unknown method, invalid parameter...); message is user-facing."""


# --------------------------------------------------------------------------- parameters


def default_params(method: str) -> dict[str, Any]:
    method = _check_method(method)
    if method == "tsne":
        return {"perplexity": 30.0}
    if method == "umap":
        return {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine"}
    return {}


def _check_method(method: Any) -> str:
    m = method.strip().lower() if isinstance(method, str) else method
    if m not in METHODS:
        raise ReduceError(
            f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}"
        )
    return m


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ReduceError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ReduceError(f"{name} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise ReduceError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ReduceError(f"{name} must be a finite number, got {value!r}")
    return value


def _fmt(x: float) -> str:
    return f"{x:g}"


def normalize_params(
    method: str, params: dict[str, Any] | None, n: int
) -> tuple[dict[str, Any], list[str]]:
    """Validate ``params`` for ``method`` on ``n`` points, fill defaults, clamp for small n.

    Values may be strings (from URLs). Returns (params used, notices about any clamping).
    Raises ReduceError naming the offending value.
    """
    method = _check_method(method)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ReduceError(f"parameters must be a mapping, got {type(params).__name__}")
    allowed = default_params(method)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise ReduceError(
            f"unknown parameter {', '.join(map(repr, unknown))} for {_LABELS[method]} "
            f"(it takes: {known})"
        )
    used = {**allowed, **params}
    notices: list[str] = []
    n = int(n)

    if method == "tsne":
        p = _number("perplexity", used["perplexity"])
        if p <= 0:
            raise ReduceError(f"perplexity must be > 0, got {_fmt(p)}")
        # openTSNE needs perplexity < (n - 1) / 3 (3 * perplexity neighbours per point)
        if n >= MIN_POINTS["tsne"] and p >= (n - 1) / 3:
            new = float(max(1, math.ceil((n - 1) / 3) - 1))
            notices.append(f"perplexity {_fmt(p)} reduced to {_fmt(new)} for {n} points")
            p = new
        used["perplexity"] = p

    elif method == "umap":
        nn = _number("n_neighbors", used["n_neighbors"])
        if nn != int(nn):
            raise ReduceError(f"n_neighbors must be a whole number, got {_fmt(nn)}")
        nn = int(nn)
        if nn < 2:
            raise ReduceError(f"n_neighbors must be at least 2, got {nn}")
        if n >= 3 and nn > n - 1:
            notices.append(f"n_neighbors {nn} reduced to {n - 1} for {n} points")
            nn = n - 1
        used["n_neighbors"] = nn
        md = _number("min_dist", used["min_dist"])
        if not 0.0 <= md <= 1.0:
            raise ReduceError(f"min_dist must be between 0 and 1, got {_fmt(md)}")
        used["min_dist"] = md
        metric = used["metric"]
        metric = metric.strip().lower() if isinstance(metric, str) else metric
        if metric not in METRICS:
            raise ReduceError(f"metric must be one of {', '.join(METRICS)}, got {used['metric']!r}")
        used["metric"] = metric

    return used, notices


# --------------------------------------------------------------------------- reductions


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


# Above this many rows per dimension PCA goes through the (D, D) covariance, accumulated over
# row chunks (one matmul per chunk, no centred copy of X): exact, and at 1M x 512 a few
# seconds on 2 cores where a randomised SVD of the whole array took ~30 s.
COV_ROWS_PER_DIM = 10
COV_MAX_DIM = 4096
_PCA_CHUNK = 1 << 16


class Moments:
    """Running first and second moments of (N, D) rows, for an exact PCA without keeping
    the rows: ``add`` chunks as they come (the encode job adds each batch, so the covariance
    costs nothing after the last one), then ``basis``. Rows with NaN/Inf are skipped, as the
    maps leave them out. Sums are taken about a shift (the first chunk's mean) in float32
    matmuls accumulated in float64: no cancellation when the mean is large."""

    def __init__(self, dim: int):
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s1 = np.zeros(dim, np.float64)
        self.s2 = np.zeros((dim, dim), np.float64)

    def add(self, X: np.ndarray) -> None:
        X = np.asarray(X, dtype=np.float32)
        X = X[np.isfinite(X).all(axis=1)]
        if not len(X):
            return
        if self.shift is None:
            self.shift = X.mean(axis=0, dtype=np.float64)
        C = X - self.shift.astype(np.float32)
        self.s1 += C.sum(axis=0, dtype=np.float64)
        self.s2 += C.T @ C
        self.n += len(X)

    def basis(self, n_comp: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, components (k, D)) with scikit-learn's signs, or None without variance."""
        if self.n < 2 or self.shift is None:
            return None
        m = self.s1 / self.n
        cov = (self.s2 - self.n * np.outer(m, m)) / (self.n - 1)
        if not np.isfinite(cov).all() or np.abs(np.diag(cov)).max(initial=0.0) == 0.0:
            return None  # all rows identical (or overflowing): nothing to show
        vals, vecs = np.linalg.eigh(cov)
        comps = vecs[:, ::-1][:, : min(n_comp, len(m))].T.copy()  # largest variance first
        return self.shift + m, _sklearn_signs(comps)


def _sklearn_signs(comps: np.ndarray) -> np.ndarray:
    """Flip each component so that its largest-magnitude entry is positive (sklearn's rule)."""
    big = np.argmax(np.abs(comps), axis=1)
    return comps * np.sign(comps[np.arange(len(comps)), big])[:, None]


def uses_moments(n: int, d: int) -> bool:
    """True when ``pca_basis`` takes the covariance route (so ``Moments`` give the same map)."""
    return n >= COV_ROWS_PER_DIM * d and d <= COV_MAX_DIM


def pca_basis(X: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean (D,), components (k, D), k = min(2, D, N)) of the PCA the maps show, or None when
    all rows are identical (nothing to show: the map is all zeros).

    Signs follow scikit-learn (the largest-magnitude entry of each component is positive), so
    a refit on the same rows gives the same map. Many rows per dimension: exact, through the
    chunked covariance; otherwise scikit-learn's SVD (randomised above 50 dimensions and 500
    rows, as before)."""
    n, d = X.shape
    n_comp = min(2, d, n)
    if n == 0:
        return None
    if uses_moments(n, d):
        m = Moments(d)
        for s in range(0, n, _PCA_CHUNK):
            m.add(X[s : s + _PCA_CHUNK])
        return m.basis(n_comp)
    if np.ptp(X, axis=0).max(initial=0.0) == 0.0:
        return None
    from sklearn.decomposition import PCA

    solver = "randomized" if d > 50 and n > 500 else "full"
    pca = PCA(n_components=n_comp, svd_solver=solver, random_state=seed).fit(X)
    return pca.mean_.astype(np.float64), _sklearn_signs(pca.components_.astype(np.float64))


def pca_transform(
    basis: tuple[np.ndarray, np.ndarray] | None, X: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """(N, 2) float32 coordinates of rows X (or of ``X[rows]``, read chunk by chunk from a
    memory map) on a ``pca_basis`` (zeros for None)."""
    n = len(X) if rows is None else len(rows)
    out = np.zeros((n, 2), dtype=np.float32)
    if basis is None:
        return out
    mean, comps = basis
    m32, c32 = mean.astype(np.float32), comps.T.astype(np.float32)
    for s in range(0, n, _PCA_CHUNK):
        part = X[s : s + _PCA_CHUNK] if rows is None else X[rows[s : s + _PCA_CHUNK]]
        out[s : s + _PCA_CHUNK, : c32.shape[1]] = (np.asarray(part, np.float32) - m32) @ c32
    return out


def _pca(X: np.ndarray, seed: int) -> np.ndarray:
    return pca_transform(pca_basis(X, seed), X)


def _is_degenerate(X: np.ndarray, metric: str) -> bool:
    """True when all rows are the same point under ``metric`` (nothing for t-SNE/UMAP to do)."""
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1)
        nz = norms > 0
        if nz.sum() == 0:
            return True
        if (~nz).any():
            return False  # zero rows are at distance 1 from everything else
        U = X / norms[:, None]
        return bool(np.ptp(U, axis=0).max() <= 1e-6)
    return bool(np.ptp(X, axis=0).max() == 0.0)


def _tsne(
    X: np.ndarray,
    params: dict,
    seed: int,
    progress: Progress | None,
    init: np.ndarray | None = None,
) -> np.ndarray:
    from latentmap.pipeline.neighbors import normalize_rows
    from openTSNE import TSNE
    from openTSNE.initialization import rescale

    n_jobs = os.cpu_count() or 1
    # Cosine geometry as Euclidean distance between unit vectors (sqrt(2 - 2 cos), what Annoy's
    # "angular" metric does anyway): same neighbours, and zero rows stay finite (openTSNE's
    # own cosine path divides by the norm and turns them into NaN).
    U = normalize_rows(X)
    tsne = TSNE(
        n_components=2,
        perplexity=params["perplexity"],
        initialization="pca",
        negative_gradient_method="fft" if len(X) >= FFT_MIN_POINTS else "bh",
        metric="euclidean",
        n_jobs=n_jobs,
        random_state=seed,
    )
    _report(progress, 0.02, f"t-SNE: finding neighbours of {len(X):,} points")
    if init is None:
        emb = tsne.prepare_initial(U)
    else:
        # openTSNE wants a given start layout small (std 1e-4 along the first axis), as its own
        # PCA initialisation is; the layout's shape is kept, only its scale changes.
        start = rescale(np.asarray(init, dtype=np.float64), target_std=1e-4)
        emb = tsne.prepare_initial(U, initialization=start)
    phases = [
        (tsne.early_exaggeration_iter, tsne.early_exaggeration, tsne.initial_momentum, "early"),
        (tsne.n_iter, tsne.exaggeration, tsne.final_momentum, "main"),
    ]
    total = sum(p[0] for p in phases)
    done = 0
    for n_iter, exaggeration, momentum, label in phases:
        callback = None
        if progress is not None:

            def callback(it: int, error: float, _emb: Any, done: int = done, label: str = label):
                frac = 0.1 + 0.9 * (done + it) / total
                _report(
                    progress,
                    frac,
                    f"t-SNE {label} phase: iteration {done + it}/{total}, KL {error:.3f}",
                )
                return False

        emb = emb.optimize(
            n_iter=n_iter,
            exaggeration=exaggeration,
            momentum=momentum,
            inplace=True,
            callbacks=callback,
            callbacks_every_iters=25,
            n_jobs=n_jobs,
        )
        done += n_iter
    return np.asarray(emb, dtype=np.float32)


def _umap_knn(knn: tuple[np.ndarray, np.ndarray], n: int, n_neighbors: int):
    """cosine_knn output (self excluded) -> umap's precomputed_knn (self as first column)."""
    idx, sims = (np.asarray(a) for a in knn)
    if idx.shape != sims.shape or idx.ndim != 2 or len(idx) != n:
        raise ReduceError(f"knn must be two ({n}, k) arrays, got {idx.shape} and {sims.shape}")
    if idx.shape[1] < n_neighbors - 1:
        return None
    if (idx[:, : n_neighbors - 1] < 0).any():
        raise ReduceError("knn has missing neighbours (-1): pass the graph of valid rows only")
    self_col = np.arange(n, dtype=np.int64)[:, None]
    ind = np.hstack([self_col, idx[:, : n_neighbors - 1].astype(np.int64)])
    dist = np.hstack(
        [np.zeros((n, 1), np.float32), np.clip(1.0 - sims[:, : n_neighbors - 1], 0.0, 2.0)]
    ).astype(np.float32)
    return ind.astype(np.int32), dist


class _EpochFile:
    """A write-only file for umap-learn's epoch bar (``bar_format`` "{n}/{total}"): each
    refresh is passed on as progress, "UMAP: epoch n/total", between 15 % and 99 %."""

    encoding = "utf-8"

    def __init__(self, progress: Progress):
        self.progress = progress

    def write(self, text: str) -> int:
        import re

        m = re.search(r"(\d+)/(\d+)", text)
        if m and int(m.group(2)) > 0:
            done, total = int(m.group(1)), int(m.group(2))
            self.progress(0.15 + 0.84 * done / total, f"UMAP: epoch {done}/{total}")
        return len(text)

    def flush(self) -> None:
        pass


def _umap(
    X: np.ndarray,
    params: dict,
    seed: int,
    knn,
    progress: Progress | None,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    import warnings

    n = len(X)
    kw: dict[str, Any] = {}
    reused = False
    if knn is not None and params["metric"] == "cosine":
        pre = _umap_knn(knn, n, params["n_neighbors"])
        if pre is not None:
            kw["precomputed_knn"] = (pre[0], pre[1])
            reused = True
        else:
            log.info("knn graph has too few neighbours for n_neighbors; UMAP computes its own")
    if init is not None:
        # umap-learn scales its own spectral / PCA start so that the largest coordinate is 10
        # (umap_.noisy_scale_coords); a given layout is centred and scaled the same way, one
        # factor for both axes so that its shape is kept.
        start = np.asarray(init, dtype=np.float64)
        start = start - start.mean(axis=0)
        start = (start * (10.0 / np.abs(start).max())).astype(np.float32)
        kw["init"] = start
    import sys

    _report(
        progress,
        0.05,
        "UMAP: loading"
        if "umap.umap_" in sys.modules
        else "UMAP: loading (its first use in a process compiles with numba: 1-2 min)",
    )
    import umap

    model = umap.UMAP(
        n_neighbors=params["n_neighbors"],
        min_dist=params["min_dist"],
        metric=params["metric"],
        n_components=2,
        random_state=seed,
        **kw,
    )
    if progress is not None:
        # umap-learn reports epochs only through tqdm: its bar, written to _EpochFile, becomes
        # our progress (and a report that raises, e.g. a cancelled caller, stops the layout)
        model.tqdm_kwds = {
            "disable": False,
            "file": _EpochFile(progress),
            "bar_format": "{n}/{total}",
            "mininterval": 1.0,
            "ascii": True,
        }
    _report(progress, 0.1, f"UMAP: embedding {n:,} points")
    with warnings.catch_warnings():
        # expected and harmless: random_state disables parallelism; no search index kept
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        coords = model.fit_transform(X)
    return np.asarray(coords, dtype=np.float32), reused


def reduce(
    X: np.ndarray,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Project the (N, D) rows of X (all finite) to 2-D.

    Returns (coords (N, 2) float32, info {"params", "notices", "seconds", "ran"}; ``ran`` is
    the method actually run, "pca" when t-SNE/UMAP fell back). ``knn`` is an optional
    (idx, sims) pair from ``neighbors.cosine_knn(X, k)`` that UMAP with the cosine metric
    reuses instead of searching neighbours again. ``init`` is an optional (N, 2) start layout
    for t-SNE / UMAP (e.g. the map of another layer); it is rescaled as each library expects
    and ignored by PCA. A layout with no spread is not used (a notice says so).
    """
    t0 = time.perf_counter()
    method = _check_method(method)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ReduceError(f"expected an (N, D) array of vectors, got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.size and not np.isfinite(X).all():
        raise ReduceError("vectors contain NaN/Inf: pass only the valid rows")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ReduceError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    n = len(X)
    used, notices = normalize_params(method, params, n)
    _report(progress, 0.0, f"{_LABELS[method]} of {n:,} points")
    run = method
    if method != "pca" and n >= 2:
        metric = used.get("metric", "cosine")
        if n < MIN_POINTS[method]:
            notices.append(
                f"{_LABELS[method]} needs at least {MIN_POINTS[method]} points; "
                f"showing PCA of the {n}"
            )
            run = "pca"
        elif _is_degenerate(X, metric):
            notices.append(
                f"all {n} points have the same latent "
                f"{'direction' if metric == 'cosine' else 'vector'}: "
                f"{_LABELS[method]} cannot spread them, showing PCA"
            )
            run = "pca"

    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        if init.shape != (n, 2):
            raise ReduceError(
                f"init must be an ({n}, 2) array of start positions, got shape {init.shape}"
            )
        if not np.isfinite(init).all():
            raise ReduceError("init contains NaN/Inf: give every row a finite start position")
        if run == "pca" or n < 2:
            init = None  # PCA has no start layout
        elif np.ptp(init, axis=0).min() == 0.0:
            notices.append("the start layout has no spread along an axis: not used")
            init = None

    if n == 0:
        coords = np.zeros((0, 2), np.float32)
    elif n == 1:
        coords = np.zeros((1, 2), np.float32)
    elif run == "pca":
        coords = _pca(X, seed)
    elif init is None and (gpu := gpu_backend()) is not None:
        _report(progress, 0.1, f"{_LABELS[run]} on the GPU (cuML)")
        coords = _gpu_layout(gpu, X, run, used, seed)
        notices.append(f"{_LABELS[run]} ran on the GPU (RAPIDS cuML)")
    elif run == "tsne":
        coords = _tsne(X, used, seed, progress, init=init)
    else:
        coords, reused = _umap(X, used, seed, knn, progress, init=init)
        if reused:
            log.info("UMAP reused the precomputed cosine kNN graph")
    if not np.isfinite(coords).all():
        raise ReduceError(f"{_LABELS[run]} produced NaN/Inf coordinates for these vectors")
    seconds = time.perf_counter() - t0
    _report(progress, 1.0, f"{_LABELS[method]} done in {seconds:.1f} s")
    log.info("%s of %d x %d: %.2f s", method, n, X.shape[1] if X.ndim == 2 else 0, seconds)
    info = {"params": used, "notices": notices, "seconds": seconds, "ran": run if n >= 2 else "pca"}
    return coords, info


# --------------------------------------------------------------------------- cached, per layer


def projection_key(
    ds_id: str,
    layer: str,
    method: str,
    params: dict[str, Any] | None,
    seed: int,
    *,
    init_from: str | None = None,
) -> dict[str, Any]:
    """Cache key of a projection (pass normalised params so equal requests share a key).

    ``init_from`` (t-SNE / UMAP started from another layer's map) adds an ``init`` entry;
    without it the key is exactly what it always was, so existing caches stay valid.
    """
    key = {
        "kind": "projection",
        "version": PROJECTION_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "method": _check_method(method),
        "params": dict(params or {}),
        "seed": int(seed),
    }
    if init_from is not None and key["method"] != "pca" and init_from != layer:
        key["init"] = init_from
    if key["method"] != "pca" and gpu_backend() is not None:
        key["backend"] = "cuml"  # GPU layouts differ from the CPU libraries': kept apart
    return key


def gpu_backend():
    """The ``cuml`` module when RAPIDS cuML is installed and a CUDA GPU is present (t-SNE and
    UMAP then run on the GPU), else None. ``LATENTMAP_CUML=0`` turns it off."""
    import os

    if os.environ.get("LATENTMAP_CUML", "1").lower() in ("0", "false", "no", "off"):
        return None
    try:
        import cuml  # optional: pip install cuml-cu12 (RAPIDS), not in the default install
        import torch
    except ImportError:
        return None
    return cuml if torch.cuda.is_available() else None


def _gpu_layout(cuml, X: np.ndarray, method: str, params: dict, seed: int) -> np.ndarray:
    """t-SNE / UMAP on the GPU with cuML (same parameters as the CPU path)."""
    if method == "tsne":
        model = cuml.manifold.TSNE(
            n_components=2, perplexity=params["perplexity"], random_state=seed, method="fft"
        )
    else:
        model = cuml.manifold.UMAP(
            n_components=2,
            n_neighbors=params["n_neighbors"],
            min_dist=params["min_dist"],
            metric=params["metric"],
            random_state=seed,
        )
    return np.asarray(model.fit_transform(X), dtype=np.float32)


def _valid_count(store: Store, ds_id: str, layer: str) -> tuple[np.ndarray, int]:
    store.vectors(ds_id, layer)  # raises a clear StoreError for an unknown layer
    valid = store.valid_mask(ds_id, layer)
    return valid, int(valid.sum())


def _init_layer(
    store: Store, ds_id: str, layer: str, method: str, init_from: str | None
) -> str | None:
    """The layer whose map starts this one, or None (not asked, PCA, or the layer itself)."""
    if init_from is None:
        return None
    if not isinstance(init_from, str):
        raise ReduceError(f"init_from must be a layer name, got {init_from!r}")
    layers = store.layers(ds_id)
    if init_from not in layers:
        raise ReduceError(
            f"cannot start from layer {init_from!r}: dataset {ds_id} has no such layer "
            f"(it has: {', '.join(layers)})"
        )
    if method == "pca" or init_from == layer:
        return None
    return init_from


def _scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None

    def report(f: float, msg: str) -> None:
        _report(progress, lo + (hi - lo) * f, msg)

    return report


def start_layout(ref_coords: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """(len(rows), 2) start positions from a reference map: each row at its reference
    position, rows without one (NaN there) at the mean of the others. None if none has one."""
    start = np.asarray(ref_coords, dtype=np.float64)[rows]
    ok = np.isfinite(start).all(axis=1)
    if not ok.any():
        return None
    start[~ok] = start[ok].mean(axis=0)
    return start


def approx_knn_key(ds_id: str, layer: str, k: int) -> dict[str, Any]:
    return {
        "kind": "knn_approx",
        "version": APPROX_KNN_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "k": int(k),
        "method": "nndescent-cosine",
    }


def _nndescent(X: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(idx, cosine distances), each (N, k), self excluded: pynndescent with the settings
    umap-learn uses for its own search."""
    from pynndescent import NNDescent

    n = len(X)
    nnd = NNDescent(
        X,
        n_neighbors=k + 1,
        metric="cosine",
        n_trees=min(64, 5 + int(round(n**0.5 / 20.0))),
        n_iters=max(5, int(round(np.log2(n)))),
        max_candidates=60,
        low_memory=True,
        random_state=seed,
        n_jobs=-1,
        compressed=True,
    )
    idx, dist = nnd.neighbor_graph
    self_hit = idx == np.arange(n)[:, None]
    # drop each row's own entry (the last column where it did not find itself)
    drop = np.where(self_hit.any(axis=1), self_hit.argmax(axis=1), k)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def layout_graph(
    store: Store, ds_id: str, layer: str, k: int, *, progress: Progress | None = None
) -> Entry:
    """The cosine kNN graph UMAP reuses, cached per dataset x layer x k, in the format of
    ``neighbors.knn_graph`` (``idx`` full-row indexing, -1 / NaN for invalid rows; ``sims``):
    exact up to ``EXACT_KNN_MAX`` valid rows, NN-descent above."""
    from latentmap.pipeline.neighbors import knn_graph

    valid = store.valid_mask(ds_id, layer)
    n_valid = int(valid.sum())
    if n_valid <= EXACT_KNN_MAX:
        return knn_graph(store, ds_id, layer, k=k, progress=progress)
    k = int(min(k, n_valid - 1))

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        t0 = time.perf_counter()
        rows = np.flatnonzero(valid)
        _report(progress, 0.0, f"neighbour graph of {n_valid:,} points (NN-descent)")
        X = np.asarray(store.vectors(ds_id, layer)[rows], dtype=np.float32)
        cidx, cdist = _nndescent(X, k)
        idx = np.full((len(valid), k), -1, dtype=np.int64)
        sims = np.full((len(valid), k), np.nan, dtype=np.float32)
        ok = cidx >= 0
        idx[rows] = np.where(ok, rows[np.clip(cidx, 0, None)], -1)
        sims[rows] = np.where(ok, 1.0 - cdist, np.nan)
        seconds = time.perf_counter() - t0
        _report(progress, 1.0, f"neighbour graph done in {seconds:.0f} s")
        log.info("NN-descent graph %s/%s k=%d: %.1f s", ds_id, layer, k, seconds)
        return {"idx": idx, "sims": sims}, {"k": k, "n_valid": n_valid, "seconds": seconds}

    return store.get_or_compute(approx_knn_key(ds_id, layer, k), compute)


def cached_projection(
    store: Store,
    ds_id: str,
    layer: str,
    method: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    init_from: str | None = None,
) -> Entry | None:
    """The stored projection for these inputs, or None. Never computes."""
    _, n_valid = _valid_count(store, ds_id, layer)
    method = _check_method(method)
    used, _ = normalize_params(method, params, n_valid)
    init_from = _init_layer(store, ds_id, layer, method, init_from)
    return store.lookup(projection_key(ds_id, layer, method, used, seed, init_from=init_from))


def projection(
    store: Store,
    ds_id: str,
    layer: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    init_from: str | None = None,
    pca_moments: Moments | None = None,
) -> Entry:
    """Read-through cached 2-D projection of a layer.

    Arrays: ``coords`` (N, 2) float32 in dataset row order, NaN for rows with NaN/Inf
    latents. Info: ``params`` used, ``notices``, ``seconds``, ``method``, ``ran`` (the method
    actually run: "pca" when t-SNE/UMAP fell back; absent in entries made before it existed)
    and ``init_from``. UMAP with the cosine metric builds (or reuses) ``layout_graph``.

    ``init_from`` (t-SNE / UMAP only; ignored for PCA and when it is ``layer`` itself) starts
    the layout from the same method's map of another layer (same params and seed, computed
    first if missing), so that maps of successive layers are comparable: rows valid in both
    start at the reference position, the others at the mean of the reference.

    ``pca_moments`` (PCA only): the layer's ``Moments`` gathered while it was encoded; the map
    is then one projection pass over the stored rows (the same map ``pca_basis`` gives).
    """
    method = _check_method(method)
    valid, n_valid = _valid_count(store, ds_id, layer)
    used, clamp_notices = normalize_params(method, params, n_valid)
    init_from = _init_layer(store, ds_id, layer, method, init_from)
    key = projection_key(ds_id, layer, method, used, seed, init_from=init_from)
    if method == "umap" and store.compute and os.environ.get(localworker.ENV):
        # a job forked by the embedded server: a warm worker computes it (no numba compile)
        hit = store.lookup(key)
        if hit is not None:
            return hit
        request = {
            "ds_id": ds_id,
            "layer": layer,
            "method": method,
            "params": params,
            "seed": seed,
            "init_from": init_from,
        }
        if localworker.delegate(str(store.root), request, progress):
            hit = store.lookup(key)
            if hit is not None:
                return hit

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        t0 = time.perf_counter()
        n_all = len(valid)
        if n_valid == 0:
            raise ReduceError(
                f"no item of layer {layer} has finite latents ({n_all} items, all NaN/Inf)"
            )
        rows = np.flatnonzero(valid)
        init = None
        init_notices: list[str] = []
        main = progress
        if init_from is not None:
            ref = projection(
                store,
                ds_id,
                init_from,
                method,
                params,
                seed=seed,
                progress=_scaled(progress, 0.0, 0.4),
            )
            main = _scaled(progress, 0.4, 1.0)
            init = start_layout(ref["coords"], rows)
            label = f"{_LABELS[method]} map of layer {init_from}"
            if init is None:
                init_notices.append(f"the {label} has no finite point: not used as start")
            else:
                init_notices.append(f"started from the {label}")
                n_new = int((~np.isfinite(ref["coords"][rows]).all(axis=1)).sum())
                if n_new:
                    init_notices.append(
                        f"{n_new} item{'s' if n_new != 1 else ''} not on that map started "
                        "at its centre"
                    )
        Xs = store.vectors(ds_id, layer)
        if (
            method == "pca"
            and pca_moments is not None
            and pca_moments.n == n_valid
            and uses_moments(n_valid, int(Xs.shape[1]))
        ):
            _report(main, 0.5, "PCA from the moments gathered during the encode")
            coords_valid = pca_transform(
                pca_moments.basis(), Xs, None if n_valid == n_all else rows
            )
            return _finish(coords_valid, {"params": used, "notices": [], "ran": "pca"}, t0)
        X = np.asarray(Xs[rows], dtype=np.float32)
        knn = None
        sub = main
        if (
            method == "umap"
            and used["metric"] == "cosine"
            and used["n_neighbors"] < n_valid
            and gpu_backend() is None
        ):
            g = layout_graph(
                store, ds_id, layer, used["n_neighbors"], progress=_scaled(main, 0.0, 0.3)
            )
            pos = np.full(n_all, -1, dtype=np.int64)
            pos[rows] = np.arange(n_valid)
            gi = np.asarray(g["idx"][rows])
            knn = (np.where(gi >= 0, pos[gi], -1), g["sims"][rows])
            if (knn[0][:, : used["n_neighbors"] - 1] < 0).any():
                log.info("kNN graph of %s/%s has holes: UMAP searches its own", ds_id, layer)
                knn = None
            sub = _scaled(main, 0.3, 1.0)

        coords_valid, info = reduce(X, method, used, seed=seed, knn=knn, progress=sub, init=init)
        return _finish(coords_valid, info, t0, init_notices)

    def _finish(coords_valid, info, t0, init_notices=()) -> tuple[dict[str, np.ndarray], dict]:
        rows = np.flatnonzero(valid)
        n_all = len(valid)
        coords = np.full((n_all, 2), np.nan, dtype=np.float32)
        coords[rows] = coords_valid
        notices = clamp_notices + list(init_notices) + list(info["notices"])
        n_bad = n_all - n_valid
        if n_bad:
            notices.append(
                f"{n_bad} item{'s' if n_bad != 1 else ''} with NaN/Inf latents "
                f"{'were' if n_bad != 1 else 'was'} left out"
            )
        out_info = {
            "params": info["params"],
            "notices": notices,
            "seconds": time.perf_counter() - t0,
            "method": method,
            "ran": info["ran"],
            "init_from": init_from,
        }
        return {"coords": coords}, out_info

    def waiting() -> None:
        _report(
            progress,
            0.0,
            f"{_LABELS[method]} of {layer} is being computed by another job (e.g. the "
            "background job after the encode): waiting for it",
        )

    return store.get_or_compute(key, compute, on_wait=waiting)
