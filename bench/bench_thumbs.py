"""Band picker: regenerating multispectral thumbnails for a new band choice.

A folder of N 5-band uint16 TIFFs (H x W) is encoded once with the ``pixels`` model, then
``pipeline.bands.ensure_thumbs`` writes the thumbnails of a new band choice (cold), and the same
choice is asked again (cache hit). Baseline named in the output: the encode's own thumbnail
pass, measured as a single-threaded loop of read + ``make_thumbnail`` over the same files.

    .venv/bin/python bench/bench_thumbs.py            # 2,000 x 5 x 256 x 256
    .venv/bin/python bench/bench_thumbs.py --quick    # 300 x 5 x 128 x 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    n, hw = (300, 128) if args.quick else (2000, 256)
    import tifffile
    from latentmap.pipeline import bands
    from latentmap.pipeline.images import make_thumbnail, read_image
    from latentmap.pipeline.jobs import EncodeRequest, encode
    from latentmap.pipeline.store import Store

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ms"
        root.mkdir()
        for i in range(n):
            arr = (rng.random((5, hw, hw)) * 4000 * np.arange(1, 6)[:, None, None]).astype(
                np.uint16
            )
            tifffile.imwrite(root / f"{i:05d}.tif", arr)
        store = Store(Path(tmp) / "cache")
        t = time.perf_counter()
        ds = encode(store, EncodeRequest(source=str(root), model="pixels", image_size=32)).ds_id
        print(f"N={n:,} x 5 x {hw} x {hw}: encode (pixels, 32 px) {time.perf_counter() - t:.2f} s")
        files = sorted(root.glob("*.tif"))
        t = time.perf_counter()
        for f in files:
            make_thumbnail(read_image(f), rgb=(4, 3, 2), percentiles=(2, 98), size=96)
        base = time.perf_counter() - t
        print(f"baseline single-threaded read + thumbnail loop: {base:.2f} s")
        t = time.perf_counter()
        e = bands.ensure_thumbs(store, ds, (4, 3, 2), (2, 98))
        cold = time.perf_counter() - t
        print(
            f"ensure_thumbs cold: {cold:.2f} s ({n / cold:,.0f} thumbnails/s, "
            f"{base / cold:.2f}x the baseline), written {e.info['written']:,}"
        )
        t = time.perf_counter()
        bands.ensure_thumbs(store, ds, (4, 3, 2), (2, 98))
        print(f"ensure_thumbs cached: {1000 * (time.perf_counter() - t):.1f} ms")


if __name__ == "__main__":
    main()
