"""Helpers shared by the test_app_* files: small real datasets registered with write_dataset.

No tests here; kept in a test_app_* file so that it stays with the app tests.
"""

from __future__ import annotations

import io

import numpy as np


def png(value: int, size: int = 10) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value % 256, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_dataset(
    store, n: int = 60, *, thumbnails: bool = True, nan_rows=(), name: str = "blobs", seed: int = 0
) -> str:
    """n items in 3 clusters of 8-d vectors; metadata label/pred/split/score; PNG thumbnails."""
    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = rng.normal(0, 5, (3, 8))
    z = (centres[labels] + rng.normal(0, 1, (n, 8))).astype(np.float32)
    for r in nan_rows:
        z[r] = np.nan
    meta = pd.DataFrame(
        {
            "file": [f"img_{i:03d}.png" for i in range(n)],
            "label": [f"c{x}" for x in labels],
            "pred": [f"c{(x + (i % 7 == 0)) % 3}" for i, x in enumerate(labels)],
            "split": np.where(np.arange(n) % 4 == 0, "test", "train"),
            "score": rng.random(n),
        }
    )
    thumbs = [png(40 * lab + i) for i, lab in enumerate(labels)] if thumbnails else None
    return write_dataset(
        store, name=name, vectors={"z": z, "z2": z[:, :4] * 2}, metadata=meta, thumbnails=thumbs
    )
