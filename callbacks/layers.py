"""Layers side by side: the same items in two to four layers as linked small multiples
(or, compare = methods, one layer under PCA, t-SNE and UMAP side by side).

Every view uses the map's projection method and parameters; views are aligned to a reference
layer (the map's layer when shown, else the first): a Procrustes fit (rotation, reflection,
scale, shift on the shared items) or, for t-SNE / UMAP, projections that start from the
reference layout ("shared initialisation"). Hovering or selecting items in one view rings the
same items in all of them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from dash import ALL, Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from latentmap.callbacks import data, tasks
from latentmap.components import ids
from latentmap.components.figures import (
    empty_figure,
    highlight_trace,
    row_for_point,
    scatter_figure,
)
from latentmap.components.gallery import notice
from latentmap.settings import Settings

log = logging.getLogger(__name__)
_ALIGNED = data._LRU(16)
_METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def _fmt(v: Any, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _view(diag: dict, name: str) -> dict | None:
    return next((v for v in tasks.views(diag) if v["name"] == name), None)


def _proj_task(diag: dict, v: dict) -> dict:
    return tasks.task(
        "projection",
        diag["dataset"],
        v["layer"],
        method=v["method"],
        params=v["params"],
        init_from=v["init_from"],
    )


def view_coords(store, diag: dict, name: str) -> tuple[np.ndarray, dict] | None:
    """(coords aligned to the reference view, info) of one small multiple; None if pending."""
    from latentmap.pipeline.diagnostics import procrustes_align

    v = _view(diag, name)
    if v is None:
        return None
    ds = diag["dataset"]
    key = (
        str(store.root),
        ds,
        data._mtime(store, ds),
        json.dumps({k: v[k] for k in ("layer", "method", "params", "init_from", "ref")}),
    )
    entry = tasks.lookup(store, _proj_task(diag, v))
    if entry is None:
        return None

    def make():
        coords = np.asarray(entry["coords"], dtype=np.float32)
        info = {
            "notices": list(entry.info.get("notices", [])),
            "init": v["init_from"],
            "disparity": None,
        }
        ref = _view(diag, v["ref"]) if v["ref"] != name else None
        if ref is not None:
            ref_entry = tasks.lookup(store, {**_proj_task(diag, ref), "init_from": None})
            if ref_entry is not None:
                coords, disparity = procrustes_align(np.asarray(ref_entry["coords"]), coords)
                info["disparity"] = disparity
        coords.setflags(write=False)
        return coords, info

    return _ALIGNED.get(key, make)


def caption(store, diag: dict, v: dict, info: dict | None, done: dict | None) -> html.Div:
    ds = diag["dataset"]
    dim = store.manifest(ds).get("layers", {}).get(v["layer"], {}).get("dim")
    methods = diag.get("compare") == "methods"
    head = _METHODS.get(v["method"], v["method"]) if methods else v["layer"]
    parts: list[Any] = [html.B(head), html.Span(f"{v['layer']} {dim}-d" if dim else "")]
    if info is not None:
        if v["name"] == v["ref"]:
            parts.append(html.Span("reference"))
        elif info.get("init"):
            parts.append(html.Span(f"started from {info['init']}"))
        if info.get("disparity") is not None and np.isfinite(info["disparity"]):
            parts.append(html.Span(f"Procrustes disparity {info['disparity']:.3f}"))
    if not v["init_from"]:
        t = tasks.task("trust", ds, v["layer"], method=v["method"], params=v["params"])
        try:
            trust = tasks.lookup(store, t)
        except data.EXPECTED_ERRORS as e:
            trust, parts = None, [*parts, html.Span(f"trust: {e}")]
        if trust is not None:
            parts.append(
                html.Span(
                    f"trustworthiness {_fmt(trust.info.get('trustworthiness'))} · "
                    f"k-NN recall {_fmt(trust.info.get('knn_recall'))}",
                    title="how many of each point's latent neighbours stay neighbours on the map",
                )
            )
        elif err := tasks.task_error(done, t):
            parts.append(html.Span(f"trust failed: {err}"))
    return html.Div(parts, className="layer-caption")


def layer_figure(store, spec: dict, v: dict, coords: np.ndarray, first: bool):
    groups = data.groups(store, {**spec, "layer": v["layer"]})
    return scatter_figure(
        coords,
        groups,
        data.metadata(store, spec["dataset"]),
        color=spec.get("color"),
        symbol=spec.get("symbol"),
        uirevision=json.dumps([v["layer"], v["method"], v["params"], v["init_from"], v["ref"]]),
        showlegend=first,
    )


def grid(store, spec: dict | None, diag: dict | None, done: dict | None):
    """(children of the grid, notice) for the layers tab."""
    if not spec or not diag or not diag.get("layer"):
        return [], notice("No layers to show: pick a dataset with encoded layers.", "info")
    notes = []
    vs = tasks.views(diag)
    if diag.get("compare") != "methods" and len(vs) < 2:
        notes.append("Pick at least two layers to compare them side by side.")
    cells = []
    for i, v in enumerate(vs):
        method = _METHODS.get(v["method"], v["method"])
        try:
            got = view_coords(store, diag, v["name"])
        except data.EXPECTED_ERRORS as e:
            got, err = None, str(e)
        else:
            err = tasks.task_error(done, _proj_task(diag, v))
        if got is None:
            msg = f"{method} of {v['layer']}: " + (f"failed: {err}" if err else "computing…")
            fig, info = empty_figure(msg), None
        else:
            coords, info = got
            fig = layer_figure(store, spec, v, coords, first=(i == 0))
            notes += [f"{v['name']}: {n}" for n in info["notices"] if "started from" not in n]
        cells.append(
            html.Div(
                [
                    caption(store, diag, v, info, done),
                    dcc.Graph(
                        id={"type": ids.LAYER_GRAPH_TYPE, "view": v["name"]},
                        figure=fig,
                        config={"displaylogo": False, "scrollZoom": True},
                        className="layer-graph",
                        clear_on_unhover=True,
                    ),
                ],
                className="layer-cell",
            )
        )
    return cells, notice(notes, "info") if notes else None


def linked_rows(store, spec: dict, diag: dict, trigger: dict | None, event: dict | None):
    """Rows under a hover / selection event of one small multiple."""
    if not trigger or not event or not event.get("points"):
        return []
    v = _view(diag, trigger.get("view"))
    if v is None:
        return []
    groups = data.groups(store, {**spec, "layer": v["layer"]})
    rows = []
    for pt in event["points"]:
        r = row_for_point(groups, pt.get("curveNumber"), pt.get("pointIndex"))
        if r is not None:
            rows.append(r)
    return list(dict.fromkeys(rows))


def highlight_patches(store, diag: dict, graph_ids: list[dict], rows: list[int]) -> list[Any]:
    """One Patch per small multiple ringing ``rows`` (a hovered item gets a big ring)."""
    out = []
    for gid in graph_ids:
        got = view_coords(store, diag, gid["view"]) if rows else None
        trace = highlight_trace(got[0] if got else None, rows[:2000])
        if len(rows) > 1:
            trace["marker"]["size"] = [10.0] * len(trace["x"])
        patch = Patch()
        patch["data"][0]["x"] = trace["x"]
        patch["data"][0]["y"] = trace["y"]
        patch["data"][0]["marker"]["size"] = trace["marker"]["size"]
        out.append(patch)
    return out


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.LAYERS_GRID, "children"),
        Output(ids.LAYERS_NOTICE, "children"),
        Input(ids.DIAG_SPEC, "data"),
        Input(ids.SPEC, "data"),
        Input(ids.TASKS_DONE, "data"),
    )
    def draw_layers(diag, spec, done):
        if not diag or diag.get("tab") != "layers":
            return no_update, no_update
        try:
            return grid(settings.store(), spec, diag, done)
        except data.EXPECTED_ERRORS as e:
            log.warning("layers: %s", e)
            return [], notice(str(e), "error")

    graph = {"type": ids.LAYER_GRAPH_TYPE, "view": ALL}

    @app.callback(
        Output(graph, "figure", allow_duplicate=True),
        Input(graph, "hoverData"),
        Input(graph, "selectedData"),
        State(graph, "id"),
        State(ids.SPEC, "data"),
        State(ids.DIAG_SPEC, "data"),
        prevent_initial_call=True,
    )
    def link(_hover, _selected, graph_ids, spec, diag):
        if not spec or not diag or not graph_ids:
            return [no_update] * len(graph_ids or [])
        trig = ctx.triggered_id if isinstance(ctx.triggered_id, dict) else None
        value = ctx.triggered[0]["value"] if ctx.triggered else None
        try:
            store = settings.store()
            rows = linked_rows(store, spec, diag, trig, value)
            if not rows:  # unhover: fall back to the selection of any view
                sel_prop = ctx.inputs_list[1]
                for item in sel_prop:
                    rows = linked_rows(store, spec, diag, item["id"], item.get("value"))
                    if rows:
                        break
            return highlight_patches(store, diag, graph_ids, rows)
        except data.EXPECTED_ERRORS as e:
            log.info("linked highlight: %s", e)
            return [no_update] * len(graph_ids)
