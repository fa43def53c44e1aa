"""Encode throughput: latentmap's pipeline vs a naive per-image loop at batch size 4.

The baseline is how seed 002's script runs: read each file in the main process, batch of 4,
forward, next. latentmap batches (default 64), decodes in DataLoader workers, writes
thumbnails and resumable parts. Both use the same model and the same files.

    python bench/bench_encode.py            # demo digits + 10k generated 64x64 5-band TIFFs
    python bench/bench_encode.py --quick    # 1k TIFFs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_tiffs(folder: Path, n: int, size: int = 64, bands: int = 5) -> Path:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 40000, (8, bands, size, size), dtype=np.uint16)
    for i in range(n):
        noise = rng.integers(0, 8000, (bands, size, size), dtype=np.uint16)
        tifffile.imwrite(folder / f"IMG_{i:05d}.tif", base[i % 8] + noise)
    return folder


def naive_loop(folder: Path, model, batch_size: int = 4) -> float:
    """Seconds for the per-image loop: tifffile.imread, scale, stack 4, forward."""
    import tifffile
    import torch

    files = sorted(folder.glob("*.tif"))
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for i in range(0, len(files), batch_size):
            arrs = [
                tifffile.imread(f).astype(np.float32) / 65535.0 for f in files[i : i + batch_size]
            ]
            out.append(model(torch.from_numpy(np.stack(arrs))).numpy())
    return time.perf_counter() - t0


def forward_only(model, shape: tuple[int, ...], n: int, batch_size: int, device: str) -> float:
    """Seconds for n items through the bare model: the model's bound. Inputs already stacked
    and on the device (no decoding, hooks, pooling, thumbnails or writes), the same autocast
    as the encode on CUDA, one warm-up batch not timed."""
    import torch
    from latentmap.pipeline.jobs import autocast_for

    model = model.to(device).eval()
    x = torch.rand((batch_size, *shape), device=device)
    with torch.inference_mode(), autocast_for(device):
        model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, n, batch_size):
            model(x[: min(batch_size, n - s)]).float()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def pipeline_encode(folder: Path, model_spec: str, cache: Path, **kw) -> tuple[float, int]:
    from latentmap.pipeline.jobs import EncodeRequest, encode
    from latentmap.pipeline.store import Store

    t0 = time.perf_counter()
    res = encode(Store(cache), EncodeRequest(source=str(folder), model=model_spec, **kw))
    return time.perf_counter() - t0, res.n_encoded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=10_000, help="number of generated TIFFs")
    ap.add_argument("--quick", action="store_true", help="1,000 TIFFs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--wide-n", type=int, default=2000, help="TIFFs through WideCNN (0: skip)")
    args = ap.parse_args(argv)
    n = 1000 if args.quick else args.n
    import torch
    from latentmap.pipeline import images, jobs, sources  # noqa: F401 - imports not timed
    from latentmap.pipeline.demo import ensure_demo_weights, write_demo_folder
    from latentmap.pipeline.encoders import _import_class
    from latentmap.pipeline.store import Store

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # --- demo: 1,797 digits through the demo CNN
        store = Store(tmp / "demo-cache")
        folder = write_demo_folder(store)
        weights = ensure_demo_weights(store)
        secs, k = pipeline_encode(
            folder,
            "demo-cnn",
            tmp / "demo-cache",
            checkpoint=str(weights),
            layers=["features", "encoder", "head"],
            batch_size=256,
        )
        rows.append(("demo digits, 3 layers (latentmap)", k, secs, None))
        # --- 5-band TIFFs through a small CNN
        tiffs = make_tiffs(tmp / "tiffs", n)
        spec = f"{HERE / 'models.py'}:SmallCNN"
        model = _import_class(spec)()
        model.eval()
        naive = naive_loop(tiffs, model)
        rows.append(("5-band 64x64 TIFF, naive loop bs=4", n, naive, None))
        secs, k = pipeline_encode(tiffs, spec, tmp / "tiff-cache", batch_size=args.batch_size)
        rows.append((f"5-band 64x64 TIFF, latentmap bs={args.batch_size}", k, secs, naive / secs))
        # --- the model's bound: the same models, bare forward passes on in-memory batches
        device = jobs.pick_device("auto")
        bound = [("SmallCNN", model, n, secs)]
        if args.wide_n:
            wspec = f"{HERE / 'models.py'}:WideCNN"
            wtiffs = tiffs if args.wide_n == n else make_tiffs(tmp / "wide", args.wide_n)
            wsecs, wk = pipeline_encode(
                wtiffs, wspec, tmp / "wide-cache", batch_size=args.batch_size
            )
            rows.append((f"same TIFFs, WideCNN, latentmap bs={args.batch_size}", wk, wsecs, None))
            bound.append(("WideCNN", _import_class(wspec)(), wk, wsecs))
    print(f"\n{'case':42} {'items':>7} {'seconds':>8} {'items/s':>9} {'vs naive':>9}")
    for name, k, secs, ratio in rows:
        r = f"{ratio:8.2f}x" if ratio else ""
        print(f"{name:42} {k:7d} {secs:8.2f} {k / secs:9.1f} {r:>9}")
    print(
        "\n(latentmap also writes a thumbnail per item and resumable parts; the naive loop does not)"
    )
    print(f"\nencode vs forward-only on {device} (bs={args.batch_size}; target >= 0.9 on a GPU)")
    print(f"{'model':10} {'forward items/s':>16} {'encode items/s':>15} {'ratio':>6}")
    for name, mdl, k, secs in bound:
        fwd = forward_only(mdl, (5, 64, 64), k, args.batch_size, device)
        print(f"{name:10} {k / fwd:16.1f} {k / secs:15.1f} {fwd / secs:6.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    sys.exit(main())
