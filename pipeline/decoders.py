"""Decoders: a user's model that maps a latent of one layer back to an image.

A decoder spec is loaded like an encoder (``pipeline.encoders``):

- ``path/to/decoder.pt`` (``.ts``/``.pth``) holding a TorchScript archive;
- ``path/to/file.py:Class`` or ``package.module:Class`` built with ``kwargs`` and loaded from a
  state-dict ``checkpoint`` (``torch.load(weights_only=True)``).

It takes a (N, D) batch of latents and returns images: (N, C, H, W) or (N, H, W), or
(N, H*W) / (N, 3*H*W) flat square images, in [0, 1], [-1, 1] or any range; channels-last
(N, H, W, C) with C in 1, 3, 4 is recognised when dim 1 is not a plausible channel count.
:func:`decode_images` turns each into PNG thumbnail bytes.

:func:`train_demo_decoder` trains a small MLP decoder from the digits demo's latents to its
8x8 images in a few seconds on a CPU and saves it as TorchScript, so that the decoder path
can be used (and tested) without a user's model.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from latentmap.pipeline.sampling import SamplingError
from latentmap.pipeline.store import Store, atomic_path, file_digest, safe_name, save_json

log = logging.getLogger(__name__)

DECODER_VERSION = 1
THUMB_SIZE = 96  # longest side of a decoded thumbnail (the dataset thumbnails' default)
DEMO_IMAGE_SIZE = 8  # the digits are 8 x 8
DEMO_EPOCHS = 40
_MATMUL_RE = re.compile(r"\((\d+)x(\d+) and (\d+)x(\d+)\)")


@dataclass
class LoadedDecoder:
    module: Any  # torch.nn.Module or torch.jit.ScriptModule, in eval mode
    spec: str
    kind: str  # torchscript | class
    fingerprint: str
    device: str = "cpu"

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "fingerprint": self.fingerprint}


def _pick_device(device: str) -> str:
    import torch

    device = str(device or "cpu").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SamplingError(f"decoder device {device!r}: no CUDA GPU is available; use cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise SamplingError(f"unknown decoder device {device!r}: use cpu, cuda or auto")
    return device


def load_decoder(
    spec: str,
    checkpoint: str | Path | None = None,
    *,
    device: str = "cpu",
    kwargs: dict[str, Any] | str | None = None,
    trust_checkpoint: bool = False,
) -> LoadedDecoder:
    """Load the decoder named by ``spec`` (TorchScript file, or file.py:Class / module:Class
    with a state-dict ``checkpoint``) in eval mode on ``device`` (cpu, cuda or auto).

    Every failure a user can fix (missing file, not a model, checkpoint that does not fit)
    is a SamplingError naming it.
    """
    import torch
    from latentmap.pipeline import encoders as enc

    if not isinstance(spec, str) or not spec.strip():
        raise SamplingError("no decoder given: pass a TorchScript file or file.py:Class")
    spec = spec.strip()
    dev = _pick_device(device)
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs) if kwargs.strip() else {}
        except ValueError as e:
            raise SamplingError(f"decoder kwargs are not valid JSON: {e}") from None
    kwargs = dict(kwargs or {})
    try:
        if ":" in spec and not Path(spec).expanduser().is_file():
            cls = enc._import_class(spec)
            torch.manual_seed(0)
            try:
                module = cls(**kwargs)
            except TypeError as e:
                raise SamplingError(f"cannot build decoder {spec} with {kwargs}: {e}") from None
            if not isinstance(module, torch.nn.Module):
                raise SamplingError(f"decoder {spec} is not a torch.nn.Module")
            parts = [spec, json.dumps(kwargs, sort_keys=True)]
            mod_file = spec.rpartition(":")[0]
            if mod_file.endswith(".py"):
                parts.append(file_digest(Path(mod_file).expanduser()))
            if checkpoint is None:
                raise SamplingError(
                    f"decoder {spec} needs its trained weights: pass a state-dict checkpoint "
                    "(--decoder-checkpoint)"
                )
            sd = enc._unwrap_state_dict(enc.load_checkpoint(checkpoint, trust=trust_checkpoint))
            enc._load_state(module, sd, f"decoder {cls.__name__}")
            parts.append(file_digest(Path(checkpoint).expanduser()))
            fp = hashlib.sha256("|".join(parts).encode()).hexdigest()
            kind = "class"
        else:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise SamplingError(
                    f"decoder not found: {spec} (give a TorchScript file, file.py:Class or "
                    "package.module:Class)"
                )
            if not enc._torchscript_like(path):
                raise SamplingError(
                    f"decoder {path.name} is not a TorchScript archive: export it with "
                    "torch.jit.script/trace, or use file.py:Class with a state-dict checkpoint"
                )
            try:
                module = torch.jit.load(str(path), map_location=dev)
            except (RuntimeError, ValueError) as e:
                raise SamplingError(
                    f"cannot load TorchScript decoder {path.name}: {str(e).splitlines()[0]}"
                ) from None
            fp, kind = file_digest(path), "torchscript"
    except enc.EncoderError as e:
        raise SamplingError(f"decoder: {e}") from None
    module = module.to(dev)
    module.eval()
    return LoadedDecoder(module=module, spec=spec, kind=kind, fingerprint=fp, device=dev)


def _as_loaded(decoder: LoadedDecoder | Any) -> LoadedDecoder:
    if isinstance(decoder, LoadedDecoder):
        return decoder
    import torch

    if isinstance(decoder, torch.nn.Module):
        try:
            dev = str(next(decoder.parameters()).device)
        except StopIteration:
            dev = "cpu"
        decoder.eval()
        return LoadedDecoder(decoder, type(decoder).__name__, "module", "", dev)
    raise SamplingError(f"not a decoder: {type(decoder).__name__}")


def _expected_size(module: Any, error: str) -> int | None:
    """The latent size a decoder wants, from a matmul error or its first Linear layer."""
    m = _MATMUL_RE.search(error)
    if m:
        return int(m.group(3))
    try:
        mods = list(module.modules())
    except Exception:  # noqa: BLE001 - a user's module may not list its children
        return None
    for sub in mods:
        size = getattr(sub, "in_features", None)
        if isinstance(size, int):
            return size
    return None


def _run(dec: LoadedDecoder, Z: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = dec.module(torch.from_numpy(np.array(Z, np.float32)).to(dec.device))
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if isinstance(out, dict) and out:
        out = next(iter(out.values()))
    if not isinstance(out, torch.Tensor):
        raise SamplingError(f"the decoder returned {type(out).__name__}, not a tensor (an image)")
    return out.detach().float().cpu().numpy()


def _image_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Per-sample output shape -> (C, H, W), or None if it is not an image."""
    if len(shape) == 3:
        c, h, w = shape
        if c > 4 and w in (1, 3, 4) and h > 4:
            return (w, c, h)  # channels last: (H, W, C)
        return shape
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 1:
        p = shape[0]
        for c in (1, 3):
            side = int(round((p / c) ** 0.5))
            if side > 1 and c * side * side == p:
                return (c, side, side)
    return None


def _to_chw(batch: np.ndarray) -> np.ndarray:
    """(N, ...) decoder output -> (N, C, H, W)."""
    per = tuple(batch.shape[1:])
    chw = _image_shape(per)
    if chw is None:
        raise SamplingError(
            f"the decoder's output has shape {per} per latent: expected an image "
            "(C, H, W), (H, W) or a flat square image"
        )
    if len(per) == 3 and chw != per:  # channels last
        return np.moveaxis(batch, -1, 1)
    return batch.reshape(len(batch), *chw)


def check_decoder(decoder: LoadedDecoder | Any, dim: int, *, layer: str | None = None) -> tuple:
    """Run the decoder on one zero latent of size ``dim``; return its per-latent image shape
    as (C, H, W). A decoder that does not take latents of that size raises SamplingError
    naming both sizes ("decoder expects latents of size 64 but layer encoder has 32")."""
    dec = _as_loaded(decoder)
    dim = int(dim)
    what = f"layer {layer} has {dim}" if layer else f"the latents have size {dim}"
    try:
        out = _run(dec, np.zeros((1, dim), np.float32))
    except SamplingError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's model can fail in any way
        expected = _expected_size(dec.module, str(e))
        if expected is not None and expected != dim:
            raise SamplingError(f"decoder expects latents of size {expected} but {what}") from None
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise SamplingError(
            f"the decoder failed on a latent of size {dim} ({what}): {first[:200]}"
        ) from None
    if out.ndim < 2 or out.shape[0] != 1:
        raise SamplingError(
            f"the decoder returned shape {tuple(out.shape)} for one latent: expected a batch "
            "of one image"
        )
    chw = _to_chw(out).shape[1:]
    if chw[0] < 1 or chw[1] < 1 or chw[2] < 1:
        raise SamplingError(f"the decoder returned an empty image of shape {tuple(out.shape)}")
    return tuple(int(s) for s in chw)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float -> (N, C', H, W) uint8 with C' = 1 or 3 (more channels: first 3;
    two: the first). Values in [0, 1] map linearly, [-1, 1] likewise, any other range is
    stretched per image (min -> 0, max -> 255). NaN/Inf pixels become 0."""
    a = np.asarray(images, dtype=np.float64)
    a = a[:, :3] if a.shape[1] >= 3 else a[:, :1]
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        scaled = a
    elif lo >= -1.0 and hi <= 1.0:
        scaled = (a + 1.0) / 2.0
    else:
        flat = a.reshape(len(a), -1)
        mn = flat.min(axis=1)[:, None, None, None]
        span = (flat.max(axis=1) - flat.min(axis=1))[:, None, None, None]
        scaled = np.where(span > 0, (a - mn) / np.where(span > 0, span, 1.0), 0.5)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def png_bytes(img: np.ndarray, size: int | None = THUMB_SIZE) -> bytes:
    """(C, H, W) uint8 with C = 1 or 3 -> PNG bytes; the longest side becomes ``size``
    (NEAREST when enlarging, so pixels stay crisp; LANCZOS when reducing)."""
    from latentmap.pipeline.images import thumbnail_size
    from PIL import Image

    im = (
        Image.fromarray(img[0], "L")
        if img.shape[0] == 1
        else Image.fromarray(np.ascontiguousarray(np.moveaxis(img, 0, -1)), "RGB")
    )
    if size:
        th, tw = thumbnail_size(img.shape[1], img.shape[2], int(size))
        if (th, tw) != img.shape[1:]:
            grow = th >= img.shape[1] and tw >= img.shape[2]
            im = im.resize((tw, th), Image.Resampling.NEAREST if grow else Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def decode_images(
    decoder: LoadedDecoder | Any,
    latents: np.ndarray,
    *,
    size: int | None = THUMB_SIZE,
    batch_size: int = 256,
) -> list[bytes]:
    """PNG thumbnail bytes of the decoder's image for each latent (see :func:`to_uint8` for
    ranges and channels; ``size`` is the longest side, None keeps the decoder's size)."""
    dec = _as_loaded(decoder)
    Z = np.asarray(latents, dtype=np.float32)
    if Z.ndim == 1:
        Z = Z[None, :]
    if Z.ndim != 2:
        raise SamplingError(f"latents must be an (n, D) array, got shape {Z.shape}")
    if not np.isfinite(Z).all():
        raise SamplingError("latents contain NaN/Inf: they cannot be decoded")
    if len(Z) == 0:
        return []
    check_decoder(dec, Z.shape[1])
    out: list[bytes] = []
    for start in range(0, len(Z), batch_size):
        imgs = to_uint8(_to_chw(_run(dec, Z[start : start + batch_size])))
        out.extend(png_bytes(im, size) for im in imgs)
    return out


# --------------------------------------------------------------------------- demo decoder


def _demo_module(dim: int, side: int, mean: np.ndarray, std: np.ndarray):
    import torch
    from torch import nn

    class DemoMLPDecoder(nn.Module):
        """Latent (standardised with the training latents' mean / std) -> (1, side, side)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mu", torch.from_numpy(mean.astype(np.float32)))
            self.register_buffer("sd", torch.from_numpy(std.astype(np.float32)))
            self.side = side
            self.net = nn.Sequential(
                nn.Linear(dim, 128),
                nn.ReLU(),
                nn.Linear(128, 256),
                nn.ReLU(),
                nn.Linear(256, side * side),
                nn.Sigmoid(),
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            x = self.net((z - self.mu) / self.sd)
            return x.reshape(z.shape[0], 1, self.side, self.side)

    return DemoMLPDecoder()


def _demo_images(store: Store, ds_id: str, rows: np.ndarray, side: int) -> np.ndarray:
    """(len(rows), side, side) float32 in [0, 1]: the dataset's source image files when they
    are there, else its thumbnails, as greyscale, resized to side x side."""
    from PIL import Image

    m = store.manifest(ds_id)
    meta = store.metadata(ds_id)
    src = m.get("source", {})
    root = Path(src.get("path", "")) if src.get("kind") == "folder" else None
    ids = meta["id"].astype(str).tolist() if "id" in meta.columns else None
    out = np.empty((len(rows), side, side), np.float32)
    for i, r in enumerate(rows):
        path = root / ids[r] if root is not None and ids is not None else None
        if path is None or not path.is_file():
            path = store.thumbnail_path(ds_id, int(r))
        if path is None:
            raise SamplingError(
                f"item {int(r)} of dataset {ds_id} has neither its source image nor a "
                "thumbnail to train a decoder on"
            )
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (side, side):
                im = im.resize((side, side), Image.Resampling.BOX)
            out[i] = np.asarray(im, dtype=np.float32) / 255.0
    return out


def demo_decoder_path(store: Store, ds_id: str, layer: str, epochs: int, seed: int) -> Path:
    name = f"{ds_id}-{safe_name(layer)}-e{int(epochs)}-s{int(seed)}-v{DECODER_VERSION}.pt"
    return store.root / "decoders" / name


def train_demo_decoder(
    store: Store,
    ds_id: str,
    layer: str = "encoder",
    *,
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
) -> Path:
    """Train a small MLP decoder from a layer's latents to the dataset's images (8 x 8
    greyscale, the digits demo) and save it as TorchScript under ``<cache>/decoders/``.

    Deterministic for a seed; a second call returns the saved file at once. Items with
    NaN/Inf latents are left out. Training statistics (loss, seconds) are written next to it
    as JSON. About 2-3 s on two CPU cores for the 1,797 digits.
    """
    import torch
    from latentmap.pipeline.sampling import _layer_vectors
    from latentmap.pipeline.store import file_lock

    X = _layer_vectors(store, ds_id, layer)
    epochs = int(epochs)
    if epochs < 1:
        raise SamplingError(f"epochs must be at least 1, got {epochs}")
    path = demo_decoder_path(store, ds_id, layer, epochs, seed)
    if path.is_file():
        return path
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            return path
        t0 = time.perf_counter()
        valid = store.valid_mask(ds_id, layer).astype(bool)
        rows = np.flatnonzero(valid)
        if len(rows) < 2:
            raise SamplingError(f"layer {layer} has fewer than 2 items with finite latents")
        Z = np.asarray(X[rows], dtype=np.float32)
        imgs = _demo_images(store, ds_id, rows, DEMO_IMAGE_SIZE)
        mean, std = Z.mean(0), Z.std(0)
        std = np.where(std > 1e-6, std, 1.0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: one thread is faster than two fighting
        try:
            torch.manual_seed(seed)
            g = torch.Generator().manual_seed(seed)
            model = _demo_module(Z.shape[1], DEMO_IMAGE_SIZE, mean, std)
            z = torch.from_numpy(Z)
            y = torch.from_numpy(imgs[:, None])
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            loss_fn = torch.nn.BCELoss()
            model.train()
            loss = torch.tensor(float("nan"))
            for _ in range(epochs):
                perm = torch.randperm(len(z), generator=g)
                for i in range(0, len(z), 128):
                    idx = perm[i : i + 128]
                    opt.zero_grad()
                    loss = loss_fn(model(z[idx]), y[idx])
                    loss.backward()
                    opt.step()
            model.eval()
            with torch.inference_mode():
                mse = float(((model(z) - y) ** 2).mean())
            scripted = torch.jit.script(model)
        finally:
            torch.set_num_threads(threads)
        with atomic_path(path) as tmp:
            scripted.save(str(tmp))
        seconds = time.perf_counter() - t0
        save_json(
            path.with_suffix(".json"),
            {
                "dataset": ds_id,
                "layer": layer,
                "epochs": epochs,
                "seed": seed,
                "train_items": int(len(rows)),
                "final_batch_bce": float(loss.detach()),
                "mse": mse,
                "seconds": seconds,
            },
        )
        log.info("demo decoder %s/%s trained in %.1f s (mse %.4f)", ds_id, layer, seconds, mse)
    return path
