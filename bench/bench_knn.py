"""Exact cosine nearest-neighbour speed: click-to-neighbours queries and full kNN graphs.

Query: ``nearest_to_vectors(X, q, 12, norms=...)`` on an (N, 512) float32 **memory-mapped**
.npy (how the store serves vectors), row norms precomputed once, as the app does. Median of 50
single queries (ms/query). Baseline: scikit-learn ``NearestNeighbors(metric="cosine",
algorithm="brute").kneighbors(q)`` on the same in-RAM array, which re-normalises X per call.

Graph: ``cosine_knn(X, 15)`` (blocked normalised matmul + argpartition) for every row.
Baseline: ``NearestNeighbors(metric="cosine", algorithm="brute", n_jobs=-1).kneighbors(X)``
(skipped above 20k unless --baseline-graph, it is slow).

    .venv/bin/python bench/bench_knn.py                 # queries at 100k, graphs at 10k,100k
    .venv/bin/python bench/bench_knn.py --million       # also queries at 1M x 512 (2 GB file)
    .venv/bin/python bench/bench_knn.py --quick         # 20k queries, 2k graph
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_memmap(path: Path, n: int, d: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Write n x d non-negative float32 clustered vectors to path in chunks; open as memmap."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (50, d)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        block = centres[rng.integers(0, 50, m)] + rng.normal(0, 0.5, (m, d)).astype(np.float32)
        out[s : s + m] = np.maximum(block, 0)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def bench_queries(X: np.ndarray, n_queries: int, k: int = 12, baseline: bool = True) -> dict:
    from latentmap.pipeline.neighbors import nearest_to_vectors, vector_norms

    t0 = time.perf_counter()
    norms = vector_norms(X)
    t_norms = time.perf_counter() - t0
    rows = np.random.default_rng(3).choice(len(X), n_queries, replace=False)
    nearest_to_vectors(X, np.asarray(X[rows[0]]), k, exclude=[rows[0]], norms=norms)  # warm
    times = []
    for r in rows:
        t0 = time.perf_counter()
        nearest_to_vectors(X, np.asarray(X[r]), k, exclude=[int(r)], norms=norms)
        times.append(time.perf_counter() - t0)
    res = {"n": len(X), "norms_s": t_norms, "ms_per_query": 1000 * float(np.median(times))}
    if baseline:
        from sklearn.neighbors import NearestNeighbors

        Xr = np.asarray(X)
        nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(Xr)
        bt = []
        for r in rows[:10]:
            t0 = time.perf_counter()
            nn.kneighbors(Xr[r : r + 1])
            bt.append(time.perf_counter() - t0)
        res["sklearn_ms_per_query"] = 1000 * float(np.median(bt))
        del Xr
    return res


def bench_graph(n: int, d: int, k: int = 15, baseline: bool = True) -> dict:
    from latentmap.pipeline.neighbors import cosine_knn

    rng = np.random.default_rng(5)
    centres = rng.normal(0.0, 1.0, (50, d)).astype(np.float32)
    X = np.maximum(centres[rng.integers(0, 50, n)] + rng.normal(0, 0.5, (n, d)), 0)
    X = X.astype(np.float32)
    t0 = time.perf_counter()
    idx, _ = cosine_knn(X, k)
    res = {"n": n, "graph_s": time.perf_counter() - t0}
    if baseline:
        from sklearn.neighbors import NearestNeighbors

        t0 = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute", n_jobs=-1)
        _, ref = nn.fit(X).kneighbors(X)
        res["sklearn_s"] = time.perf_counter() - t0
        # sklearn returns self first (ties aside); compare neighbour sets
        agree = np.mean([len(set(a) & set(b[1:])) / k for a, b in zip(idx, ref, strict=True)])
        res["agreement"] = float(agree)
    return res


def bench_ann(path: Path, n: int, d: int, n_queries: int, k: int = 10) -> dict:
    """The app's IVF path on a memmapped (n, d) layer: build time, query time, recall@k vs
    exact (the same ``nearest_to_vectors`` the app uses below the threshold)."""
    import pandas as pd
    from latentmap.pipeline import ann
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.neighbors import nearest, nearest_to_vectors, row_norms
    from latentmap.pipeline.store import Store

    store = Store(path / f"store{n}")
    X = make_memmap(path / f"ann{n}.npy", n, d, seed=7)
    ds = write_dataset(store, name="ann", vectors={"z": X}, metadata=pd.DataFrame({"i": range(n)}))
    del X
    ann.ANN_MIN_ROWS = min(ann.ANN_MIN_ROWS, n)
    t0 = time.perf_counter()
    built = ann.build_index(store, ds, "z")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann.cached_index(store, ds, "z")
    load = time.perf_counter() - t0
    Xs = store.vectors(ds, "z")
    norms = row_norms(store, ds, "z")
    rows = np.random.default_rng(11).choice(n, n_queries, replace=False)
    nearest(store, ds, "z", int(rows[0]), k)  # warm
    times, hits = [], 0
    for r in rows:
        t0 = time.perf_counter()
        got = nearest(store, ds, "z", int(r), k)
        times.append(time.perf_counter() - t0)
        idx, _ = nearest_to_vectors(Xs, np.asarray(Xs[r]), k, exclude=[int(r)], norms=norms)
        hits += len({g for g, _ in got} & set(idx[0].tolist()))
    return {
        "cells": built.info["cells"],
        "nprobe": built.info["nprobe"],
        "train_s": built.info["train_seconds"],
        "build_s": build,
        "load_s": load,
        "ms_per_query": 1000 * float(np.median(times)),
        "p95_ms": 1000 * float(np.percentile(times, 95)),
        "recall": hits / (k * len(rows)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--query-sizes", default="100000")
    ap.add_argument("--graph-sizes", default="10000,100000")
    ap.add_argument("--million", action="store_true", help="also queries at 1,000,000 rows")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--baseline-graph", action="store_true", help="sklearn graph above 20k too")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tmp", default=None, help="folder for the memmapped .npy files")
    ap.add_argument(
        "--ann", default="", help="sizes for the IVF index path, e.g. 100000,1000000 (slow)"
    )
    a = ap.parse_args(argv)
    parse = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    qsizes, gsizes = parse(a.query_sizes), parse(a.graph_sizes)
    if a.million:
        qsizes.append(1_000_000)
    if a.quick:
        qsizes, gsizes = [20_000], [2_000]

    print(f"== single queries, k=12, D={a.dim}, memmapped X, {os.cpu_count()} cores")
    print(f"{'N':>9} {'norms s':>8} {'ms/query':>9} {'sklearn ms':>11} {'speed-up':>9}")
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        for n in qsizes:
            X = make_memmap(Path(tmp) / f"x{n}.npy", n, a.dim)
            r = bench_queries(X, a.queries, baseline=n <= 200_000)
            sk = r.get("sklearn_ms_per_query", float("nan"))
            print(
                f"{n:>9} {r['norms_s']:>8.2f} {r['ms_per_query']:>9.1f} {sk:>11.1f} "
                f"{sk / r['ms_per_query']:>8.1f}x",
                flush=True,
            )
            del X

    if a.ann:
        from latentmap.pipeline import ann

        print(
            f"\n== IVF index (SQ8, cells ~4 sqrt(N), nprobe cells/32, "
            f"{ann.CANDIDATES} candidates re-ranked exactly), D={a.dim}"
        )
        print(
            f"{'N':>9} {'cells':>6} {'nprobe':>6} {'train s':>8} {'build s':>8} {'load s':>7} "
            f"{'ms/query':>9} {'p95 ms':>7} {'recall@10':>10}"
        )
        with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
            for n in parse(a.ann):
                r = bench_ann(Path(tmp), n, a.dim, a.queries)
                print(
                    f"{n:>9} {r['cells']:>6} {r['nprobe']:>6} {r['train_s']:>8.1f} "
                    f"{r['build_s']:>8.1f} {r['load_s']:>7.2f} {r['ms_per_query']:>9.2f} "
                    f"{r['p95_ms']:>7.2f} {r['recall']:>10.3f}",
                    flush=True,
                )

    print(f"\n== full kNN graph, k=15, D={a.dim}")
    print(f"{'N':>9} {'latentmap s':>12} {'sklearn s':>10} {'speed-up':>9} {'agree':>6}")
    for n in gsizes:
        r = bench_graph(n, a.dim, baseline=n <= 20_000 or a.baseline_graph)
        sk = r.get("sklearn_s", float("nan"))
        print(
            f"{n:>9} {r['graph_s']:>12.1f} {sk:>10.1f} {sk / r['graph_s']:>8.1f}x "
            f"{r.get('agreement', float('nan')):>6.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
