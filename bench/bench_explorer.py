"""Explorer payload at scale: server time to build the map figure, its size on the wire
(typed arrays vs plain lists, raw and gzip), and the time to switch to a cached projection.

Generated data: N points in 20 Gaussian clusters, a 20-class label and a 2-value split column,
PCA and UMAP-like coordinates written to the store as cached projections (so this measures the
app's path, not the reduction). Baseline: the same figure with coordinates as JSON lists, which
is what plotly sends for Python lists.

    python bench/bench_explorer.py                 # 100k and 1M points
    python bench/bench_explorer.py --sizes 100000
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dataset(store, n: int, dim: int = 16) -> str:
    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.reduce import projection_key

    rng = np.random.default_rng(0)
    label = rng.integers(0, 20, n)
    centres = rng.normal(0, 6, (20, dim)).astype(np.float32)
    X = centres[label] + rng.normal(0, 1, (n, dim)).astype(np.float32)
    meta = pd.DataFrame(
        {"label": label.astype(str), "split": np.where(rng.random(n) < 0.2, "test", "train")}
    )
    ds = write_dataset(store, name=f"bench-{n}", vectors={"z": X}, metadata=meta)
    for method, seed in (("pca", 0), ("umap", 1)):
        coords = (X[:, :2] + np.random.default_rng(seed).normal(0, 0.5, (n, 2))).astype(np.float32)
        from latentmap.pipeline.reduce import normalize_params

        params, _ = normalize_params(method, None, n)
        store.put(projection_key(ds, "z", method, params, 0), {"coords": coords}, {"notices": []})
    return ds


def spec_for(ds: str, method: str) -> dict:
    from latentmap.pipeline.reduce import default_params

    return {
        "dataset": ds,
        "layer": "z",
        "method": method,
        "params": default_params(method),
        "color": "label",
        "symbol": "split",
        "filter_col": None,
        "filter_values": None,
        "filter_mode": "dim",
    }


def wire_size(fig: dict) -> tuple[int, int]:
    from plotly.io.json import to_json_plotly

    raw = to_json_plotly(fig).encode()
    return len(raw), len(gzip.compress(raw, compresslevel=6))


def as_lists(fig: dict) -> dict:
    """The same figure with every typed array turned into a plain list (the baseline)."""
    import base64

    def conv(v):
        if isinstance(v, dict) and "bdata" in v and "dtype" in v:
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return conv(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args(argv)
    from latentmap.callbacks import scatter
    from latentmap.pipeline.store import Store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        for n in [int(s) for s in args.sizes.split(",")]:
            ds = make_dataset(store, n)
            t0 = time.perf_counter()
            fig, *_ = scatter.render(store, spec_for(ds, "pca"), None, None, None, None, None, None)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            fig2, *_ = scatter.render(
                store, spec_for(ds, "umap"), None, None, None, None, None, None
            )
            switch = time.perf_counter() - t0
            t0 = time.perf_counter()
            scatter.render(store, spec_for(ds, "pca"), None, None, None, None, None, None)
            back = time.perf_counter() - t0
            t0 = time.perf_counter()
            typed_raw, typed_gz = wire_size(fig)
            ser = time.perf_counter() - t0
            list_raw, list_gz = wire_size(as_lists(fig))
            rows.append((n, cold, switch, back, ser, typed_raw, typed_gz, list_raw, list_gz))
    print(
        f"\n{'N':>9} {'build s':>8} {'switch s':>9} {'back s':>7} {'json s':>7} "
        f"{'typed MB':>9} {'gzip MB':>8} {'lists MB':>9} {'gzip MB':>8} {'lists/typed':>11}"
    )
    for n, cold, switch, back, ser, tr, tg, lr, lg in rows:
        print(
            f"{n:9d} {cold:8.2f} {switch:9.2f} {back:7.2f} {ser:7.2f} {tr / 1e6:9.2f} "
            f"{tg / 1e6:8.2f} {lr / 1e6:9.2f} {lg / 1e6:8.2f} {lr / tr:10.2f}x"
        )
    print(
        "\nbuild: first figure of a dataset (reads metadata, groups rows by colour); switch: to "
        "another cached projection; back: to one already seen. Sizes are the figure JSON the "
        "server sends (coordinates + symbols); gzip is what a compressed response carries."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
