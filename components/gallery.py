"""Small component builders: gallery cards, the hover tooltip body, notices. No data access."""

from __future__ import annotations

from typing import Any

from dash import dcc, html
from latentmap.components import ids

MAX_SELECTION_CARDS = 60


def thumb_url(ds_id: str, row: int, variant: str | None = None) -> str:
    """The thumbnail route of a row; ``variant`` picks a band choice's thumbnails."""
    return f"/thumb/{ds_id}/{int(row)}.png" + (f"?v={variant}" if variant else "")


def _thumb_src(ds_id: str, details: dict[str, Any]) -> str | None:
    t = details.get("thumb")
    if not t:
        return None
    return t if isinstance(t, str) else thumb_url(ds_id, details["row"])


def notice(messages: list[str] | str | None, kind: str = "warning") -> Any:
    """An alert box listing messages (nothing when there are none)."""
    if not messages:
        return None
    if isinstance(messages, str):
        messages = [messages]
    items = [html.Li(m) for m in dict.fromkeys(messages)]  # de-duplicated, in order
    return html.Div(
        html.Ul(items),
        className=f"notice notice-{kind}",
        role="alert",
    )


def card(
    ds_id: str,
    details: dict[str, Any],
    similarity: float | None = None,
    query: bool = False,
    *,
    where: str = "nb",
    extra: list | None = None,
    title: str | None = None,
):
    """A gallery card: thumbnail (or id), label / prediction, similarity. Clickable.

    ``where`` names the gallery (ids stay unique when one item shows in several galleries);
    ``extra`` goes above the caption (e.g. a decoded image)."""
    row = details["row"]
    src = _thumb_src(ds_id, details)
    if src:
        visual = html.Img(src=src, alt=details["name"])
    else:
        visual = html.Div(details["name"], className="card-noimg")
    caption = []
    if details.get("label") is not None:
        wrong = details.get("pred") is not None and details["pred"] != details["label"]
        caption.append(
            html.Span(details["label"], className="card-label" + (" wrong" if wrong else ""))
        )
        if wrong:
            caption.append(
                html.Span(f"→ {details['pred']}", className="card-pred", title="prediction")
            )
    if similarity is not None:
        caption.append(
            html.Span(f"{similarity:.3f}", className="card-sim", title="cosine similarity")
        )
    return html.Div(
        [*(extra or []), visual, html.Div(caption, className="card-caption")],
        id={"type": ids.CARD_TYPE, "row": row, "where": where},
        n_clicks=0,
        className="card" + (" card-query" if query else ""),
        title=title or f"{details['name']} (row {row}): click to find its neighbours",
        **{"data-row": str(row), "data-label": str(details.get("label"))},
    )


def neighbor_gallery(ds_id: str, query: dict[str, Any], neighbours: list[tuple[dict, float]]):
    """The query card followed by its k nearest neighbours."""
    return [card(ds_id, query, query=True)] + [card(ds_id, d, s) for d, s in neighbours]


def tooltip_body(ds_id: str, details: dict[str, Any]):
    """Hover tooltip: thumbnail (when the dataset has images), name and metadata fields."""
    children = []
    src = _thumb_src(ds_id, details)
    if src:
        children.append(html.Img(src=src, className="tip-img"))
    rows = [html.Div(details["name"], className="tip-name")]
    for key, value in details.get("fields", []):
        rows.append(html.Div([html.Span(key, className="tip-key"), html.Span(value)]))
    children.append(html.Div(rows, className="tip-text"))
    return html.Div(children, className="tip")


def dataset_table(infos: list[Any]):
    """The list of cached datasets, each name a link that opens it."""
    if not infos:
        return html.P("No datasets in the cache yet.", className="muted")
    head = html.Tr([html.Th(h) for h in ("name", "items", "layers", "status")])
    body = [
        html.Tr(
            [
                html.Td(dcc.Link(d.name, href=f"?ds={d.id}", title=d.id)),
                html.Td(f"{d.n:,}"),
                html.Td(", ".join(d.layers), title=f"model: {d.model}"),
                html.Td(d.status, className=f"status-{d.status}"),
            ]
        )
        for d in reversed(infos)
    ]
    return html.Table([html.Thead(head), html.Tbody(body)], className="ds-table")
