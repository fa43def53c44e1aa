"""Click a point (or a gallery card) -> its k nearest neighbours in latent space.

Also: the highlight of the query and its neighbours on the map (a ``Patch`` of trace 0, not a
redraw) and the gallery of a box / lasso selection.
"""

from __future__ import annotations

import logging
from typing import Any

from dash import ALL, Dash, Input, Output, Patch, State, ctx, html, no_update
from latentmap.callbacks import data
from latentmap.components import ids
from latentmap.components.figures import highlight_trace, row_for_point
from latentmap.components.gallery import MAX_SELECTION_CARDS, card, neighbor_gallery, notice
from latentmap.components.layout import HIDDEN, SHOWN_BLOCK
from latentmap.settings import Settings

log = logging.getLogger(__name__)
EMPTY_GALLERY = html.P(
    "Click a point on the map to see its nearest neighbours in latent space.", className="muted"
)


def clicked_row(store, trigger: Any, trigger_value: Any, click: dict | None, shown: dict | None):
    """The row a click event points at: a map point or a gallery card (no_update otherwise).

    ``trigger_value`` is the triggering property's value: a card's n_clicks is 0 when the card
    was just added to the page rather than clicked.
    """
    if isinstance(trigger, dict) and trigger.get("type") == ids.CARD_TYPE:
        if not trigger_value:
            return no_update
        return int(trigger["row"])
    if not click or not shown or not click.get("points"):
        return no_update
    pt = click["points"][0]
    row = row_for_point(data.groups(store, shown), pt.get("curveNumber"), pt.get("pointIndex"))
    if row is None and isinstance(pt.get("customdata"), int):
        row = pt["customdata"]  # a sample / path marker: its nearest real item
    return no_update if row is None else row


def neighbours_view(
    store, row: int | None, k: int | None, spec: dict | None, thumbs: dict | None = None
):
    """(neighbours store data, gallery children, title, notice) for a query row."""
    from latentmap.pipeline.neighbors import nearest

    if row is None or not spec:
        return None, EMPTY_GALLERY, "Nearest neighbours", None
    ds, layer = spec["dataset"], spec["layer"]
    k = int(k) if isinstance(k, (int, float)) and 1 <= k <= 200 else 12
    hits = nearest(store, ds, layer, int(row), k)
    extra = [c for c in (spec.get("color"), spec.get("symbol")) if c]
    v = data.thumb_variant(thumbs, ds)
    query = data.row_details(store, ds, int(row), extra, v)
    cards = [(data.row_details(store, ds, r, extra, v), s) for r, s in hits]
    from latentmap.pipeline.neighbors import search_method

    how = search_method(store, ds, layer)
    title = f"{len(hits)} nearest to {query['name']}" + ("" if how == "exact" else f" ({how})")
    store_data = {"dataset": ds, "layer": layer, "k": k, "rows": [int(row)] + [r for r, _ in hits]}
    return store_data, neighbor_gallery(ds, query, cards), title, None


def highlight_patch(store, neighbours: dict | None, shown: dict | None) -> Patch:
    """A Patch replacing trace 0 (the highlight) with the query + neighbours of ``neighbours``."""
    coords = None
    rows: list[int] = []
    if (
        neighbours
        and shown
        and neighbours.get("dataset") == shown.get("dataset")
        and (neighbours.get("layer") == shown.get("layer"))
    ):
        got = data.projection_coords(
            store, shown["dataset"], shown["layer"], shown["method"], shown["params"]
        )
        if got is not None:
            coords, rows = got[0], list(neighbours.get("rows") or [])
    trace = highlight_trace(coords, rows)
    patch = Patch()
    patch["data"][0]["x"] = trace["x"]
    patch["data"][0]["y"] = trace["y"]
    patch["data"][0]["marker"]["size"] = trace["marker"]["size"]
    return patch


def selected_rows(store, selected: dict | None, shown: dict | None) -> list[int]:
    """Dataset rows of a box / lasso selection event (in selection order, unique)."""
    if not selected or not shown or not selected.get("points"):
        return []
    groups = data.groups(store, shown)
    rows = []
    for pt in selected["points"]:
        r = row_for_point(groups, pt.get("curveNumber"), pt.get("pointIndex"))
        if r is not None:
            rows.append(r)
    return list(dict.fromkeys(rows))


def selection_view(store, selected: dict | None, shown: dict | None, thumbs: dict | None = None):
    """(title, title style, gallery children) for a box / lasso selection."""
    rows = selected_rows(store, selected, shown)
    if not rows:
        return "Selection", HIDDEN, []
    ds = shown["dataset"]
    extra = [c for c in (shown.get("color"),) if c]
    v = data.thumb_variant(thumbs, ds)
    cards = [
        card(ds, data.row_details(store, ds, r, extra, v), where="sel")
        for r in rows[:MAX_SELECTION_CARDS]
    ]
    more = len(rows) - len(cards)
    title = f"Selection: {len(rows):,} item{'s' if len(rows) != 1 else ''}" + (
        f" (first {len(cards)} shown)" if more > 0 else ""
    )
    return title, SHOWN_BLOCK, cards


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.SELECTED, "data", allow_duplicate=True),
        Input(ids.GRAPH, "clickData"),
        Input({"type": ids.CARD_TYPE, "row": ALL, "where": ALL}, "n_clicks"),
        State(ids.SHOWN, "data"),
        prevent_initial_call=True,
    )
    def select_row(click, card_clicks, shown):
        try:
            value = ctx.triggered[0]["value"] if ctx.triggered else None
            return clicked_row(settings.store(), ctx.triggered_id, value, click, shown)
        except data.EXPECTED_ERRORS as e:
            log.info("click: %s", e)
            return no_update

    @app.callback(
        Output(ids.NEIGHBORS, "data"),
        Output(ids.GALLERY, "children"),
        Output(ids.GALLERY_TITLE, "children"),
        Output(ids.GALLERY_NOTICE, "children"),
        Input(ids.SELECTED, "data"),
        Input(ids.K, "value"),
        Input(ids.SPEC, "data"),
        Input(ids.THUMBS, "data"),
        State(ids.NEIGHBORS, "data"),
    )
    def show_neighbours(row, k, spec, thumbs, current):
        if (
            ctx.triggered_id != ids.THUMBS
            and current
            and spec
            and row is not None
            and current.get("rows")
        ):
            same = (current["dataset"], current["layer"], current["rows"][0], current["k"])
            if same == (spec["dataset"], spec["layer"], row, k):
                return no_update, no_update, no_update, no_update
        try:
            return neighbours_view(settings.store(), row, k, spec, thumbs)
        except data.EXPECTED_ERRORS as e:
            log.info("neighbours: %s", e)
            return None, EMPTY_GALLERY, "Nearest neighbours", notice(str(e), "error")

    @app.callback(
        Output(ids.GRAPH, "figure", allow_duplicate=True),
        Input(ids.NEIGHBORS, "data"),
        State(ids.SHOWN, "data"),
        prevent_initial_call=True,
    )
    def highlight(neighbours, shown):
        try:
            return highlight_patch(settings.store(), neighbours, shown)
        except data.EXPECTED_ERRORS as e:
            log.info("highlight: %s", e)
            return no_update

    @app.callback(
        Output(ids.SELECTION_TITLE, "children"),
        Output(ids.SELECTION_TITLE, "style"),
        Output(ids.SELECTION, "children"),
        Input(ids.GRAPH, "selectedData"),
        Input(ids.THUMBS, "data"),
        State(ids.SHOWN, "data"),
    )
    def show_selection(selected, thumbs, shown):
        try:
            return selection_view(settings.store(), selected, shown, thumbs)
        except data.EXPECTED_ERRORS as e:
            log.info("selection: %s", e)
            return "Selection", HIDDEN, notice(str(e), "error")
