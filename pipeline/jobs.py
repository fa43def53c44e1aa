"""Background-able pipeline steps. Each one's result is a store entry any process can pick up.

``encode(store, request)`` runs a source through a model into the store. It writes one part
file per completed batch under ``datasets/<id>/parts/``; rerunning the same request after a
crash, Ctrl-C or cancel resumes from the last completed batch. When every batch is done the
parts are concatenated into the dataset's vectors, metadata and thumbnails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from latentmap.pipeline.datasets import finalize_layer, finite_rows, write_dataset
from latentmap.pipeline.encoders import (
    EncoderError,
    Hooked,
    LoadedModel,
    load_model,
    parse_pool,
    pool_tensor,
    resolve_layers,
)
from latentmap.pipeline.store import Store, atomic_path, key_hash, save_bytes

log = logging.getLogger(__name__)

ENCODE_VERSION = 1
Progress = Callable[[int, int, str], None]


class EncodeError(ValueError):
    """The encode cannot run; the message says why and what to change."""


class EncodeCancelled(EncodeError):
    pass


@dataclass
class EncodeRequest:
    source: str
    model: str = "pixels"
    checkpoint: str | None = None
    model_kwargs: dict[str, Any] | str | None = None
    layers: list[str] | tuple[str, ...] = ()
    pool: str = "mean"
    labels: str | None = None
    batch_size: int = 64
    num_samples: int | None = None
    device: str = "auto"
    name: str | None = None
    image_size: int | None = None
    bands: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    predictions: str | None = None  # layer whose argmax is the predicted class
    trust_checkpoint: bool = False
    workers: int | None = None  # DataLoader workers; None = auto
    thumb_size: int = 96
    rgb: tuple[int, int, int] = (0, 1, 2)
    max_spatial_bytes: int = 2 * 1024**3
    seed: int = 0
    draw_bboxes: bool = False  # draw the metadata's boxes on the images the model sees
    group_captures: bool = False  # single-band files of one capture -> one multi-band item


@dataclass
class EncodeResult:
    ds_id: str
    n_encoded: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    reused: bool = False
    seconds: float = 0.0
    # layer -> reduce.Moments of its vectors (fresh encodes of image folders): the PCA map
    # at the end of the job is then one pass over the rows
    pca_moments: dict[str, Any] | None = field(default=None, repr=False, compare=False)


# --------------------------------------------------------------------------- helpers


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncodeError("--device cuda was asked for, but no CUDA GPU is available here")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise EncodeError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def _auto_workers(n: int) -> int:
    if n < 512:
        return 0  # starting workers costs more than it saves
    # the main process mostly waits on decoding: one worker per core
    return max(1, min(8, os.cpu_count() or 1))


class ItemDataset:
    """Map-style dataset for torch's DataLoader: (index, model input, thumbnail, error,
    (boxes clipped, boxes dropped)).

    ``boxes`` (a :class:`~latentmap.pipeline.bboxes.BoxSet`): each item's boxes are drawn on
    its thumbnail, and with ``draw_input`` also on the image before it reaches the model.
    """

    def __init__(self, source, preprocess, rgb, thumb_size, boxes=None, draw_input=False):
        self.source = source
        self.preprocess = preprocess
        self.rgb = rgb
        self.thumb_size = thumb_size
        self.boxes = boxes
        self.draw_input = draw_input

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        from latentmap.pipeline.bboxes import draw_boxes, draw_on_png, to_pixels
        from latentmap.pipeline.images import make_thumbnail

        try:
            arr = self.source.load(i)
            boxes, clip = [], (0, 0)
            if self.boxes is not None and self.boxes.boxes[i]:
                h, w = arr.shape[-2:]
                boxes, clipped, dropped = to_pixels(
                    self.boxes.boxes[i], w, h, normalized=self.boxes.normalized
                )
                clip = (clipped, dropped)
                if self.draw_input and boxes:
                    arr = draw_boxes(arr, boxes)
            x = self.preprocess(arr)
            thumb = make_thumbnail(arr, rgb=self.rgb, size=self.thumb_size)
            if boxes:
                h, w = arr.shape[-2:]
                thumb = draw_on_png(thumb, boxes, normalized=False, source_size=(w, h))[0]
            return i, x, thumb, None, clip
        except (ValueError, OSError, MemoryError) as e:  # ImageReadError is a ValueError
            return i, None, None, str(e).splitlines()[0][:200] or type(e).__name__, (0, 0)


def autocast_for(device: str):
    """The encode's mixed precision: bf16 (fp16 where bf16 is unsupported) on CUDA, none on
    the CPU."""
    import torch

    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast(
        "cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    )


def collate_list(batch):
    """A loader batch: (items, inputs). ``inputs`` stacks the readable items' model inputs into
    one tensor here, in the loader worker (the main process then only moves it; with CUDA the
    loader's pin-memory thread pins it, so the copy to the GPU is asynchronous), and their
    arrays are dropped from ``items`` so that they cross the worker queue once. ``inputs`` is
    None when no item is readable, or when shapes differ (the items keep their arrays, and the
    encode reports the shapes)."""
    import torch

    xs = [x for _i, x, _th, err, _clip in batch if err is None]
    if not xs or len({x.shape for x in xs}) > 1:
        return batch, None
    inputs = torch.from_numpy(np.stack(xs))
    return [(i, None, th, err, clip) for i, _x, th, err, clip in batch], inputs


def _first_readable(source, preprocess) -> np.ndarray:
    """The first item that loads, to fix the model's input size and band count."""
    errors = []
    for i in range(len(source)):
        try:
            return source.load(i)
        except (ValueError, OSError) as e:
            errors.append(f"{source.items[i]}: {e}")
            if len(errors) >= 2000:
                break
    detail = "; ".join(errors[:3])
    raise EncodeError(f"none of the {len(source)} files could be read ({detail})")


# --------------------------------------------------------------------------- encode


def encode(
    store: Store,
    req: EncodeRequest,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> EncodeResult:
    """Encode ``req.source`` with ``req.model`` into the store (resuming if interrupted).

    Logged as an ``encode`` job (``pipeline.joblog``): start, progress, end or failure."""
    from latentmap.pipeline.joblog import job

    with job(store.root, "encode", detail=f"{req.model}: {req.source}") as j:

        def tracked(done: int, total: int, message: str) -> None:
            j.progress(done / total if total else None, f"{done:,} / {total:,} · {message}")
            if progress is not None:
                progress(done, total, message)

        result = _encode(store, req, progress=tracked, should_cancel=should_cancel)
        j.dataset = result.ds_id
        _pca_maps(store, result.ds_id, progress, result.pca_moments)
        return result


def _pca_maps(store: Store, ds_id: str, progress: Progress | None, moments=None) -> None:
    """Every layer's PCA map as the last step of the encode job, so that the map is there the
    moment the encode finishes (seconds at 1M rows). Search indexes, t-SNE and UMAP come later
    in their own background job (``pipeline.precompute``), never delaying the dataset."""
    from latentmap.pipeline.precompute import pca_maps

    def step(fraction: float, message: str) -> None:
        if progress is not None:
            progress(int(1000 * fraction), 1000, message)

    pca_maps(store, ds_id, step, moments)


def _encode(
    store: Store,
    req: EncodeRequest,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> EncodeResult:
    from latentmap.pipeline.sources import EmbeddingsSource, SourceError, open_source

    t0 = time.perf_counter()
    if req.batch_size < 1:
        raise EncodeError(f"batch size must be at least 1, got {req.batch_size}")
    if req.num_samples is not None and req.num_samples < 1:
        raise EncodeError(f"--num-samples must be at least 1, got {req.num_samples}")
    pool = parse_pool(req.pool)
    try:
        src = open_source(
            req.source,
            labels=req.labels,
            num_samples=req.num_samples,
            seed=req.seed,
            group_captures=req.group_captures,
        )
    except SourceError as e:
        raise EncodeError(str(e)) from None
    if isinstance(src, EmbeddingsSource):
        if req.draw_bboxes:
            raise EncodeError(
                "--draw-bboxes draws boxes on images before encoding: give an image folder, "
                f"not an embeddings file ({Path(req.source).name})"
            )
        return _import_embeddings(store, src, req, pool, t0)
    boxset = _item_boxes(src, req)

    try:
        model = load_model(
            req.model,
            req.checkpoint,
            req.model_kwargs,
            trust_checkpoint=req.trust_checkpoint,
            image_size=req.image_size,
            bands=tuple(req.bands) if req.bands else None,
            mean=tuple(req.mean) if req.mean else None,
            std=tuple(req.std) if req.std else None,
            demo_weights=lambda: _demo_weights(store),
        )
        layers = resolve_layers(model, req.layers)
        if req.predictions and req.predictions not in layers:
            layers = [*layers, req.predictions]
            resolve_layers(model, layers)
    except EncoderError as e:
        raise EncodeError(str(e)) from None

    pre = model.preprocess
    first = _first_readable(src, pre)  # one image: the band count, and the input size if unset
    n_bands = int(first.shape[0])
    if pre.size is None or pre.channels is None:
        if pre.bands is not None:
            first = first[list(pre.bands)] if max(pre.bands) < first.shape[0] else first
        pre = replace(
            pre,
            size=pre.size or tuple(int(s) for s in first.shape[1:]),
            channels=pre.channels or int(first.shape[0]),
        )
    key = {
        "kind": "dataset",
        "version": ENCODE_VERSION,
        "source": src.fingerprint(),
        "model": model.fingerprint,
        "layers": layers,
        "pool": pool,
        "preprocess": pre.describe(),
        "predictions": req.predictions,
        "thumb": [list(req.rgb), req.thumb_size],
    }
    if boxset is not None and boxset.n_boxes:
        key["bboxes"] = {**boxset.describe(), "on_input": bool(req.draw_bboxes)}
    ds_id = key_hash(key, n=16)
    # one encode per dataset at a time, across processes and machines sharing the cache: a
    # second request for the same job (another user, a redelivered Celery message) waits
    # here and then reuses the result instead of encoding it again
    from latentmap.pipeline.store import file_lock

    with file_lock(store.root / "datasets" / f".{ds_id}.encode.lock"):
        if store.has_dataset(ds_id):
            m = store.manifest(ds_id)
            return EncodeResult(
                ds_id,
                int(m["n"]),
                [tuple(s) for s in m.get("skipped", [])],
                ["already encoded: reusing the cached dataset"],
                reused=True,
            )
        job = _EncodeJob(store, ds_id, src, replace(model, preprocess=pre), layers, pool, req)
        job.n_bands = n_bands
        job.boxset = boxset if boxset is not None and boxset.n_boxes else None
        return job.run(key, progress=progress, should_cancel=should_cancel, t0=t0)


def _item_boxes(src, req: EncodeRequest):
    """The items' bounding boxes from their metadata (None when it has none); with
    ``req.draw_bboxes`` a dataset without readable boxes is an error."""
    from latentmap.pipeline.bboxes import BBoxError, find_boxes, require_boxes

    try:
        if req.draw_bboxes:
            return require_boxes(src.metadata)
        return find_boxes(src.metadata)
    except BBoxError as e:
        raise EncodeError(f"--draw-bboxes: {e}" if req.draw_bboxes else str(e)) from None


def _demo_weights(store: Store) -> Path:
    from latentmap.pipeline.demo import ensure_demo_weights

    return ensure_demo_weights(store)


class _EncodeJob:
    def __init__(self, store, ds_id, src, model: LoadedModel, layers, pool, req):
        self.store = store
        self.ds_id = ds_id
        self.src = src
        self.model = model
        self.layers = layers
        self.pool = pool
        self.req = req
        self.dir = store.dataset_dir(ds_id)
        self.parts = self.dir / "parts"
        self.thumbs = store.thumb_dir(ds_id)
        self.boxset = None  # BoxSet drawn on thumbnails (and inputs with req.draw_bboxes)
        self.n_bands: int | None = None  # bands of the source images (for the band picker)
        # running moments of each layer's pooled vectors (reduce.Moments), so that the PCA map
        # costs one projection pass when the last batch is done; parts written by an earlier
        # (interrupted) run are added when the parts are gathered
        self.moments: dict[str, Any] = {}
        self.in_moments: set[int] = set()

    # ----- state
    def _start_manifest(self, key: dict) -> dict:
        try:
            m = self.store.manifest(self.ds_id)
            if m.get("status") in ("encoding", "failed", "cancelled"):
                log.info("resuming encode of %s", self.ds_id)
                self.batch_size = int(m["encode"]["batch_size"])
                return m
        except Exception:  # noqa: BLE001 - an unreadable manifest means starting over
            shutil.rmtree(self.dir, ignore_errors=True)
        self.batch_size = int(self.req.batch_size)
        name = self.req.name or _default_name(self.req.source)
        if self.req.draw_bboxes and not self.req.name:
            name += " (boxes drawn)"
        m = {
            "name": name,
            "status": "encoding",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": {
                "kind": "folder",
                "path": str(Path(self.req.source).expanduser().resolve()),
                "labels": self.req.labels,
                "n_items": len(self.src),
                "bands": self.n_bands,
                # how the folder was opened: thumbnails can be regenerated from it
                "open": {
                    "labels": self.req.labels,
                    "num_samples": self.req.num_samples,
                    "seed": self.req.seed,
                    "group_captures": bool(self.req.group_captures),
                },
            },
            "model": {
                **self.model.describe(),
                "checkpoint": self.req.checkpoint,
                "kwargs": self.req.model_kwargs,
            },
            "key": key,
            "encode": {"batch_size": self.batch_size, "layers": self.layers, "pool": self.pool},
            "n": 0,
            "layers": {},
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store.write_manifest(self.ds_id, m)
        return m

    def _done_batches(self) -> set[int]:
        done = set()
        if not self.parts.is_dir():
            return done
        for p in self.parts.glob("*.npz"):
            try:
                with np.load(p, allow_pickle=False) as z:
                    z["idx"]  # noqa: B018 - reading proves the file is whole
                done.add(int(p.stem))
            except (OSError, ValueError, KeyError, EOFError):
                log.warning("dropping unreadable part %s", p.name)
                p.unlink(missing_ok=True)
        return done

    # ----- run
    def run(self, key, *, progress, should_cancel, t0) -> EncodeResult:
        import torch

        m = self._start_manifest(key)
        n = len(self.src)
        bs = self.batch_size
        batches = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
        done = self._done_batches()
        todo = [b for b in range(len(batches)) if b not in done]
        device = pick_device(self.req.device)
        self.model.module.to(device)
        state = m.get("encode_state", {})
        workers = self.req.workers if self.req.workers is not None else _auto_workers(n)
        loader = torch.utils.data.DataLoader(
            ItemDataset(
                self.src,
                self.model.preprocess,
                self.req.rgb,
                self.req.thumb_size,
                boxes=self.boxset,
                draw_input=self.req.draw_bboxes,
            ),
            batch_sampler=[batches[b] for b in todo],
            num_workers=workers,
            collate_fn=collate_list,
            pin_memory=device.startswith("cuda"),
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        n_done = sum(len(batches[b]) for b in done)
        if progress:
            progress(
                n_done,
                n,
                f"encoding {n} items with {self.model.spec}"
                + (
                    f" (resuming: {len(done)} of {len(batches)} batches already done)"
                    if done
                    else ""
                ),
            )
        with Hooked(self.model, self.layers) as hooked:
            for b, batch in zip(todo, loader, strict=True):
                if should_cancel and should_cancel():
                    self.store.update_manifest(self.ds_id, status="cancelled")
                    raise EncodeCancelled(
                        f"encode cancelled after {n_done} of {n} items; run it again to resume"
                    )
                state = self._encode_batch(b, batch, hooked, device, state)
                n_done += len(batch)
                if progress:
                    progress(n_done, n, f"batch {b + 1}/{len(batches)}")
        return self._finalize(state, progress, t0)

    def _forward(self, hooked, x, device):
        import torch

        try:
            with torch.inference_mode(), autocast_for(device):
                return {k: v.float() for k, v in hooked(x.to(device, non_blocking=True)).items()}
        except torch.cuda.OutOfMemoryError:
            if len(x) == 1:
                raise EncodeError("the GPU ran out of memory even at batch size 1") from None
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory at batch %d: halving", len(x))
            h = len(x) // 2
            a, b = self._forward(hooked, x[:h], device), self._forward(hooked, x[h:], device)
            return {k: torch.cat([a[k], b[k]]) for k in a}
        except EncoderError:
            raise
        except RuntimeError as e:
            raise EncodeError(
                f"the model failed on a batch of shape {tuple(x.shape)}: {str(e).splitlines()[0]}"
            ) from None

    def _encode_batch(self, b: int, batch, hooked, device, state: dict) -> dict:
        import torch

        batch, inputs = batch
        ok = [(i, x, th) for i, x, th, err, _clip in batch if err is None]
        errors = [(self.src.items[i], err) for i, _x, _th, err, _clip in batch if err is not None]
        arrays: dict[str, np.ndarray] = {"idx": np.array([i for i, _, _ in ok], dtype=np.int64)}
        if self.boxset is not None:
            clips = [clip for *_rest, clip in batch]
            arrays["boxes_clipped"] = np.array(
                [sum(c[0] for c in clips), sum(c[1] for c in clips)], dtype=np.int64
            )
        if ok:
            if inputs is None:
                shapes = {x.shape for _, x, _ in ok}
                raise EncodeError(f"inputs of different shapes in one batch: {sorted(shapes)}")
            outs = self._forward(hooked, inputs, device)
            if not state:
                state = self._init_state(outs)
            for li, layer in enumerate(self.layers):
                t = outs[layer]
                if t.shape[0] != len(ok):
                    raise EncodeError(
                        f"layer {layer!r} returned {t.shape[0]} rows for a batch of {len(ok)}"
                    )
                shape = list(t.shape[1:])
                if shape != state["shapes"][layer]:
                    raise EncodeError(
                        f"layer {layer!r} gave shape {state['shapes'][layer]} per item in the first "
                        f"batch but {shape} in batch {b + 1}: the model's output size must not "
                        "depend on the input (set --image-size so all images have one size)"
                    )
                arrays[f"v{li}"] = pool_tensor(t, self.pool).cpu().numpy().astype(np.float32)
                self._add_moments(layer, arrays[f"v{li}"])
                if state["spatial"].get(layer):
                    arrays[f"s{li}"] = t.cpu().numpy().astype(np.float32)
            if self.req.predictions:
                logits = pool_tensor(outs[self.req.predictions], "mean")
                probs = torch.softmax(logits.float(), dim=1)
                conf, pred = probs.max(dim=1)
                arrays["pred"] = pred.cpu().numpy().astype(np.int64)
                arrays["pred_score"] = conf.cpu().numpy().astype(np.float32)
            for i, _x, th in ok:
                save_bytes(self.thumbs / f"raw_{i}.png", th)
        arrays["errors"] = np.array(json.dumps(errors))
        self.parts.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.parts / f"{b:07d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        self.in_moments.add(b)
        return state

    def _add_moments(self, layer: str, v: np.ndarray) -> None:
        from latentmap.pipeline.reduce import Moments

        if v.ndim == 2:
            self.moments.setdefault(layer, Moments(v.shape[1])).add(v)

    def _init_state(self, outs) -> dict:
        n = len(self.src)
        shapes = {layer: list(outs[layer].shape[1:]) for layer in self.layers}
        spatial = {}
        for layer, shape in shapes.items():
            nbytes = 4 * n * int(np.prod(shape))
            spatial[layer] = (
                len(shape) == 3
                and self.pool != "flatten"
                and (nbytes <= self.req.max_spatial_bytes)
            )
        state = {"shapes": shapes, "spatial": spatial}
        self.store.update_manifest(self.ds_id, encode_state=state)
        return state

    def _finalize(self, state: dict, progress, t0) -> EncodeResult:

        parts = sorted(self.parts.glob("*.npz")) if self.parts.is_dir() else []
        idx_list, vecs, spat, preds, scores, skipped = [], {}, {}, [], [], []
        box_clip = np.zeros(2, dtype=np.int64)
        for p in parts:
            with np.load(p, allow_pickle=False) as z:
                idx_list.append(z["idx"])
                if "boxes_clipped" in z.files:
                    box_clip += z["boxes_clipped"]
                skipped.extend(tuple(e) for e in json.loads(str(z["errors"])))
                earlier_run = p.stem.isdigit() and int(p.stem) not in self.in_moments
                for li, layer in enumerate(self.layers):
                    if f"v{li}" in z.files:
                        vecs.setdefault(layer, []).append(z[f"v{li}"])
                        if earlier_run:
                            self._add_moments(layer, vecs[layer][-1])
                    if f"s{li}" in z.files:
                        spat.setdefault(layer, []).append(z[f"s{li}"])
                if "pred" in z.files:
                    preds.append(z["pred"])
                    scores.append(z["pred_score"])
        idx = np.concatenate(idx_list) if idx_list else np.zeros(0, np.int64)
        skipped = list(getattr(self.src, "skipped", [])) + skipped
        if len(idx) == 0:
            self.store.update_manifest(self.ds_id, status="failed", skipped=skipped)
            reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
            raise EncodeError(f"none of the {len(self.src)} items could be encoded ({reasons})")
        layers_info: dict[str, Any] = {}
        invalid_any = np.zeros(len(idx), dtype=bool)
        for layer in self.layers:
            v = np.concatenate(vecs[layer])
            info = finalize_layer(self.store, self.ds_id, layer, v)
            info["pool"] = self.pool
            shape = state["shapes"][layer]
            if len(shape) > 1:
                info["pooled_from"] = shape
            invalid_any |= ~finite_rows(v)
            if layer in spat:
                dest = self.store._layer_file(self.ds_id, layer, "spatial")
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_suffix(".tmp.npy")
                out = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(len(idx), *shape)
                )
                pos = 0
                for chunk in spat[layer]:
                    out[pos : pos + len(chunk)] = chunk
                    pos += len(chunk)
                out.flush()
                del out
                os.replace(tmp, dest)
                info["spatial_shape"] = shape
            layers_info[layer] = info
        meta = self.src.metadata.iloc[idx].reset_index(drop=True).copy()
        notices = list(getattr(self.src, "notices", []))
        if self.boxset is not None:
            from latentmap.pipeline.bboxes import clip_notice

            notices += self.boxset.notices
            where = "on the images and thumbnails" if self.req.draw_bboxes else "on thumbnails"
            notices.append(f"bounding boxes ({self.boxset.source}) drawn {where}")
            note = clip_notice(int(box_clip[0]), int(box_clip[1]))
            if note:
                notices.append(note)
        if preds:
            pred = np.concatenate(preds)
            meta["pred"], note = _name_predictions(pred, meta)
            meta["pred_score"] = np.concatenate(scores)
            if note:
                notices.append(note)
        meta["has_nan"] = invalid_any
        if invalid_any.any():
            notices.append(
                f"{int(invalid_any.sum())} items have NaN/Inf latents: flagged in column has_nan "
                "and left out of maps and neighbours"
            )
        self.store.write_metadata(self.ds_id, meta)
        from latentmap.pipeline.bands import ITEM_INDEX
        from latentmap.pipeline.store import save_npy

        save_npy(self.dir / ITEM_INDEX, np.asarray(idx, dtype=np.int64))  # row -> source item
        for row, item in enumerate(idx):
            raw = self.thumbs / f"raw_{item}.png"
            if raw.exists():
                os.replace(raw, self.thumbs / f"{row}.png")
        n_thumbs = sum(1 for _ in self.thumbs.glob("[0-9]*.png")) if self.thumbs.is_dir() else 0
        seconds = time.perf_counter() - t0
        self.store.update_manifest(
            self.ds_id,
            status="complete",
            n=len(idx),
            layers=layers_info,
            default_layer=self.layers[-1]
            if not self.req.predictions
            else ([x for x in self.layers if x != self.req.predictions] or self.layers)[-1],
            skipped=[list(s) for s in skipped],
            notices=notices,
            thumbnails=n_thumbs,
            label_column="label" if "label" in meta.columns else None,
            pred_column="pred" if preds else None,
            encode_seconds=round(seconds, 2),
        )
        shutil.rmtree(self.parts, ignore_errors=True)
        self.store.seal(self.ds_id)  # checksums of the array files, verified when read
        if progress:
            progress(
                len(self.src), len(self.src), f"encoded {len(idx)} items, skipped {len(skipped)}"
            )
        return EncodeResult(
            self.ds_id, len(idx), skipped, notices, seconds=seconds, pca_moments=self.moments
        )


def _name_predictions(pred: np.ndarray, meta) -> tuple[Any, str | None]:
    """Map class indices to label names (sorted, as torchvision's ImageFolder numbers them)."""
    if "label" not in meta.columns:
        return pred, None
    labels = meta["label"].dropna()
    classes = sorted(labels.unique().tolist(), key=lambda v: (str(type(v)), v))
    if pred.max(initial=0) < len(classes) and len(classes) > 1:
        arr = np.asarray(classes, dtype=object)[pred]
        return (
            arr.astype(type(classes[0])) if not isinstance(classes[0], str) else arr.astype(str)
        ), None
    return pred, (
        f"predictions are class indices: the model has {int(pred.max()) + 1}+ outputs "
        f"but the data has {len(classes)} labels"
    )


def _default_name(source: str) -> str:
    p = Path(source).expanduser()
    return p.stem if p.is_file() else (p.name or str(p))


def _import_embeddings(store: Store, src, req: EncodeRequest, pool: str, t0: float) -> EncodeResult:
    from latentmap.pipeline.bboxes import BBoxError, find_boxes

    key = {
        "kind": "dataset",
        "version": ENCODE_VERSION,
        "source": src.fingerprint(),
        "pool": pool,
        "layer": src.layer,
    }
    try:
        boxset = find_boxes(src.metadata) if src.thumbnails is not None else None
    except BBoxError as e:
        raise EncodeError(str(e)) from None
    if boxset is not None and boxset.n_boxes:
        key["bboxes"] = {**boxset.describe(), "on_input": False}
    else:
        boxset = None
    ds_id = key_hash(key, n=16)
    if store.has_dataset(ds_id):
        m = store.manifest(ds_id)
        return EncodeResult(ds_id, int(m["n"]), [], ["already imported: reusing"], reused=True)
    import torch

    v = np.asarray(src.vectors, dtype=np.float32)
    spatial = None
    if v.ndim > 2:
        if v.ndim == 4 and pool != "flatten" and v.nbytes <= req.max_spatial_bytes:
            spatial = {src.layer: v}
        pooled = pool_tensor(torch.from_numpy(v), pool).numpy()
    else:
        pooled = v
    notices = list(src.notices)
    thumbnails = src.thumbnails
    if boxset is not None and thumbnails is not None:
        from latentmap.pipeline.bboxes import draw_on_thumbnails

        thumbnails, box_notes = draw_on_thumbnails(thumbnails, boxset)
        notices.append(f"bounding boxes ({boxset.source}) drawn on thumbnails")
        notices += box_notes
    write_dataset(
        store,
        name=req.name or _default_name(req.source),
        vectors={src.layer: pooled},
        metadata=src.metadata,
        thumbnails=thumbnails,
        spatial=spatial,
        source={"kind": "embeddings", "path": str(Path(req.source).expanduser().resolve())},
        model={"spec": "precomputed"},
        ds_id=ds_id,
        extra={"notices": notices, "key": key},
    )
    if v.ndim > 2:
        store.update_manifest(
            ds_id,
            layers={
                src.layer: {
                    **store.manifest(ds_id)["layers"][src.layer],
                    "pool": pool,
                    "pooled_from": list(v.shape[1:]),
                }
            },
        )
    n = len(pooled)
    return EncodeResult(ds_id, n, [], notices, seconds=time.perf_counter() - t0)
