"""Sampling at scale: fitting the distribution, drawing samples and finding their nearest items.

Synthetic clustered latents (N x D float32). One cold run per case (cache in a temp dir) of
``sample_latents`` (fit + n=20 samples + exact top-12 cosine search + random baseline), then the
same request again (cache hit). Baseline named in the output: the seed-000 script's approach,
``np.random.randn(20, D) * X.std(0) + X.mean(0)`` and a brute-force cosine search with
scikit-learn's ``cosine_similarity``.

    .venv/bin/python bench/bench_sampling.py            # 100k x 512
    .venv/bin/python bench/bench_sampling.py --quick    # 20k x 128
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    n, d = (20_000, 128) if args.quick else (100_000, 512)
    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.sampling import sample_latents
    from latentmap.pipeline.store import Store
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(0)
    y = rng.integers(0, 20, n)
    X = (rng.normal(0, 1, (20, d))[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    meta = pd.DataFrame({"label": y.astype(str)})
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        ds = write_dataset(store, name="bench", vectors={"z": X}, metadata=meta)
        print(f"N={n:,} x {d}")
        t0 = time.perf_counter()
        q = rng.standard_normal((20, d)).astype(np.float32) * X.std(0) + X.mean(0)
        cosine_similarity(q, X).argmax(1)
        base = time.perf_counter() - t0
        print(f"  seed-000 baseline (diag Gaussian + sklearn cosine search)  {base:6.2f} s")
        for dist in ("diag", "full", "gmm"):
            t0 = time.perf_counter()
            sample_latents(store, ds, "z", n=20, dist=dist, k=3, seed=0)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            sample_latents(store, ds, "z", n=20, dist=dist, k=3, seed=0)
            warm = time.perf_counter() - t0
            print(f"  sample_latents {dist:4s}  cold {cold:6.2f} s   cached {1000 * warm:6.1f} ms")


if __name__ == "__main__":
    main()
