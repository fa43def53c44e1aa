"""2-D reduction wall time: latentmap's t-SNE (openTSNE) vs scikit-learn's TSNE, and UMAP.

Data: seeded Gaussian clusters (20 centres) in D=512, float32, like pooled CNN features.

t-SNE: ``latentmap.pipeline.reduce.reduce(X, "tsne")`` (openTSNE, PCA init, cosine geometry as
Euclidean distance of unit rows, FFT gradients from 10k points, all cores) against
``sklearn.manifold.TSNE`` with the same settings where they exist (perplexity 30, PCA init,
same unit rows, 750 iterations = openTSNE's 250 early + 500 main, n_jobs=-1). Quality check:
trustworthiness (k=10) of both embeddings on a fixed 2,000-point subsample.

UMAP: the first use in a process pays for ``import umap`` plus numba JIT compilation; both are
timed separately (import, then a first 5,000-point fit that compiles the NN-descent path too), then the real fits through ``reduce``
(umap-learn's own NN-descent neighbours, cosine metric, random_state set so single-threaded).

    .venv/bin/python bench/bench_reduce.py                    # t-SNE 10k,50k; UMAP 10k,50k,100k
    .venv/bin/python bench/bench_reduce.py --sizes 10000 --umap-sizes 10000
    .venv/bin/python bench/bench_reduce.py --quick            # 2k points, smoke check
    .venv/bin/python bench/bench_reduce.py --no-sklearn       # skip the slow baseline
    .venv/bin/python bench/bench_reduce.py --no-tsne --no-umap --pca-sizes 100000,1000000
    .venv/bin/python bench/bench_reduce.py --no-tsne --no-umap --umap-graph-sizes 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def clusters(n: int, d: int = 512, k: int = 20, seed: int = 0) -> np.ndarray:
    """n points around k random centres in d dims (float32), cluster spread ~ centre spread/3."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (k, d)).astype(np.float32)
    labels = rng.integers(0, k, n)
    X = centres[labels] + rng.normal(0.0, 0.35, (n, d)).astype(np.float32)
    return np.maximum(X, 0.0, dtype=np.float32)  # ReLU-like, non-negative like pooled features


def trust(X: np.ndarray, Y: np.ndarray, m: int = 2000) -> float:
    from sklearn.manifold import trustworthiness

    idx = np.random.default_rng(1).choice(len(X), size=min(m, len(X)), replace=False)
    return float(trustworthiness(X[idx], Y[idx], n_neighbors=10, metric="cosine"))


def time_latentmap_tsne(X: np.ndarray) -> tuple[float, np.ndarray]:
    from latentmap.pipeline.reduce import reduce

    t0 = time.perf_counter()
    Y, _ = reduce(X, "tsne", {"perplexity": 30}, seed=0)
    return time.perf_counter() - t0, Y


def time_sklearn_tsne(X: np.ndarray) -> tuple[float, np.ndarray]:
    from latentmap.pipeline.neighbors import normalize_rows
    from sklearn.manifold import TSNE

    t0 = time.perf_counter()
    U = normalize_rows(X)
    Y = TSNE(
        n_components=2,
        perplexity=30.0,
        init="pca",
        learning_rate="auto",
        max_iter=750,
        n_jobs=-1,
        random_state=0,
    ).fit_transform(U)
    return time.perf_counter() - t0, Y


def bench_tsne(sizes: list[int], dim: int, sklearn: bool) -> list[dict]:
    rows = []
    print(f"\n== t-SNE, D={dim}, perplexity 30, {os.cpu_count()} cores", flush=True)
    print(
        f"{'N':>8} {'latentmap s':>12} {'sklearn s':>10} {'ratio':>7} {'trust lm':>9} {'trust sk':>9}"
    )
    for n in sizes:
        X = clusters(n, dim)
        t_lm, Y_lm = time_latentmap_tsne(X)
        row = {"n": n, "latentmap_s": t_lm, "trust_latentmap": trust(X, Y_lm)}
        if sklearn:
            t_sk, Y_sk = time_sklearn_tsne(X)
            row.update(sklearn_s=t_sk, ratio=t_sk / t_lm, trust_sklearn=trust(X, Y_sk))
        print(
            f"{n:>8} {t_lm:>12.1f} {row.get('sklearn_s', float('nan')):>10.1f} "
            f"{row.get('ratio', float('nan')):>6.1f}x {row['trust_latentmap']:>9.3f} "
            f"{row.get('trust_sklearn', float('nan')):>9.3f}",
            flush=True,
        )
        rows.append(row)
    return rows


def bench_umap(sizes: list[int], dim: int) -> list[dict]:
    print(f"\n== UMAP, D={dim}, n_neighbors 15, min_dist 0.1, cosine", flush=True)
    t0 = time.perf_counter()
    import umap  # noqa: F401  (timed: the import itself is slow)

    t_import = time.perf_counter() - t0
    from latentmap.pipeline.reduce import reduce

    # Below 4096 points umap-learn takes a brute-force path; 5,000 points go through
    # NN-descent too, so this first fit compiles everything the real fits use.
    t0 = time.perf_counter()
    reduce(clusters(5000, dim, seed=9), "umap", seed=0)
    t_jit = time.perf_counter() - t0
    print(
        f"import umap: {t_import:.1f} s; first 5k fit (incl. numba JIT): {t_jit:.1f} s", flush=True
    )
    print(f"{'N':>8} {'fit s':>8} {'trust':>7}")
    rows = [{"n": 0, "import_s": t_import, "first_fit_jit_s": t_jit}]
    for n in sizes:
        X = clusters(n, dim)
        t0 = time.perf_counter()
        Y, _ = reduce(X, "umap", seed=0)
        dt = time.perf_counter() - t0
        row = {"n": n, "umap_s": dt, "trust": trust(X, Y)}
        print(f"{n:>8} {dt:>8.1f} {row['trust']:>7.3f}", flush=True)
        rows.append(row)
    return rows


def clusters_chunked(n: int, d: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """``clusters`` built in chunks (no (n, d) float64 temporary at 1M)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (20, d)).astype(np.float32)
    X = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        X[s : s + m] = centres[rng.integers(0, 20, m)] + rng.normal(0.0, 0.35, (m, d))
    return np.maximum(X, 0.0, out=X)


def _layer_store(root, X: np.ndarray):
    """(store, dataset id) of a one-layer ("z") dataset of X under ``root``."""
    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.store import Store

    store = Store(root / "cache")
    ds = write_dataset(
        store, name="b", vectors={"z": X}, metadata=pd.DataFrame({"i": range(len(X))})
    )
    return store, ds


def bench_pca(sizes: list[int], dim: int, baseline: bool) -> list[dict]:
    """The map shown when an encode finishes. "after encode": what the encode job does after
    its last batch, ``projection(..., pca_moments=m)`` with the moments its batches gathered
    (their cost, "in batches", is spread over the encode); "from disk": the same map with no
    moments (a dataset written by other means): read the memory-mapped layer, exact chunked
    covariance PCA, write the entry. Baseline: scikit-learn's randomised PCA of the in-RAM
    array (what latentmap used before; the ratio is baseline / after-encode); the difference
    is measured against scikit-learn's exact ``covariance_eigh`` solver."""
    import tempfile
    from pathlib import Path

    from latentmap.pipeline.reduce import Moments, projection

    print(f"\n== PCA map after an encode, D={dim} (store-backed, memory-mapped layer)", flush=True)
    print(
        f"{'N':>8} {'after encode s':>14} {'(in batches)':>12} {'from disk s':>12} "
        f"{'sklearn rand. s':>16} {'ratio':>6} {'max |diff|':>11}"
    )
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            X = clusters_chunked(n, dim)
            store, ds = _layer_store(Path(tmp), X)
            # in an encode job: moments added batch by batch (256 rows), then one pass
            m = Moments(dim)
            t0 = time.perf_counter()
            for s in range(0, n, 256):
                m.add(X[s : s + 256])
            t_acc = time.perf_counter() - t0
            t0 = time.perf_counter()
            projection(store, ds, "z", "pca", pca_moments=m)
            t_after = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp2:
                store2, ds2 = _layer_store(Path(tmp2), X)
                t0 = time.perf_counter()
                coords = projection(store2, ds2, "z", "pca")["coords"]
                dt = time.perf_counter() - t0
            row = {"n": n, "after_encode_s": t_after, "moments_s": t_acc, "pca_s": dt}
            line = f"{n:>8} {t_after:>14.2f} {t_acc:>12.2f} {dt:>12.2f}"
            if baseline:
                from sklearn.decomposition import PCA

                t0 = time.perf_counter()
                PCA(2, svd_solver="randomized", random_state=0).fit_transform(X)
                bt = time.perf_counter() - t0
                # agreement with scikit-learn's exact solver (randomised SVD is approximate)
                ref = PCA(2, svd_solver="covariance_eigh").fit_transform(X)
                signs = np.sign((ref * coords).sum(0))
                diff = float(np.abs(ref * signs - coords).max() / np.abs(ref).max())
                row.update(sklearn_s=bt, ratio=bt / t_after, rel_diff=diff)
                line += f" {bt:>16.2f} {bt / t_after:>5.1f}x {diff:>11.1e}"
            print(line, flush=True)
            rows.append(row)
            del X, coords
    return rows


def bench_umap_graph(sizes: list[int], dim: int, reuse: bool = True) -> list[dict]:
    """UMAP through the store above ``EXACT_KNN_MAX``: the NN-descent graph is built once and
    cached; a second UMAP of the layer (other min_dist) reuses it."""
    import tempfile
    from pathlib import Path

    from latentmap.pipeline.reduce import _nndescent, layout_graph, projection, reduce

    t0 = time.perf_counter()  # numba compiles pynndescent and UMAP on first use: not timed
    warm = clusters(5000, dim, seed=9)
    _nndescent(warm, 15)
    reduce(warm, "umap", seed=0)
    print(f"\n(warm-up: first NN-descent + UMAP compile {time.perf_counter() - t0:.1f} s)")
    print(f"== UMAP on the cached kNN graph, D={dim}", flush=True)
    print(f"{'N':>8} {'graph s':>8} {'UMAP 1 s':>9} {'UMAP 2 s (reuse)':>17}")
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store, ds = _layer_store(Path(tmp), clusters_chunked(n, dim))
            t0 = time.perf_counter()
            layout_graph(store, ds, "z", 15)
            tg = time.perf_counter() - t0
            t0 = time.perf_counter()
            projection(store, ds, "z", "umap")
            t1 = time.perf_counter() - t0
            t2 = float("nan")
            if reuse:
                t0 = time.perf_counter()
                projection(store, ds, "z", "umap", {"min_dist": 0.5})
                t2 = time.perf_counter() - t0
            print(f"{n:>8} {tg:>8.1f} {t1:>9.1f} {t2:>17.1f}", flush=True)
            rows.append({"n": n, "graph_s": tg, "umap_s": t1, "umap_reuse_s": t2})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000", help="t-SNE sizes (comma separated)")
    ap.add_argument("--umap-sizes", default="10000,50000,100000", help="UMAP sizes")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="2k points only (smoke check)")
    ap.add_argument("--no-sklearn", action="store_true", help="skip the sklearn baseline")
    ap.add_argument("--no-tsne", action="store_true")
    ap.add_argument("--no-umap", action="store_true")
    ap.add_argument("--pca-sizes", default="", help="PCA map sizes, e.g. 100000,1000000")
    ap.add_argument(
        "--umap-graph-sizes", default="", help="UMAP on the cached kNN graph, e.g. 100000"
    )
    ap.add_argument(
        "--no-reuse", action="store_true", help="skip the second UMAP on the cached graph"
    )
    ap.add_argument("--json", help="also write results to this JSON file")
    a = ap.parse_args(argv)
    parse = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    tsne_sizes, umap_sizes = parse(a.sizes), parse(a.umap_sizes)
    if a.quick:
        tsne_sizes, umap_sizes = [2000], [2000]
    results: dict = {"dim": a.dim, "cpus": os.cpu_count()}
    if not a.no_tsne:
        results["tsne"] = bench_tsne(tsne_sizes, a.dim, not a.no_sklearn)
        ratios = [r["ratio"] for r in results["tsne"] if "ratio" in r]
        if ratios:
            print("sklearn / latentmap wall-time ratios: " + ", ".join(f"{r:.1f}x" for r in ratios))
    if not a.no_umap:
        results["umap"] = bench_umap(umap_sizes, a.dim)
    if a.pca_sizes:
        results["pca"] = bench_pca(parse(a.pca_sizes), a.dim, not a.no_sklearn)
    if a.umap_graph_sizes:
        results["umap_graph"] = bench_umap_graph(
            parse(a.umap_graph_sizes), a.dim, reuse=not a.no_reuse
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
