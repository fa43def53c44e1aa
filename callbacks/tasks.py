"""Diagnostics work that is too slow for a request runs as one background job.

The layers and diagnostics tabs and the map overlays only ever *draw* what is cached (they read
through ``Store.cached_only()``). ``needed_tasks`` lists what the current view wants;
``missing_tasks`` keeps those not cached yet, and the planner callback sends them to the job
in ``TASKS_REQUEST``. The job computes and caches them with progress and a cancel button and
answers with a token in ``TASKS_DONE`` (including each task's error) that makes the panels
redraw. A failed task is not asked for again, so nothing loops.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from dash import Dash, Input, Output, State, no_update
from latentmap.callbacks.data import EXPECTED_ERRORS
from latentmap.components import ids
from latentmap.components.layout import HIDDEN, SHOWN_FLEX
from latentmap.pipeline.joblog import job
from latentmap.pipeline.store import NotCached, Store
from latentmap.settings import Settings

log = logging.getLogger(__name__)

MAX_SUMMARY_LAYERS = 16
SAMPLING_KINDS = ("samples", "sample_xy", "decode", "path_xy", "path_decode")
LABELS = {
    "projection": "projection",
    "centroids": "centroids",
    "trust": "projection trust",
    "summary": "layer summary",
    "confusion": "confusion vs. distance",
    "samples": "latent samples",
    "sample_xy": "sample positions",
    "decode": "decoded samples",
    "path_xy": "interpolation path",
    "path_decode": "decoded path",
    "variant": "pooling",
    "channels": "channel analysis",
    "index": "nearest-neighbour index",
}
_METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def task(kind: str, ds: str, layer: str, **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "dataset": ds, "layer": layer, **kw}


def describe(t: dict[str, Any]) -> str:
    if t["kind"] == "thumbs":
        from latentmap.pipeline.bands import describe as bands

        return f"thumbnails ({bands(t['variant'])})"
    what = LABELS.get(t["kind"], t["kind"])
    if t["kind"] in ("projection", "trust", "centroids", "sample_xy", "path_xy"):
        what = f"{_METHODS.get(t['method'], t['method'])} {what}"
    return f"{what} of {t['layer']}"


def run_task(store: Store, t: dict[str, Any], progress=None) -> Any:
    """Compute (or, on a ``cached_only`` store, look up) one task's result."""
    from latentmap.pipeline import diagnostics as diag
    from latentmap.pipeline.reduce import projection

    kind, ds, layer = t["kind"], t["dataset"], t["layer"]
    if kind == "projection":
        return projection(
            store,
            ds,
            layer,
            t["method"],
            t.get("params"),
            init_from=t.get("init_from"),
            progress=progress,
        )
    if kind == "centroids":
        return diag.centroid_map(store, ds, layer, t["method"], t.get("params"), t["column"])
    if kind == "trust":
        return diag.trust_for(store, ds, layer, t["method"], t.get("params"))
    if kind == "summary":
        return diag.layer_summary(store, ds, layer, t["true_col"], t.get("pred_col"))
    if kind == "confusion":
        return diag.confusion_distance_for(store, ds, layer, t["true_col"], t["pred_col"])
    if kind == "variant":
        from latentmap.pipeline.spatial import ensure_variant

        return ensure_variant(store, ds, layer, t["pool"], progress=progress)
    if kind == "index":
        from latentmap.pipeline.ann import build_index

        return build_index(store, ds, layer, progress=progress)
    if kind == "thumbs":
        from latentmap.pipeline.bands import ensure_thumbs, parse_variant_key

        return ensure_thumbs(store, ds, *parse_variant_key(t["variant"]), progress=progress)
    if kind == "channels":
        from latentmap.pipeline.spatial import channel_analysis

        return channel_analysis(store, ds, layer, t["column"], groups=t.get("groups"))
    if kind in SAMPLING_KINDS:
        from latentmap.callbacks import sampling

        return sampling.run(store, t, progress)
    raise ValueError(f"unknown task {kind!r}")


def lookup(store: Store, t: dict[str, Any]) -> Any:
    """The cached result of a task, or None when it still has to be computed.

    Errors (a missing column, an unknown layer...) propagate: panels show them.
    """
    if t["kind"] == "index":  # loaded once per process and kept (it is large)
        from latentmap.pipeline.ann import cached_index

        return cached_index(store, t["dataset"], t["layer"])
    try:
        return run_task(store.cached_only(), t)
    except NotCached:
        return None


def needed_tasks(
    store: Store, spec: dict | None, diag: dict | None, thumbs: dict | None = None
) -> list[dict[str, Any]]:
    """Everything the current map overlays, the open tab and the band choice want."""
    out: list[dict[str, Any]] = []
    if thumbs and thumbs.get("want") and not thumbs.get("v"):
        out.append(task("thumbs", thumbs["dataset"], None, variant=thumbs["want"]))
    if spec and spec.get("pool_pending"):
        base, pool = spec["pool_pending"]
        out.append(task("variant", spec["dataset"], base, pool=pool))
    if spec and spec.get("layer"):
        ds, layer, method, params = spec["dataset"], spec["layer"], spec["method"], spec["params"]
        ov = set(spec.get("overlays") or ())
        if ov & {"centroids", "ellipses"} and spec.get("centroid_col"):
            out.append(
                task(
                    "centroids",
                    ds,
                    layer,
                    method=method,
                    params=params,
                    column=spec["centroid_col"],
                )
            )
        if "trust" in ov:
            out.append(task("trust", ds, layer, method=method, params=params))
    if diag and diag.get("layer"):
        ds, method, params = diag["dataset"], diag["method"], diag["params"]
        if diag.get("tab") == "layers":
            for v in views(diag):
                out.append(
                    task(
                        "projection",
                        ds,
                        v["layer"],
                        method=v["method"],
                        params=v["params"],
                        init_from=v["init_from"],
                    )
                )
            for v in views(diag):
                if v["init_from"] is None:  # trust is measured on plain views
                    out.append(
                        task("trust", ds, v["layer"], method=v["method"], params=v["params"])
                    )
        elif diag.get("tab") == "chan":
            t = channel_task(diag)
            if t:
                out.append(t)
        elif diag.get("tab") == "diag" and diag.get("true_col"):
            true, pred = diag["true_col"], diag.get("pred_col")
            if pred:
                out.append(task("confusion", ds, diag["layer"], true_col=true, pred_col=pred))
            out.append(task("trust", ds, diag["layer"], method=method, params=params))
            for layer in store.layers(ds)[:MAX_SUMMARY_LAYERS]:
                out.append(task("summary", ds, layer, true_col=true, pred_col=pred))
    from latentmap.callbacks import sampling

    out += sampling.needed(spec)
    unique = {json.dumps(t, sort_keys=True): t for t in out}
    return list(unique.values())


def views(diag: dict) -> list[dict[str, Any]]:
    """The small multiples of the layers tab: the chosen layers with the map's projection,
    or (compare = methods) the map's layer under PCA, t-SNE and UMAP. Each view is
    {"name", "layer", "method", "params", "init_from", "ref" (the view it aligns to)}."""
    from latentmap.pipeline.reduce import METHODS, default_params

    out = []
    if diag.get("compare") == "methods":
        layer = diag["layer"]
        for m in METHODS:
            params = diag["params"] if m == diag["method"] else default_params(m)
            out.append(
                {"name": m, "layer": layer, "method": m, "params": params, "init_from": None}
            )
        ref = diag["method"]
    else:
        ref = reference_layer(diag)
        for layer in diag.get("layers") or []:
            out.append(
                {
                    "name": layer,
                    "layer": layer,
                    "method": diag["method"],
                    "params": diag["params"],
                    "init_from": init_from(diag, layer, ref),
                }
            )
    for v in out:
        v["ref"] = ref
    return out


def channel_task(diag: dict) -> dict[str, Any] | None:
    """The channel analysis the Channels tab shows (None without a categorical column)."""
    ch = diag.get("channels") or {}
    column = ch.get("ccol") or diag.get("true_col")
    if not column:
        return None
    base = diag["layer"].split("@")[0]
    return task("channels", diag["dataset"], base, column=column, groups=ch.get("cgrp"))


def reference_layer(diag: dict) -> str | None:
    """Small multiples align to the map's layer when it is among them, else the first."""
    layers = diag.get("layers") or []
    if not layers:
        return None
    return diag["layer"] if diag.get("layer") in layers else layers[0]


def init_from(diag: dict, layer: str, ref: str | None) -> str | None:
    if diag.get("align") == "init" and diag.get("method") != "pca" and ref and layer != ref:
        return ref
    return None


def _failed(done: dict | None) -> set[str]:
    return {json.dumps(e["task"], sort_keys=True) for e in (done or {}).get("errors", [])}


def missing_tasks(
    store: Store,
    spec: dict | None,
    diag: dict | None,
    done: dict | None = None,
    thumbs: dict | None = None,
) -> list[dict[str, Any]]:
    """The needed tasks that are neither cached nor known to fail."""
    failed = _failed(done)
    out = []
    for t in needed_tasks(store, spec, diag, thumbs):
        if json.dumps(t, sort_keys=True) in failed:
            continue
        try:
            if lookup(store, t) is None:
                out.append(t)
        except EXPECTED_ERRORS:
            continue  # the panel that draws it shows the error
    return out


def task_error(done: dict | None, t: dict[str, Any]) -> str | None:
    """The error of a task in the last job's token, if it failed."""
    key = json.dumps(t, sort_keys=True)
    for e in (done or {}).get("errors", []):
        if json.dumps(e["task"], sort_keys=True) == key:
            return str(e["error"])
    return None


def plan(store, spec, diag, done, pending, thumbs=None) -> Any:
    """The new TASKS_REQUEST (or no_update): only when the missing set changed."""
    tasks = missing_tasks(store, spec, diag, done, thumbs)
    if not tasks or (pending and pending.get("tasks") == tasks):
        return no_update
    return {"tasks": tasks, "nonce": (pending or {}).get("nonce", 0) + 1}


def run_request(store: Store, request: dict | None, set_progress=None) -> dict | None:
    """Run every task of a request in order; a token for TASKS_DONE with each failure."""
    if not request or not isinstance(request.get("tasks"), list):
        return None
    tasks = request["tasks"]
    errors = []
    last = [0.0]
    n = max(len(tasks), 1)
    for i, t in enumerate(tasks):

        def progress(fraction: float, message: str, i: int = i) -> None:
            now = time.monotonic()
            if set_progress is not None and now - last[0] > 0.2:
                last[0] = now
                set_progress((str(int(100 * (i + fraction) / n)), message))

        progress(0.0, f"{i + 1}/{n}: {describe(t)}")
        with job(store.root, t["kind"], dataset=t.get("dataset"), detail=describe(t)) as j:

            def tracked(fraction: float, message: str, i: int = i, j=j) -> None:
                j.progress(fraction, message)
                progress(fraction, message, i)

            try:
                with_progress = t["kind"] in ("projection", "variant", "thumbs", "index")
                run_task(store, t, progress=tracked if with_progress else None)
            except EXPECTED_ERRORS as e:
                log.warning("%s failed: %s", describe(t), e)
                errors.append({"task": t, "error": str(e)})
                j.fail(e)
    return {"nonce": request.get("nonce"), "errors": errors}


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.TASKS_REQUEST, "data"),
        Input(ids.SPEC, "data"),
        Input(ids.DIAG_SPEC, "data"),
        Input(ids.TASKS_DONE, "data"),
        Input(ids.THUMBS, "data"),
        State(ids.TASKS_REQUEST, "data"),
    )
    def plan_tasks(spec, diag, done, thumbs, pending):
        try:
            return plan(settings.store(), spec, diag, done, pending, thumbs)
        except EXPECTED_ERRORS as e:
            log.info("plan: %s", e)
            return no_update

    @app.callback(
        Output(ids.TASKS_DONE, "data"),
        Input(ids.TASKS_REQUEST, "data"),
        background=True,
        running=[
            (Output(ids.TASKS_BOX, "style"), SHOWN_FLEX, HIDDEN),
            (Output(ids.TASKS_CANCEL, "disabled"), False, True),
        ],
        progress=[Output(ids.TASKS_PROGRESS, "value"), Output(ids.TASKS_LABEL, "children")],
        progress_default=["0", ""],
        cancel=[Input(ids.TASKS_CANCEL, "n_clicks")],
        prevent_initial_call=True,
        interval=500,
    )
    def run_tasks(set_progress, request):
        token = run_request(settings.store(), request, set_progress)
        return no_update if token is None else token
