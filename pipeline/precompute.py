"""What is computed after an encode, before anyone asks for it.

In the encode job itself (``pca_maps``): every layer's PCA map (seconds even at 1M rows, through
the chunked covariance of ``reduce.pca_basis``), so the map is there the moment the encode
finishes.

Then, as a separate background job (``run``; ``launch`` starts it without waiting): the
nearest-neighbour index of every large layer (``pipeline.ann``), and the default layer's UMAP
map (with its cached kNN graph) and t-SNE map, each with the explorer's default parameters and
seed, so switching the map to them is a cache hit. Every step is a content-keyed cache entry:
a second run (or a user asking for the same map meanwhile: the store's per-key lock makes one
wait for the other) costs a lookup, and an interrupted run resumes at the missing steps.

``launch`` hands the job to the Celery workers when a Redis URL is configured (any worker
takes it), else to a detached ``latentmap precompute`` process on this machine, which
outlives the web request and is listed on the status page (``pipeline.joblog``).
``LATENTMAP_PRECOMPUTE`` picks the steps (``0`` turns the automatic launch off). No Dash here.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentmap.pipeline.store import Store

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
STEPS = ("index", "umap", "tsne")
_LABEL = {"index": "search index", "umap": "UMAP map", "tsne": "t-SNE map"}


def configured_steps() -> tuple[str, ...]:
    """The steps ``launch`` runs: ``LATENTMAP_PRECOMPUTE`` = 1 (default: all), 0 (none), or a
    comma-separated subset such as ``index,umap`` (e.g. to skip t-SNE: an estimated hour or
    more at 1M rows on 2 cores). Unknown names are ignored with a warning."""
    raw = os.environ.get("LATENTMAP_PRECOMPUTE", "1").strip().lower()
    if raw in ("", "1", "true", "yes", "on", "all"):
        return STEPS
    if raw in ("0", "false", "no", "off", "none"):
        return ()
    names = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [x for x in names if x not in STEPS]
    if bad:
        log.warning("LATENTMAP_PRECOMPUTE: unknown step(s) %s ignored", ", ".join(bad))
    return tuple(x for x in STEPS if x in names)


def base_layers(store: Store, ds_id: str) -> list[str]:
    """The dataset's stored layers (pooling variants made later are not precomputed)."""
    layers = store.manifest(ds_id).get("layers", {})
    return [name for name, info in layers.items() if not info.get("variant_of")]


def pca_maps(
    store: Store, ds_id: str, progress: Progress | None = None, moments: dict | None = None
) -> dict[str, float]:
    """Every layer's PCA map (cached); {layer: seconds}. Runs inside the encode job, which
    passes the ``reduce.Moments`` it gathered per layer (then each map is one pass)."""
    from latentmap.pipeline.reduce import projection

    out = {}
    layers = base_layers(store, ds_id)
    for i, layer in enumerate(layers):
        if progress is not None:
            progress(i / max(len(layers), 1), f"PCA map of {layer}")
        try:
            e = projection(store, ds_id, layer, "pca", pca_moments=(moments or {}).get(layer))
            out[layer] = float(e.info.get("seconds", 0.0))
        except (ValueError, MemoryError) as e:  # e.g. a layer with no finite row: the map
            log.warning("no PCA map of %s/%s yet: %s", ds_id, layer, e)  # says why when opened
    return out


def plan(store: Store, ds_id: str, steps: tuple[str, ...] = STEPS) -> list[dict[str, Any]]:
    """The steps still missing, in the order they run: indexes first (minutes; they make
    clicks fast at scale), then UMAP and t-SNE of the default layer."""
    from latentmap.pipeline.ann import ann_key, wants_index
    from latentmap.pipeline.reduce import cached_projection

    bad = set(steps) - set(STEPS)
    if bad:
        raise ValueError(
            f"unknown precompute step {', '.join(sorted(bad))}; choose from {', '.join(STEPS)}"
        )
    out: list[dict[str, Any]] = []
    if "index" in steps:
        for layer in base_layers(store, ds_id):
            if wants_index(store, ds_id, layer) and store.lookup(ann_key(ds_id, layer)) is None:
                out.append({"step": "index", "layer": layer})
    layer = store.manifest(ds_id).get("default_layer") or base_layers(store, ds_id)[-1]
    for method in ("umap", "tsne"):
        if method in steps and cached_projection(store, ds_id, layer, method) is None:
            out.append({"step": method, "layer": layer})
    return out


def run(
    store: Store,
    ds_id: str,
    steps: tuple[str, ...] = STEPS,
    *,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Compute the missing steps (logged as a ``precompute`` job); returns what ran, each
    with its seconds or its error. A failing step is recorded and the next one still runs."""
    import time

    from latentmap.pipeline.joblog import job

    todo = plan(store, ds_id, steps)
    done: list[dict[str, Any]] = []
    if not todo:
        return done
    detail = ", ".join(f"{_LABEL[t['step']]} of {t['layer']}" for t in todo)
    with job(store.root, "precompute", dataset=ds_id, detail=detail) as j:
        for i, t in enumerate(todo):
            label = f"{_LABEL[t['step']]} of {t['layer']}"

            def step_progress(f: float, msg: str, i: int = i) -> None:
                j.progress((i + f) / len(todo), msg)
                if progress is not None:
                    progress((i + f) / len(todo), msg)

            step_progress(0.0, label)
            t0 = time.perf_counter()
            try:
                _run_step(store, ds_id, t, step_progress)
                done.append({**t, "seconds": round(time.perf_counter() - t0, 2)})
            except (ValueError, OSError, MemoryError, RuntimeError) as e:
                log.warning("precompute %s of %s: %s", label, ds_id, e)
                done.append({**t, "error": f"{type(e).__name__}: {e}"})
        failed = [t for t in done if "error" in t]
        if failed:  # listed under "Failed" on the status page, with the first reason
            j.fail(f"{len(failed)} of {len(done)} steps failed; first: {failed[0]['error']}")
    return done


def _run_step(store: Store, ds_id: str, t: dict[str, Any], progress: Progress) -> None:
    if t["step"] == "index":
        from latentmap.pipeline.ann import build_index

        build_index(store, ds_id, t["layer"], progress=progress)
    else:
        from latentmap.pipeline.reduce import projection

        projection(store, ds_id, t["layer"], t["step"], progress=progress)


def launch(
    cache_dir: str | Path,
    ds_id: str,
    redis_url: str | None = None,
    steps: tuple[str, ...] | None = None,
) -> str | None:
    """Start ``run`` for a dataset in the background without waiting: on the Celery workers
    (``latentmap.precompute``) when ``redis_url`` is given, else in a detached local process.
    ``steps`` defaults to ``configured_steps()``. Returns how it was started ("celery" |
    "process"), or None when there is nothing to run or it could not start (logged; nothing
    is lost: the explorer computes what it needs on demand)."""
    steps = configured_steps() if steps is None else tuple(steps)
    if not steps:
        return None
    try:
        if redis_url:
            from celery import Celery

            client = Celery("latentmap", broker=redis_url, backend=redis_url)
            client.conf.update(task_serializer="json", accept_content=["json"])
            client.send_task("latentmap.precompute", args=[ds_id, list(steps)])
            return "celery"
        cmd = [
            sys.executable,
            "-m",
            "latentmap.cli",
            "--cache-dir",
            str(cache_dir),
            "precompute",
            ds_id,
            "--steps",
            ",".join(steps),
        ]

        if shutil.which("nice"):  # background work: the user's own clicks come first
            cmd = ["nice", "-n", "10", *cmd]
        # Started through a shell that exits at once, so the process is nobody's descendant:
        # Dash kills a finished background job's process *tree* when it fetches the result,
        # which took a direct child along (seen as a precompute that never ran, under load).
        subprocess.Popen(
            ["sh", "-c", '"$@" &', "sh", *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives the request (and a cancelled encode job)
            env={**os.environ, "LATENTMAP_CACHE_DIR": str(cache_dir)},
        ).wait(timeout=30)
        return "process"
    except Exception as e:  # noqa: BLE001 - a background nicety: never fail the encode for it
        log.warning("could not start precomputing %s: %s", ds_id, e)
        return None
