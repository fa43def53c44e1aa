"""Diagnostics at scale: what the diagnostics tab and the overlays cost on a cold cache.

Synthetic classifier output: N items x 128-d latents in C classes, predictions correct 85% of
the time. Times (seconds, one cold run each, cache in a temp dir) for:
  confusion_distance_for   confusion matrix + centroid distances + Spearman of one layer
  layer_summary            silhouette (5k sample) + the above
  centroid_map (PCA)       class centroids on the PCA map (exact: PCA is affine)
  procrustes_align         aligning one (N, 2) map onto another
  trust_for (PCA)          exact 10-NN graph + trustworthiness (2k sample) + per-point recall
Baselines named in the output: sklearn.metrics.confusion_matrix for the matrix and
scipy.spatial.procrustes for the alignment.

    .venv/bin/python bench/bench_diagnostics.py             # N = 20k and 100k
    .venv/bin/python bench/bench_diagnostics.py --quick     # N = 5k
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(n: int, classes: int, trust: bool) -> None:
    import pandas as pd
    from latentmap.pipeline import diagnostics as dg
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.reduce import projection
    from latentmap.pipeline.store import Store
    from scipy.spatial import procrustes
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, n)
    centres = rng.normal(0, 1, (classes, 128)).astype(np.float32)
    z = centres[y] + rng.normal(0, 1.2, (n, 128)).astype(np.float32)
    pred = np.where(rng.random(n) < 0.85, y, rng.integers(0, classes, n))
    meta = pd.DataFrame({"label": y.astype(str), "pred": pred.astype(str)})
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        ds = write_dataset(store, name="bench", vectors={"z": z}, metadata=meta)
        _, t_pca = timed(lambda: projection(store, ds, "z", "pca"))
        print(f"\nN={n:,} x 128, {classes} classes (PCA map {t_pca:.2f} s)")
        _, t = timed(lambda: dg.confusion_distance_for(store, ds, "z", "label", "pred"))
        _, t_base = timed(lambda: confusion_matrix(meta["label"], meta["pred"]))
        print(
            f"  confusion_distance_for   {t:7.2f} s   (sklearn confusion_matrix alone {t_base:.2f} s)"
        )
        _, t = timed(lambda: dg.layer_summary(store, ds, "z", "label", "pred"))
        print(f"  layer_summary            {t:7.2f} s")
        _, t = timed(lambda: dg.centroid_map(store, ds, "z", "pca", None, "label"))
        print(f"  centroid_map (PCA)       {t:7.2f} s")
        a = rng.normal(size=(n, 2))
        theta = 0.7
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        b = 3 * a @ rot + 5
        _, t = timed(lambda: dg.procrustes_align(a, b))
        _, t_base = timed(lambda: procrustes(a, b))
        print(
            f"  procrustes_align         {t:7.3f} s   (scipy procrustes {t_base:.3f} s, "
            f"{t_base / t:.1f}x)"
        )
        if trust:
            _, t = timed(lambda: dg.trust_for(store, ds, "z", "pca", None))
            print(f"  trust_for (PCA)          {t:7.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    sizes = [(5_000, 20, True)] if args.quick else [(20_000, 50, True), (100_000, 200, False)]
    for n, c, trust in sizes:
        run(n, c, trust)


if __name__ == "__main__":
    main()
