"""The diagnostics tab: per-layer numbers, confusion matrix, confusion vs. centroid distance.

Clicking a matrix cell or a pair point selects a (true, predicted) cell: its items fill the
"Confused items" gallery and are ringed on the map. "Write report" runs the static report
(``latentmap report``) as a background job and links the zip.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from dash import Dash, Input, Output, Patch, State, ctx, html, no_update
from latentmap.callbacks import data, tasks
from latentmap.components import ids
from latentmap.components.figures import empty_figure, marked_trace
from latentmap.components.gallery import MAX_SELECTION_CARDS, card, notice
from latentmap.components.layout import HIDDEN, SHOWN_BLOCK, SHOWN_FLEX
from latentmap.settings import Settings

log = logging.getLogger(__name__)
_METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
REPORT_NAME = re.compile(r"^report-[0-9]{8}-[0-9]{6}\.zip$")


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _rho(v: Any) -> float | None:
    """Spearman's rho from a (rho, p) pair or a bare number."""
    return v[0] if isinstance(v, (list, tuple)) else v


def _pending(text: str = "…") -> html.Span:
    return html.Span(text, className="muted", title="computing in the background")


def metrics_table(store, diag: dict, done: dict | None) -> html.Table:
    """One row per layer: silhouette, accuracy, Spearman rho, trust of the current view."""
    ds, method, params = diag["dataset"], diag["method"], diag["params"]
    head = [
        "layer",
        "dim",
        "silhouette (cosine)",
        "accuracy",
        "Spearman ρ cosine",
        "Spearman ρ euclidean",
        f"{_METHODS.get(method, method)} trustworthiness",
        "k-NN recall",
    ]
    rows = []
    manifest_layers = store.manifest(ds).get("layers", {})
    for layer in store.layers(ds)[: tasks.MAX_SUMMARY_LAYERS]:
        t = tasks.task(
            "summary", ds, layer, true_col=diag["true_col"], pred_col=diag.get("pred_col")
        )
        try:
            s = tasks.lookup(store, t)
        except data.EXPECTED_ERRORS as e:
            s, err = None, str(e)
        else:
            err = tasks.task_error(done, t)
        cells: list[Any] = [layer, str(manifest_layers.get(layer, {}).get("dim", "–"))]
        if s is None:
            cells += [html.Span(f"failed: {err}") if err else _pending()] + [""] * 3
        else:
            sil = s.get("silhouette")
            cells += [
                html.Span(_fmt(sil), title="; ".join(s.get("notes") or [])),
                _fmt(s.get("accuracy"), 3),
                _fmt(_rho(s.get("spearman_cosine"))),
                _fmt(_rho(s.get("spearman_euclidean"))),
            ]
        tt = tasks.task("trust", ds, layer, method=method, params=params)
        try:
            tr = tasks.lookup(store, tt)
        except data.EXPECTED_ERRORS:
            tr = None
        if tr is not None:
            cells += [_fmt(tr.info.get("trustworthiness")), _fmt(tr.info.get("knn_recall"))]
        elif layer == diag["layer"] and not tasks.task_error(done, tt):
            cells += [_pending(), _pending()]
        else:
            cells += ["–", "–"]
        rows.append(
            html.Tr(
                [html.Td(c) for c in cells],
                className="current" if layer == diag["layer"] else None,
            )
        )
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)])


def panel(store, diag: dict | None, done: dict | None):
    """(notice, table, confusion figure, confusion-vs-distance figure) of the diagnostics tab."""
    from latentmap.components.diagnostic_figures import (
        confusion_distance_figure,
        confusion_heatmap,
    )

    if not diag or not diag.get("layer"):
        msg = "No dataset to diagnose."
        return notice(msg, "info"), None, empty_figure(msg), empty_figure("")
    true, pred = diag.get("true_col"), diag.get("pred_col")
    if not true:
        msg = (
            "Choose the column with the true labels above. Labels come from the folder names "
            "(one sub-folder per class), or from a labels table given at encode time."
        )
        return notice(msg, "warning"), None, empty_figure("No true labels"), empty_figure("")
    notes: list[str] = []
    table = metrics_table(store, diag, done)
    if not pred:
        notes.append(
            "No predictions column: the confusion matrix needs one. Encode with the classifier's "
            "output layer (the encode job writes 'pred' and 'pred_score' when the model's last "
            "layer gives class scores) or add a 'pred' column to the labels table, then pick it "
            "under Predictions."
        )
        empty = empty_figure("No predictions column")
        return notice(notes, "warning"), table, empty, empty_figure("")
    layer = diag["layer"]
    t = tasks.task("confusion", diag["dataset"], layer, true_col=true, pred_col=pred)
    try:
        cvd = tasks.lookup(store, t)
    except data.EXPECTED_ERRORS as e:
        return notice(str(e), "warning"), table, empty_figure(str(e)[:90]), empty_figure("")
    if cvd is None:
        err = tasks.task_error(done, t)
        msg = f"failed: {err}" if err else "Computing the confusion matrix…"
        return notice(notes, "info") if notes else None, table, empty_figure(msg), empty_figure("")
    classes = list(cvd.info["classes"])
    cell = tuple(diag["cell"]) if diag.get("cell") else None
    heat = confusion_heatmap(
        classes,
        np.asarray(cvd["matrix"]),
        normalize=bool(diag.get("cnorm", True)),
        true_name=true,
        pred_name=pred,
        highlight=cell,
    )
    heat["layout"].pop("width", None)  # fit the panel; the report keeps the square size
    pairs = {
        k: np.asarray(cvd[k]) for k in ("a_idx", "b_idx", "rate", "count", "cosine", "euclidean")
    }
    metric = diag.get("dmetric", "cosine")
    scatter = confusion_distance_figure(
        classes,
        pairs,
        metric=metric,
        spearman=cvd.info.get(f"spearman_{metric}"),
        layer=layer,
        highlight=cell,
    )
    notes += list(cvd.info.get("notes") or [])
    return notice(notes, "info") if notes else None, table, heat, scatter


def cell_rows(store, diag: dict | None) -> np.ndarray | None:
    """Rows of the selected (true, predicted) cell, or None without a cell."""
    from latentmap.pipeline.diagnostics import pair_rows

    if not diag or not diag.get("cell") or not diag.get("true_col") or not diag.get("pred_col"):
        return None
    a, b = diag["cell"]
    meta = data.metadata(store, diag["dataset"])
    if diag["true_col"] not in meta.columns or diag["pred_col"] not in meta.columns:
        return None
    return pair_rows(meta, diag["true_col"], diag["pred_col"], a, b)


def cell_gallery(store, diag: dict | None, thumbs: dict | None = None):
    """(header style, title, cards) of the confused-items gallery."""
    rows = cell_rows(store, diag)
    if rows is None:
        return HIDDEN, "Confused items", []
    a, b = diag["cell"]
    what = "correct" if a == b else "confused"
    title = f"{diag['true_col']} {a} → {diag['pred_col']} {b}: {len(rows):,} {what} item" + (
        "s" if len(rows) != 1 else ""
    )
    if not len(rows):
        return SHOWN_FLEX, title, [html.P("No items in this cell.", className="muted")]
    ds = diag["dataset"]
    shown = rows[:MAX_SELECTION_CARDS]
    v = data.thumb_variant(thumbs, ds)
    cards = [
        card(ds, data.row_details(store, ds, int(r), [diag["pred_col"]], v), where="cell")
        for r in shown
    ]
    if len(rows) > len(shown):
        title += f" (first {len(shown)} shown)"
    return SHOWN_FLEX, title, cards


def marked_patch(store, diag: dict | None, shown: dict | None) -> Patch:
    """A Patch of the map's marked-items trace (index 1) for the selected cell."""
    rows = cell_rows(store, diag)
    coords = None
    if rows is not None and shown and shown.get("dataset") == diag["dataset"]:
        got = data.projection_coords(
            store, shown["dataset"], shown["layer"], shown["method"], shown["params"]
        )
        coords = got[0] if got else None
    trace = marked_trace(coords, rows)
    patch = Patch()
    patch["data"][1]["x"] = trace["x"]
    patch["data"][1]["y"] = trace["y"]
    return patch


def write_report_zip(store, diag: dict, set_progress=None) -> tuple[str | None, list[str]]:
    """Write the static report of the current dataset; (zip file name, notes)."""
    from latentmap.report import write_report

    ds = diag["dataset"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = store.root / "reports" / ds / f"report-{stamp}"

    def progress(fraction: float, message: str) -> None:
        if set_progress is not None:
            set_progress(f"{int(100 * fraction)}% · {message}")

    result = write_report(
        store,
        ds,
        out,
        layers=diag.get("layers") or None,
        true_col=diag.get("true_col") or "label",
        pred_col=diag.get("pred_col") or "pred",
        progress=progress,
    )
    archive = shutil.make_archive(str(out), "zip", root_dir=out)
    return Path(archive).name, list(result.notes)


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.MAP_PANEL, "style"),
        Output(ids.LAYERS_PANEL, "style"),
        Output(ids.DIAG_PANEL, "style"),
        Output(ids.CHAN_PANEL, "style"),
        Input(ids.TAB, "value"),
    )
    def switch_tab(tab):
        return (
            SHOWN_FLEX if tab not in ("layers", "diag", "chan") else HIDDEN,
            SHOWN_BLOCK if tab == "layers" else HIDDEN,
            SHOWN_BLOCK if tab == "diag" else HIDDEN,
            SHOWN_BLOCK if tab == "chan" else HIDDEN,
        )

    @app.callback(
        Output(ids.DIAG_NOTICE, "children"),
        Output(ids.DIAG_TABLE, "children"),
        Output(ids.CONF_GRAPH, "figure"),
        Output(ids.CVD_GRAPH, "figure"),
        Input(ids.DIAG_SPEC, "data"),
        Input(ids.TASKS_DONE, "data"),
    )
    def draw_panel(diag, done):
        if not diag or diag.get("tab") != "diag":
            return no_update, no_update, no_update, no_update
        try:
            return panel(settings.store(), diag, done)
        except data.EXPECTED_ERRORS as e:
            log.warning("diagnostics: %s", e)
            return notice(str(e), "error"), None, empty_figure(""), empty_figure("")

    @app.callback(
        Output(ids.CELL, "data", allow_duplicate=True),
        Input(ids.CONF_GRAPH, "clickData"),
        Input(ids.CVD_GRAPH, "clickData"),
        Input(ids.CELL_CLEAR, "n_clicks"),
        prevent_initial_call=True,
    )
    def pick_cell(conf_click, cvd_click, _clear):
        from latentmap.components.diagnostic_figures import cell_from_click, pair_from_click

        if ctx.triggered_id == ids.CELL_CLEAR:
            return None
        if ctx.triggered_id == ids.CONF_GRAPH:
            cell = cell_from_click(conf_click)
        else:
            cell = pair_from_click(cvd_click)
        return list(cell) if cell else no_update

    @app.callback(
        Output(ids.CELL_HEADER, "style"),
        Output(ids.CELL_TITLE, "children"),
        Output(ids.CELL_GALLERY, "children"),
        Input(ids.DIAG_SPEC, "data"),
        Input(ids.THUMBS, "data"),
    )
    def show_cell(diag, thumbs):
        try:
            return cell_gallery(settings.store(), diag, thumbs)
        except data.EXPECTED_ERRORS as e:
            log.info("cell gallery: %s", e)
            return SHOWN_FLEX, "Confused items", notice(str(e), "error")

    @app.callback(
        Output(ids.GRAPH, "figure", allow_duplicate=True),
        Input(ids.DIAG_SPEC, "data"),
        State(ids.SHOWN, "data"),
        prevent_initial_call=True,
    )
    def mark_cell(diag, shown):
        if not shown:
            return no_update
        try:
            return marked_patch(settings.store(), diag, shown)
        except data.EXPECTED_ERRORS as e:
            log.info("mark cell: %s", e)
            return no_update

    @app.callback(
        Output(ids.REPORT_STATUS, "children"),
        Input(ids.REPORT_BUTTON, "n_clicks"),
        State(ids.DIAG_SPEC, "data"),
        background=True,
        running=[(Output(ids.REPORT_BUTTON, "disabled"), True, False)],
        progress=[Output(ids.REPORT_STATUS, "children")],
        prevent_initial_call=True,
        interval=700,
    )
    def report(set_progress, _n, diag):
        if not diag or not diag.get("dataset"):
            return notice("Pick a dataset first.", "warning")
        try:
            name, notes = write_report_zip(settings.store(), diag, set_progress)
        except (*data.EXPECTED_ERRORS, RuntimeError) as e:
            log.warning("report: %s", e)
            return notice(f"The report could not be written: {e}", "error")
        link = html.A(
            "Download the report (zip)",
            href=f"/reports/{diag['dataset']}/{name}",
            className="btn btn-small",
            download=name,
        )
        return [link, notice(notes, "info") if notes else None]
