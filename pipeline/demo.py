"""The embedded demo: scikit-learn's digits through a small CNN the project trains itself.

``ensure_demo(store)`` writes the 1,797 digits as PNG files under ``<cache>/demo/digits/<label>/``
with a metadata CSV (split), trains ``DigitsCNN`` once with a fixed seed (a few seconds on 2
cores), then runs the ordinary encode job on that folder with layers features / encoder / head
(predictions from the head) and precomputes PCA, t-SNE and UMAP for every layer. Everything is
cached; a second call returns at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from latentmap.pipeline.store import Store, atomic_path, save_json

log = logging.getLogger(__name__)

DEMO_VERSION = 1
DEMO_NAME = "digits-demo"
DEMO_LAYERS = ("features", "encoder", "head")
SEED = 0
TEST_FRACTION = 0.25

Progress = Callable[[float, str], None]


def _torch_module():
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        """Three named stages, as in seed 001: convolutional features, an encoder, a head."""

        def __init__(self, n_classes: int = 10, latent_dim: int = 32):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.encoder = nn.Sequential(
                nn.Flatten(),
                nn.Linear(32 * 4 * 4, 64),
                nn.ReLU(),
                nn.Linear(64, latent_dim),
                nn.ReLU(),
            )
            self.head = nn.Linear(latent_dim, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.features(x)))

    return DigitsCNN


def __getattr__(name: str):
    # DigitsCNN is built on first access so that importing this module does not import torch.
    if name == "DigitsCNN":
        return _torch_module()
    raise AttributeError(name)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 8, 8) float32 in [0, 1], labels (N,), split (N,) 'train'/'test')."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    rng = np.random.default_rng(SEED)
    split = np.where(rng.random(len(images)) < TEST_FRACTION, "test", "train")
    return images, d.target.astype(np.int64), split


def train_digits_cnn(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 15,
    seed: int = SEED,
    progress: Progress | None = None,
):
    """Train DigitsCNN on (N, 8, 8) images in [0, 1]; deterministic for a seed. Returns the model."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than two fighting
    try:
        return _train(images, labels, epochs=epochs, seed=seed, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train(images, labels, *, epochs, seed, progress):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = _torch_module()()
    x = torch.from_numpy(images[:, None].astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if progress:
            progress((epoch + 1) / epochs, f"training demo CNN: epoch {epoch + 1}/{epochs}")
    model.eval()
    return model


def demo_root(store: Store) -> Path:
    return store.root / "demo" / f"v{DEMO_VERSION}"


def demo_weights_path(store: Store) -> Path:
    return demo_root(store) / "digits_cnn.pt"


def write_demo_folder(store: Store) -> Path:
    """Write the digits as 8-bit PNGs in label sub-folders plus metadata.csv (once)."""
    from PIL import Image

    folder = demo_root(store) / "digits"
    done = folder / ".complete"
    if done.exists():
        return folder
    images, labels, split = load_digits_arrays()
    rows = ["file,split,digit_index"]
    for i, (img, lab, sp) in enumerate(zip(images, labels, split, strict=True)):
        name = f"digit_{i:04d}.png"
        dest = folder / str(lab) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L").save(tmp, format="PNG")
        rows.append(f"{lab}/{name},{sp},{i}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return folder


def ensure_demo_weights(store: Store, progress: Progress | None = None) -> Path:
    import torch

    path = demo_weights_path(store)
    if path.exists():
        return path
    images, labels, split = load_digits_arrays()
    train = split == "train"
    t0 = time.perf_counter()
    model = train_digits_cnn(images[train], labels[train], progress=progress)
    with torch.inference_mode():
        pred = model(torch.from_numpy(images[~train][:, None])).argmax(1).numpy()
    acc = float((pred == labels[~train]).mean())
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    save_json(
        path.with_suffix(".json"),
        {"test_accuracy": acc, "train_seconds": time.perf_counter() - t0, "seed": SEED},
    )
    log.info("demo CNN trained in %.1f s, test accuracy %.3f", time.perf_counter() - t0, acc)
    return path


def ensure_demo(
    store: Store,
    progress: Progress | None = None,
    *,
    methods: tuple[str, ...] = ("pca", "tsne", "umap"),
) -> str:
    """Build (first time) or return the demo dataset id, with projections precomputed."""
    from latentmap.pipeline.jobs import EncodeRequest, encode

    def say(frac: float, msg: str) -> None:
        log.info(msg)
        if progress:
            progress(frac, msg)

    folder = write_demo_folder(store)
    weights = ensure_demo_weights(store, progress=lambda f, m: say(0.1 * f, m))
    req = EncodeRequest(
        source=str(folder),
        model="demo-cnn",
        checkpoint=str(weights),
        layers=list(DEMO_LAYERS),
        labels=str(folder / "metadata.csv"),
        predictions="head",
        name=DEMO_NAME,
        batch_size=256,
        workers=0,
    )
    result = encode(store, req, progress=lambda d, t, m: say(0.1 + 0.2 * d / max(t, 1), m))
    precompute_projections(
        store, result.ds_id, methods, progress=lambda f, m: say(0.3 + 0.7 * f, m)
    )
    return result.ds_id


def precompute_projections(
    store: Store, ds_id: str, methods: tuple[str, ...], progress: Progress | None = None
) -> None:
    from latentmap.pipeline.reduce import projection

    layers = store.layers(ds_id)
    jobs = [(layer, m) for m in methods for layer in layers]
    for i, (layer, method) in enumerate(jobs):
        if progress:
            progress(i / len(jobs), f"{method} of {layer} ({i + 1}/{len(jobs)})")
        projection(store, ds_id, layer, method)
    if progress:
        progress(1.0, "demo ready")
