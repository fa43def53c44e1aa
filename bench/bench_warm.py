"""First UMAP click in the embedded server: a cold job process vs the warm UMAP worker.

In the embedded mode (no Redis) each background job is a process forked from the web
process, which never imports umap. Before ``pipeline/localworker.py`` such a job compiled
umap-learn / pynndescent itself on every UMAP it computed; now it hands the UMAP to a worker
that ``serve`` spawned and warmed at start-up. Both are timed here on the same data (a
``--n``-row, D=``--dim`` clustered layer), as the user sees it: from the request to the
entry in the cache.

- "cold job": a fresh process (what a job forked from the web process is, for numba) runs
  ``reduce.projection(..., "umap")``; it pays the import and the compilation (numba's
  on-disk cache, warmed by the earlier runs here, included).
- "warm worker": ``localworker.Pool(1)`` started and warmed first (its warm-up time is
  printed: paid once per server start, before any click), then the same request through
  ``localworker.delegate`` with other ``min_dist`` values (no cache hit).

    .venv/bin/python bench/bench_warm.py               # 2,000 rows, 3 requests each
    .venv/bin/python bench/bench_warm.py --n 20000 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reduce import _layer_store, clusters_chunked  # noqa: E402

COLD = """
import sys, time
from latentmap.pipeline.reduce import projection
from latentmap.pipeline.store import Store
t0 = time.perf_counter()
projection(Store(sys.argv[1]), sys.argv[2], "z", "umap", {"min_dist": float(sys.argv[3])})
print(time.perf_counter() - t0)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from latentmap.pipeline import localworker
    from latentmap.pipeline.reduce import cached_projection

    with tempfile.TemporaryDirectory() as tmp:
        store, ds = _layer_store(Path(tmp), clusters_chunked(args.n, args.dim))
        env = {k: v for k, v in os.environ.items() if k != localworker.ENV}
        print(f"== first UMAP of a layer in the embedded server, N={args.n:,}, D={args.dim}")
        cold = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", COLD, str(store.root), ds, f"{0.11 + i / 100:.2f}"],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            cold.append(time.perf_counter() - t0)
            print(
                f"cold job {i + 1}: {cold[-1]:6.1f} s (projection call {float(out.stdout):.1f} s)",
                flush=True,
            )

        t0 = time.perf_counter()
        pool = localworker.Pool(1, warm=True).start()
        try:
            assert pool.wait_ready(900), "the worker did not get ready"
            t_warm_up = time.perf_counter() - t0
            print(f"warm-up of the worker (once per server start): {t_warm_up:.1f} s", flush=True)
            warm = []
            for i in range(args.repeat):
                params = {"min_dist": round(0.31 + i / 100, 2)}
                t0 = time.perf_counter()
                req = {
                    "ds_id": ds,
                    "layer": "z",
                    "method": "umap",
                    "params": params,
                    "seed": 0,
                    "init_from": None,
                }
                assert localworker.delegate(str(store.root), req)
                warm.append(time.perf_counter() - t0)
                assert cached_projection(store, ds, "z", "umap", params) is not None
                print(f"warm worker {i + 1}: {warm[-1]:6.1f} s", flush=True)
        finally:
            pool.stop()
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"median: cold job {c:.1f} s, warm worker {w:.1f} s ({c / w:.0f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
