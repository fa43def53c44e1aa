"""The map: draw the figure for a spec, hover tooltips, zoom <-> camera, parameter fields.

The figure callback draws a cached projection at once. When the asked-for projection is not
computed yet it keeps the current coordinates (recoloured if needed) and writes a request
that the background job in ``reduction.py`` picks up; when that job finishes, its token
triggers this callback again and the new projection is drawn.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from dash import Dash, Input, Output, Patch, State, ctx, no_update, set_props
from latentmap.callbacks import data
from latentmap.components import ids
from latentmap.components.figures import (
    DENSITY_BINS,
    POINTS_IN_VIEW,
    camera_from_relayout,
    density_trace,
    density_view,
    empty_figure,
    highlight_trace,
    marked_trace,
    row_for_point,
    scatter_figure,
)
from latentmap.components.gallery import notice, tooltip_body
from latentmap.components.layout import HIDDEN, SHOWN_BLOCK, SHOWN_FLEX
from latentmap.settings import Settings

log = logging.getLogger(__name__)
LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def proj_key(spec: dict) -> dict:
    return {k: spec.get(k) for k in ("dataset", "layer", "method", "params")}


def describe(spec: dict) -> str:
    params = ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in (spec.get("params") or {}).items()
        if k != "metric"
    )
    return LABELS.get(spec.get("method"), str(spec.get("method"))) + (
        f" ({params})" if params else ""
    )


def camera_only(triggered: dict | None) -> bool:
    """True when only the camera changed. A link opened with ``cam=`` changes the spec and the
    camera together: that must draw the map (``ctx.triggered_id`` names just one of them)."""
    ids_ = set((triggered or {}).values())
    return bool(ids_) and ids_ <= {ids.CAMERA}


def render(
    store,
    spec: dict | None,
    done: dict | None,
    shown: dict | None,
    camera: list | None,
    pending: dict | None,
    cancels: int | None,
    neighbours: dict | None,
    diag: dict | None = None,
    tasks_done: dict | None = None,
) -> tuple[Any, Any, Any, Any, Any]:
    """(figure, shown, reduce request, map notice, status) for the figure callback."""
    if not spec:
        return empty_figure("No dataset to show"), None, no_update, None, ""
    ds, layer = spec["dataset"], spec["layer"]
    want = proj_key(spec)
    got = data.projection_coords(store, ds, layer, spec["method"], spec["params"])
    drawn = want
    request: Any = no_update
    notices: list[str] = []
    status = ""
    if got is None:
        failed = done and done.get("error") and done.get("proj") == want
        if failed:
            notices.append(f"{describe(spec)} could not be computed: {done['error']}")
        else:
            fresh = (
                not pending
                or pending.get("proj") != want
                or pending.get("cancels") != cancels
                or (done or {}).get("nonce") == pending.get("nonce")
            )
            if fresh:
                request = {
                    "proj": want,
                    "nonce": (pending or {}).get("nonce", 0) + 1,
                    "cancels": cancels,
                }
            status = f"Computing {describe(spec)}…"
        if shown and shown.get("dataset") == ds and shown.get("layer") == layer:
            got = data.projection_coords(store, ds, layer, shown["method"], shown["params"])
            drawn = proj_key(shown)
            if got is not None and status:
                status += f" Showing {describe(shown)} meanwhile."
        if got is None:
            fig = (
                no_update
                if shown and shown.get("dataset") == ds
                else empty_figure(status or "Nothing to show")
            )
            return (
                fig,
                no_update if fig is no_update else None,
                request,
                notice(notices, "error"),
                status,
            )
    coords, proj_notices = got
    if drawn == want:
        notices += proj_notices
    groups = data.groups(store, spec)
    rows_all = np.concatenate([g.rows for g in groups]) if groups else np.empty(0, np.int64)
    view = density_view(coords, rows_all, camera)
    density = None
    if view["mode"] != "points":
        groups = data.groups(store, {**spec, "view": view})
        if view["mode"] == "density":
            density = density_trace(coords, rows_all, view.get("box"))
            status = (status + " " if status else "") + (
                f"{view['n']:,} points drawn as a density ({DENSITY_BINS}×{DENSITY_BINS} cells): "
                f"zoom in until at most {POINTS_IN_VIEW:,} are in view to draw them one by one."
            )
        else:
            status = (status + " " if status else "") + (
                f"Drawing the {view['inside']:,} points in view (of {view['n']:,}); "
                "zoom out for the density of all."
            )
    hl = None
    if neighbours and neighbours.get("dataset") == ds and neighbours.get("layer") == layer:
        hl = highlight_trace(coords, neighbours.get("rows"))
    overlays, point_values, waiting = [], None, []
    if drawn == want:
        overlays, point_values, waiting = map_overlays(store, spec, groups, tasks_done, notices)
    if waiting:
        status = (status + " " if status else "") + f"Computing {' and '.join(waiting)}…"
    marked = None
    if diag and diag.get("dataset") == ds:
        from latentmap.callbacks.diagnostics import cell_rows

        marked = marked_trace(coords, cell_rows(store, diag))
    fig = scatter_figure(
        coords,
        groups,
        data.metadata(store, ds),
        color=spec.get("color"),
        symbol=spec.get("symbol"),
        camera=camera,
        uirevision=json.dumps(drawn, sort_keys=True),
        highlight=hl,
        marked=marked,
        point_values=point_values,
        overlays=([density] if density else []) + overlays,
    )
    new_shown = {
        **spec,
        "method": drawn["method"],
        "params": drawn["params"],
        "n_groups": len(groups),
        "view": None if view["mode"] == "points" else view,
    }
    return fig, new_shown, request, notice(notices, "info"), status


def map_overlays(store, spec: dict, groups, done: dict | None, notices: list[str]):
    """(overlay traces, per-point values or None, names of overlays still computing)."""
    from latentmap.callbacks import tasks
    from latentmap.components.diagnostic_figures import centroid_traces

    ov = set(spec.get("overlays") or ())
    traces: list[dict] = []
    values = None
    waiting: list[str] = []
    ds, layer, method, params = spec["dataset"], spec["layer"], spec["method"], spec["params"]
    if ov & {"centroids", "ellipses"}:
        col = spec.get("centroid_col")
        if not col:
            notices.append(
                "Centroids need a categorical column: colour by one, or pick the true labels "
                "in the Diagnostics tab."
            )
        else:
            t = tasks.task("centroids", ds, layer, method=method, params=params, column=col)
            failed = False
            try:
                cm = tasks.lookup(store, t)
            except data.EXPECTED_ERRORS as e:
                cm, failed = None, True
                notices.append(f"Centroids: {e}")
            if failed:
                pass
            elif cm is not None:
                colors = None
                if col == spec.get("color"):
                    colors = {g.name: g.color for g in groups if g.kind == "category"}
                traces += centroid_traces(
                    list(cm.info["classes"]),
                    np.asarray(cm["xy"]),
                    colors,
                    cov=np.asarray(cm["cov"]),
                    ellipses="ellipses" in ov,
                    label=cm.info.get("label", "centroids"),
                )
                notices += list(cm.info.get("notes") or [])
            elif err := tasks.task_error(done, t):
                notices.append(f"Centroids could not be computed: {err}")
            else:
                waiting.append("centroids")
    if spec.get("pool_pending"):
        base, pool = spec["pool_pending"]
        t = tasks.task("variant", ds, base, pool=pool)
        if err := tasks.task_error(done, t):
            notices.append(f"Pooling {base} by {pool} failed: {err}")
        else:
            waiting.append(f"{base} pooled by {pool} (showing it as encoded meanwhile)")
    if spec.get("channel") is not None:
        from latentmap.pipeline.spatial import channel_values

        try:
            vals = np.asarray(channel_values(store, ds, layer, int(spec["channel"])), np.float64)
        except data.EXPECTED_ERRORS as e:
            notices.append(f"Channel colouring: {e}")
        else:
            values = (vals, f"channel {int(spec['channel'])}", "range")
    if spec.get("sampling"):
        from latentmap.callbacks import sampling

        more, wait = sampling.map_traces(store, spec, done, notices)
        traces += more
        waiting += wait
    if "trust" in ov:
        t = tasks.task("trust", ds, layer, method=method, params=params)
        failed = False
        try:
            tr = tasks.lookup(store, t)
        except data.EXPECTED_ERRORS as e:
            tr, failed = None, True
            notices.append(f"Projection trust: {e}")
        if failed:
            pass
        elif tr is not None:
            if values is None:  # a channel colouring wins
                values = (np.asarray(tr["recall"]), "k-NN recall")
            notices.append(
                f"Colour = k-NN recall of each point (grey: unknown); trustworthiness "
                f"{_num(tr.info.get('trustworthiness'))}, mean k-NN recall "
                f"{_num(tr.info.get('knn_recall'))}."
            )
        elif err := tasks.task_error(done, t):
            notices.append(f"Projection trust could not be computed: {err}")
        else:
            waiting.append("projection trust")
    return traces, values, waiting


def _num(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.2f}"


def hover(
    store,
    hover_data: dict | None,
    shown: dict | None,
    extra: list[str] | None,
    thumbs: dict | None = None,
):
    """(show, bbox, children) of the tooltip for a hover event."""
    if not hover_data or not shown or not hover_data.get("points"):
        return False, no_update, no_update
    pt = hover_data["points"][0]
    row = row_for_point(data.groups(store, shown), pt.get("curveNumber"), pt.get("pointIndex"))
    bbox = pt.get("bbox")
    if row is None or not bbox:
        return False, no_update, no_update
    cols = [c for c in (extra or []) if c]
    cols += [c for c in (shown.get("color"), shown.get("symbol")) if c and c not in cols]
    details = data.row_details(
        store, shown["dataset"], row, cols, data.thumb_variant(thumbs, shown["dataset"])
    )
    return True, bbox, tooltip_body(shown["dataset"], details)


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.GRAPH, "figure"),
        Output(ids.SHOWN, "data"),
        Output(ids.MAP_NOTICE, "children"),
        Output(ids.MAP_STATUS, "children"),
        Input(ids.SPEC, "data"),
        Input(ids.REDUCE_DONE, "data"),
        Input(ids.TASKS_DONE, "data"),
        Input(ids.CAMERA, "data"),
        State(ids.SHOWN, "data"),
        State(ids.REDUCE_REQUEST, "data"),
        State(ids.REDUCE_CANCEL, "n_clicks"),
        State(ids.NEIGHBORS, "data"),
        State(ids.DIAG_SPEC, "data"),
    )
    def update_figure(spec, done, tasks_done, camera, shown, pending, cancels, neighbours, diag):
        if camera_only(ctx.triggered_prop_ids) and not (shown and shown.get("view")):
            # pan / zoom is the browser's business, except at a density scale (re-binned)
            return no_update, no_update, no_update, no_update
        try:
            fig, new_shown, request, note, status = render(
                settings.store(),
                spec,
                done,
                shown,
                camera,
                pending,
                cancels,
                neighbours,
                diag,
                tasks_done,
            )
        except data.EXPECTED_ERRORS as e:
            log.warning("figure: %s", e)
            return no_update, no_update, notice(str(e), "error"), ""
        if request is not no_update:
            # set_props, not an Output: request -> job -> done -> this callback would be a
            # dependency cycle, which Dash refuses to run
            set_props(ids.REDUCE_REQUEST, {"data": request})
        return fig, new_shown, note, status

    @app.callback(
        Output(ids.TOOLTIP, "show"),
        Output(ids.TOOLTIP, "bbox"),
        Output(ids.TOOLTIP, "children"),
        Input(ids.GRAPH, "hoverData"),
        State(ids.SHOWN, "data"),
        State(ids.HOVER_COLS, "value"),
        State(ids.THUMBS, "data"),
    )
    def show_tooltip(hover_data, shown, extra, thumbs):
        try:
            return hover(settings.store(), hover_data, shown, extra, thumbs)
        except data.EXPECTED_ERRORS as e:
            log.info("hover: %s", e)
            return False, no_update, no_update

    @app.callback(
        Output(ids.CAMERA, "data", allow_duplicate=True),
        Input(ids.GRAPH, "relayoutData"),
        State(ids.CAMERA, "data"),
        prevent_initial_call=True,
    )
    def camera_changed(relayout, current):
        cam = camera_from_relayout(relayout)
        return no_update if cam is False or cam == current else cam

    @app.callback(
        Output(ids.GRAPH, "figure", allow_duplicate=True),
        Input(ids.CAMERA_RESTORE, "data"),
        prevent_initial_call=True,
    )
    def restore_camera(restore):
        if not isinstance(restore, dict):
            return no_update
        cam = restore.get("camera")
        patch = Patch()
        if cam:
            patch["layout"]["xaxis"]["range"] = cam[:2]
            patch["layout"]["yaxis"]["range"] = cam[2:]
            patch["layout"]["xaxis"]["autorange"] = False
            patch["layout"]["yaxis"]["autorange"] = False
        else:
            patch["layout"]["xaxis"]["autorange"] = True
            patch["layout"]["yaxis"]["autorange"] = True
        return patch

    @app.callback(
        Output(ids.TSNE_PARAMS, "style"),
        Output(ids.UMAP_PARAMS, "style"),
        Input(ids.METHOD, "value"),
    )
    def param_fields(method):
        return (
            SHOWN_BLOCK if method == "tsne" else HIDDEN,
            SHOWN_FLEX if method == "umap" else HIDDEN,
        )
