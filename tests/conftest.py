"""Shared fixtures: a temporary store, real image folders, and the real demo (built once)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from latentmap.pipeline.store import Store

# UMAP's 60-90 s compile warm-up (serve, Celery workers) is for users, not for the test suite
os.environ.setdefault("LATENTMAP_WARMUP", "0")
os.environ.setdefault("LATENTMAP_PRECOMPUTE", "0")  # tests that want it launch it themselves


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "cache")


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> tuple[Store, str]:
    """The real embedded demo (digits + trained CNN + all projections), built once per session."""
    from latentmap.pipeline.demo import ensure_demo

    store = Store(tmp_path_factory.mktemp("demo-cache"))
    return store, ensure_demo(store)


def write_png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes of real PNGs (bright vs dark blobs, mixed sizes) plus broken files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls, base in (("bright", 200), ("dark", 40)):
        for i in range(12):
            h, w = (16, 16) if i % 3 else (20, 12)
            arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            write_png(root / cls / f"{cls}_{i:02d}.png", arr)
    good = (root / "bright" / "bright_00.png").read_bytes()
    (root / "bright" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dark" / "empty.png").write_bytes(b"")
    (root / "dark" / "notes.txt").write_text("not an image")
    write_png(root / "dark" / "tiny.png", np.zeros((1, 1, 3), np.uint8))
    return root
