"""Pay UMAP's numba compilation once per worker at start-up, never on a user's first click.

A fresh process spends 60-90 s (2 cores) compiling umap-learn / pynndescent: importing umap,
the first fit, the first fit large enough to use nearest-neighbour descent, the first cosine
fit. ``warm_umap`` runs tiny fits that take each of those paths; numba keeps what it compiled
in its on-disk cache (``NUMBA_CACHE_DIR`` or the package folders), so later processes load it
instead of compiling again. ``start_warmup`` runs it in a *spawned* child process (never
forked, never threads in the serving process: the web process forks background jobs, and a
fork after numba/OpenMP threads started can hang the child). No Dash here.
"""

from __future__ import annotations

import logging
import time
import warnings

log = logging.getLogger(__name__)

# (rows, metric): small euclidean and cosine fits, and one above umap's 4,096-row threshold
# for nearest-neighbour descent
WARM_FITS = ((300, "euclidean"), (300, "cosine"), (4200, "cosine"), (4200, "euclidean"))


def warm_umap() -> dict[str, float]:
    """Run the warm-up fits; returns seconds per step (import and each fit)."""
    import numpy as np

    out: dict[str, float] = {}
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap

        out["import"] = time.perf_counter() - t
        rng = np.random.default_rng(0)
        for n, metric in WARM_FITS:
            X = rng.normal(size=(n, 8)).astype(np.float32)
            t = time.perf_counter()
            umap.UMAP(n_neighbors=10, metric=metric, random_state=0, n_epochs=15).fit_transform(X)
            out[f"fit {n} {metric}"] = time.perf_counter() - t
        # placing new points on a UMAP map (centroids, samples): umap-learn's transform body
        from latentmap.pipeline.diagnostics import umap_transform

        X = rng.normal(size=(300, 8)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        t = time.perf_counter()
        umap_transform(X, X[:, :2].copy(), X[:3], n_neighbors=10, min_dist=0.1, seed=0)
        out["transform"] = time.perf_counter() - t
    return out


def enabled() -> bool:
    """False when ``LATENTMAP_WARMUP`` is 0 / false / no / off (the test suite sets it)."""
    import os

    return os.environ.get("LATENTMAP_WARMUP", "1").lower() not in ("0", "false", "no", "off")


def start_warmup():
    """Start the warm-up in a spawned process; returns the process (already started).

    Logs the timings when it ends (the caller does not wait)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=run_and_report, name="latentmap-umap-warmup", daemon=True)
    proc.start()
    return proc


def run_and_report(where: str = "spawned child") -> None:
    """Warm up in this process and print how long it took (a failure is only logged)."""
    t = time.perf_counter()
    try:
        steps = warm_umap()
    except Exception as e:  # noqa: BLE001 - a failed warm-up only means a slower first UMAP
        logging.getLogger(__name__).warning("UMAP warm-up failed (%s): %s", where, e)
        return
    detail = ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
    print(
        f"latentmap: UMAP compiled in {time.perf_counter() - t:.0f} s ({where}: {detail})",
        flush=True,
    )
