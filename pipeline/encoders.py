"""Models that turn items into latents: loading, forward hooks on named layers, pooling.

A model spec is one of:
- ``pixels``: built-in; every image resized to one size and flattened.
- ``demo-cnn``: built-in; the digits CNN of the embedded demo (``pipeline.demo``).
- ``path/to/model.pt`` (or ``.ts``/``.pth`` holding a TorchScript archive): TorchScript.
- ``path/to/file.py:Class`` or ``package.module:Class``: a class built with ``--model-kwargs``
  and loaded from a state-dict checkpoint (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from latentmap.pipeline.store import file_digest

log = logging.getLogger(__name__)

OUTPUT = "output"  # pseudo layer name: the model's own output
BUILTINS = ("pixels", "demo-cnn")
_POOL_RE = re.compile(r"^(mean|max|flatten|p(\d{1,2}(\.\d+)?|100))$")


class EncoderError(ValueError):
    """A model that cannot be loaded or run; the message says what to change."""


# --------------------------------------------------------------------------- pooling


def parse_pool(pool: str) -> str:
    pool = str(pool).strip().lower()
    if not _POOL_RE.match(pool):
        raise EncoderError(
            f"unknown pooling {pool!r}: use mean, max, flatten or a percentile such as p90"
        )
    return pool


def pool_tensor(t, how: str):
    """(N, ...) tensor -> (N, D). Dim 1 is channels; all later dims are pooled (or flattened)."""
    import torch

    if t.ndim == 1:
        return t.reshape(-1, 1)
    if t.ndim == 2:
        return t
    if how == "flatten":
        return t.reshape(t.shape[0], -1)
    flat = t.reshape(t.shape[0], t.shape[1], -1)
    if how == "mean":
        return flat.mean(dim=2)
    if how == "max":
        return flat.amax(dim=2)
    q = float(how[1:]) / 100.0
    return torch.quantile(flat.float(), q, dim=2)


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """Per-item transform applied in DataLoader workers (must pickle)."""

    size: tuple[int, int] | None = None  # (H, W); None = first image's size
    channels: int | None = None  # bands fed to the model; None = first image's count
    bands: tuple[int, ...] | None = None  # which bands of the file, before anything else
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "channels": self.channels,
            "bands": self.bands,
            "mean": self.mean,
            "std": self.std,
        }

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        from latentmap.pipeline.images import resize_chw

        if self.bands is not None:
            if max(self.bands) >= arr.shape[0]:
                raise ValueError(
                    f"has {arr.shape[0]} band(s); --bands asks for band {max(self.bands)}"
                )
            arr = arr[list(self.bands)]
        if self.channels is not None and arr.shape[0] != self.channels:
            if self.channels == 1:
                arr = arr.mean(axis=0, keepdims=True)
            elif arr.shape[0] == 1:
                arr = np.repeat(arr, self.channels, axis=0)
            else:
                raise ValueError(f"has {arr.shape[0]} bands, the model takes {self.channels}")
        if self.size is not None and tuple(arr.shape[1:]) != tuple(self.size):
            arr = resize_chw(arr, tuple(self.size))
        arr = arr.astype(np.float32, copy=False)
        if self.mean is not None:
            arr = arr - np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        if self.std is not None:
            arr = arr / np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray(arr, dtype=np.float32)


# --------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    module: Any  # torch.nn.Module
    spec: str
    fingerprint: str
    preprocess: Preprocess
    kind: str  # builtin | torchscript | class
    layer_names: list[str] = field(default_factory=list)
    default_layers: list[str] = field(default_factory=lambda: [OUTPUT])

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "fingerprint": self.fingerprint}


def _flatten_module():
    import torch

    class PixelsModel(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)

    return PixelsModel()


def _torchscript_like(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _import_class(target: str):
    """`file.py:Class` or `package.module:Class` -> the class object."""
    mod_part, _, cls_name = target.rpartition(":")
    if not mod_part or not cls_name:
        raise EncoderError(f"model {target!r}: expected file.py:Class or package.module:Class")
    if mod_part.endswith(".py"):
        path = Path(mod_part).expanduser().resolve()
        if not path.is_file():
            raise EncoderError(f"model file not found: {mod_part}")
        name = "latentmap_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise EncoderError(f"cannot import {mod_part}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # user code: any error is reported, not raised as a traceback
            sys.modules.pop(name, None)
            raise EncoderError(f"importing {mod_part} failed: {type(e).__name__}: {e}") from None
        finally:
            if sys.path and sys.path[0] == str(path.parent):
                sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(mod_part)
        except ImportError as e:
            raise EncoderError(f"cannot import module {mod_part!r}: {e}") from None
    try:
        return getattr(module, cls_name)
    except AttributeError:
        names = sorted(n for n in dir(module) if not n.startswith("_") and n[:1].isupper())
        raise EncoderError(
            f"{mod_part} has no class {cls_name!r}; it defines: {', '.join(names) or 'nothing'}"
        ) from None


def _unwrap_state_dict(obj: Any) -> dict:
    import torch

    if isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict", "model", "net", "weights"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EncoderError(
            "checkpoint does not hold a state dict (a mapping of parameter names to tensors)"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_checkpoint(path: str | Path, *, trust: bool = False) -> Any:
    import pickle

    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise EncoderError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust:
            raise EncoderError(
                f"checkpoint {path.name} is a pickled Python object, not plain weights; "
                "loading it would run code stored in the file. Save a state dict "
                "(torch.save(model.state_dict(), f)), or pass --trust-checkpoint if you trust "
                f"its author. ({str(e).splitlines()[0][:160]})"
            ) from None
        log.warning("loading %s with weights_only=False (--trust-checkpoint)", path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise EncoderError(
            f"cannot read checkpoint {path.name}: {str(e).splitlines()[0]}"
        ) from None


def _load_state(model, sd: dict, what: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch (checkpoint vs model): {_short(wrong)}")
        raise EncoderError(f"the checkpoint does not fit {what}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def _short(items: list[str], n: int = 6) -> str:
    head = ", ".join(items[:n])
    return head + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_model(
    spec: str,
    checkpoint: str | Path | None = None,
    kwargs: dict[str, Any] | str | None = None,
    *,
    trust_checkpoint: bool = False,
    image_size: int | None = None,
    bands: tuple[int, ...] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    demo_weights: Callable[[], Path] | None = None,
) -> LoadedModel:
    """Build the model named by ``spec`` in eval mode on the CPU."""
    import torch

    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs) if kwargs.strip() else {}
        except ValueError as e:
            raise EncoderError(f"--model-kwargs is not valid JSON: {e}") from None
    kwargs = dict(kwargs or {})
    if not isinstance(kwargs, dict):
        raise EncoderError("--model-kwargs must be a JSON object, e.g. '{\"dim\": 64}'")
    size = (image_size, image_size) if image_size else None
    norm = {"bands": bands, "mean": mean, "std": std}

    if spec == "pixels":
        module = _flatten_module()
        pre = Preprocess(size=size or (32, 32), **norm)
        fp = hashlib.sha256(json.dumps(pre.describe()).encode()).hexdigest()
        return _finish(module, spec, "builtin", fp, pre)

    if spec == "demo-cnn":
        from latentmap.pipeline.demo import DigitsCNN

        module = DigitsCNN()
        ckpt = Path(checkpoint) if checkpoint else (demo_weights() if demo_weights else None)
        if ckpt is None:
            raise EncoderError("demo-cnn needs its trained weights (run the demo once)")
        _load_state(module, _unwrap_state_dict(load_checkpoint(ckpt)), "DigitsCNN")
        pre = Preprocess(size=(8, 8), channels=1, **norm)
        fp = file_digest(ckpt)
        return _finish(module, spec, "builtin", fp, pre, default=["features", "encoder", "head"])

    if ":" in spec and not Path(spec).is_file():
        cls = _import_class(spec)
        torch.manual_seed(0)  # without a checkpoint, random weights are at least reproducible
        try:
            module = cls(**kwargs)
        except TypeError as e:
            raise EncoderError(f"cannot build {spec} with kwargs {kwargs}: {e}") from None
        if not isinstance(module, torch.nn.Module):
            raise EncoderError(f"{spec} is not a torch.nn.Module")
        fp_parts = [spec, json.dumps(kwargs, sort_keys=True)]
        mod_file = spec.rpartition(":")[0]
        if mod_file.endswith(".py"):
            fp_parts.append(file_digest(Path(mod_file).expanduser()))
        if checkpoint:
            _load_state(
                module,
                _unwrap_state_dict(load_checkpoint(checkpoint, trust=trust_checkpoint)),
                cls.__name__,
            )
            fp_parts.append(file_digest(checkpoint))
        else:
            log.warning("%s has no --checkpoint: using its random (seeded) initial weights", spec)
        fp = hashlib.sha256("|".join(fp_parts).encode()).hexdigest()
        return _finish(module, spec, "class", fp, Preprocess(size=size, **norm))

    path = Path(spec).expanduser()
    if not path.is_file():
        raise EncoderError(
            f"unknown model {spec!r}: give a built-in ({', '.join(BUILTINS)}), a TorchScript file, "
            "file.py:Class or package.module:Class"
        )
    if _torchscript_like(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as e:
            raise EncoderError(
                f"cannot load TorchScript {path.name}: {str(e).splitlines()[0]}"
            ) from None
        return _finish(
            module, spec, "torchscript", file_digest(path), Preprocess(size=size, **norm)
        )
    obj = load_checkpoint(path, trust=trust_checkpoint)
    if isinstance(obj, torch.nn.Module):
        return _finish(obj, spec, "pickled", file_digest(path), Preprocess(size=size, **norm))
    raise EncoderError(
        f"{path.name} holds weights but no architecture: use --model file.py:Class "
        f"--checkpoint {path.name}, or export the model with torch.jit.script/trace"
    )


def _finish(module, spec, kind, fp, pre, default=None) -> LoadedModel:
    module.eval()
    names = [n for n, _ in module.named_modules() if n]
    return LoadedModel(
        module=module,
        spec=spec,
        fingerprint=fp,
        preprocess=pre,
        kind=kind,
        layer_names=names,
        default_layers=default or [OUTPUT],
    )


def resolve_layers(model: LoadedModel, layers: list[str] | tuple[str, ...] | None) -> list[str]:
    layers = [str(x) for x in (layers or model.default_layers)]
    if len(set(layers)) != len(layers):
        raise EncoderError(f"layer listed twice: {layers}")
    unknown = [x for x in layers if x != OUTPUT and x not in model.layer_names]
    if unknown:
        if model.kind == "torchscript":
            raise EncoderError(
                f"layer {unknown[0]!r}: a TorchScript model runs as one compiled graph, so only its "
                "output can be captured here; export the layer you want as an output, or use "
                "file.py:Class with a state dict"
            )
        raise EncoderError(
            f"unknown layer {unknown[0]!r}; the model's modules are: "
            + (", ".join(model.layer_names[:80]) or "(none)")
            + (" ..." if len(model.layer_names) > 80 else "")
            + f" (or '{OUTPUT}')"
        )
    if model.kind == "torchscript" and layers != [OUTPUT]:
        raise EncoderError(
            "a TorchScript model runs as one compiled graph, so only its output can be captured; "
            "use --layer output, or file.py:Class with a state dict for inner layers"
        )
    return layers


def _first_tensor(out: Any):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
        return None
    for attr in ("last_hidden_state", "logits", "latent_dist", "sample"):
        if hasattr(out, attr):
            return _first_tensor(getattr(out, attr))
    return None


class Hooked:
    """Run a model and capture named layers' outputs (forward hooks)."""

    def __init__(self, model: LoadedModel, layers: list[str]):
        self.model = model
        self.layers = layers
        self._captured: dict[str, Any] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Hooked:
        modules = dict(self.model.module.named_modules())
        for name in self.layers:
            if name == OUTPUT:
                continue
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def fn(_module, _inputs, output):
            self._captured[name] = _first_tensor(output)

        return fn

    def __call__(self, x) -> dict[str, Any]:
        self._captured = {}
        out = self.model.module(x)
        result = {}
        for name in self.layers:
            t = _first_tensor(out) if name == OUTPUT else self._captured.get(name)
            if t is None:
                raise EncoderError(
                    f"layer {name!r} produced no tensor (was it called in forward()?)"
                )
            result[name] = t
        return result
