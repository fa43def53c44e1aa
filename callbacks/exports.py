"""Download the box / lasso selection as CSV or parquet: row, metadata, the shown map's x / y,
and optionally the latent vectors (``pipeline.exports.export_table``)."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

from dash import Dash, Input, Output, State, ctx, dcc, no_update
from latentmap.callbacks import data
from latentmap.callbacks.neighbors import selected_rows
from latentmap.components import ids
from latentmap.components.gallery import notice
from latentmap.settings import Settings

log = logging.getLogger(__name__)
FORMATS = {ids.SELECTION_CSV: "csv", ids.SELECTION_PARQUET: "parquet"}


def selection_file(
    store, selected: dict | None, shown: dict | None, fmt: str, include_vectors: bool = False
) -> tuple[str, bytes] | None:
    """(file name, bytes) of the selected rows as a ``fmt`` ("csv" / "parquet") table, or None
    when nothing is selected. x / y are the shown projection's coordinates (when cached)."""
    from latentmap.pipeline.exports import ExportError, export_table

    if fmt not in ("csv", "parquet"):
        raise ExportError(f"selection exports are csv or parquet, not {fmt!r}")
    rows = selected_rows(store, selected, shown)
    if not rows:
        return None
    ds, layer = shown["dataset"], shown["layer"]
    got = data.projection_coords(store, ds, layer, shown["method"], shown.get("params"))
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{ds}-{layer}-{shown['method']}")
    name = f"selection-{stem}-{len(rows)}.{fmt}"
    with tempfile.TemporaryDirectory() as tmp:
        path = export_table(
            store,
            ds,
            Path(tmp) / name,
            layer=layer,
            coords=got[0] if got is not None else None,
            rows=rows,
            include_vectors=include_vectors,
        )
        return name, path.read_bytes()


def register(app: Dash, settings: Settings) -> None:
    # the export buttons show exactly when the selection's title does
    app.clientside_callback(
        "function(style) { return style; }",
        Output(ids.SELECTION_EXPORT, "style"),
        Input(ids.SELECTION_TITLE, "style"),
    )

    @app.callback(
        Output(ids.SELECTION_DOWNLOAD, "data"),
        Output(ids.SELECTION_EXPORT_NOTICE, "children"),
        Input(ids.SELECTION_CSV, "n_clicks"),
        Input(ids.SELECTION_PARQUET, "n_clicks"),
        State(ids.GRAPH, "selectedData"),
        State(ids.SHOWN, "data"),
        State(ids.SELECTION_VECTORS, "value"),
        prevent_initial_call=True,
    )
    def download_selection(_csv, _parquet, selected, shown, vectors):
        fmt = FORMATS.get(ctx.triggered_id)
        if fmt is None:
            return no_update, no_update
        try:
            got = selection_file(settings.store(), selected, shown, fmt, bool(vectors))
        except data.EXPECTED_ERRORS as e:
            log.info("selection export: %s", e)
            return no_update, notice(f"Export failed: {e}", "error")
        if got is None:
            return no_update, notice("Select points with the box or lasso tool first.", "info")
        name, content = got
        return dcc.send_bytes(content, name), None
