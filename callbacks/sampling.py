"""Sampling panel: random latents from a distribution fitted to the layer (or a region of it)
-> the nearest real images, as numbered markers on the map and cards in the gallery, with the
hubness summary and the random-images baseline; an interpolation path between two items; and
decoded images when the user gives a decoder.

Sampling, placing samples on the map and decoding run in the diagnostics job (``tasks``);
this module turns the view into those tasks and draws what is cached.
"""

from __future__ import annotations

import base64
import logging
import random
from typing import Any

import numpy as np
from dash import ALL, Dash, Input, Output, State, ctx, html, no_update
from latentmap.callbacks import data, tasks
from latentmap.components import ids
from latentmap.components.gallery import card, notice
from latentmap.components.layout import HIDDEN, SHOWN_BLOCK
from latentmap.settings import Settings

log = logging.getLogger(__name__)
SAMPLE_COLOR = "#111111"
PATH_COLOR = "#e8590c"


def region_of(s: dict) -> tuple[dict | None, str | None]:
    """(region for ``sample_latents``, a note when the chosen region is incomplete)."""
    reg = s.get("sreg")
    if not reg:
        return None, None
    if reg == "selection":
        rows = list(s.get("srows") or [])
        if not rows:
            return (
                None,
                "Make a box or lasso selection on the map, then 'Fit to the current selection'.",
            )
        return {"rows": rows}, None
    if s.get("sval") in (None, ""):
        return None, f"Pick a value of {reg} to fit the distribution to; sampling everywhere."
    return {"column": reg, "value": s["sval"]}, None


def sample_task(spec: dict) -> dict:
    s = spec["sampling"]
    region, _ = region_of(s)
    return tasks.task(
        "samples",
        spec["dataset"],
        spec["layer"],
        n=s["sn"],
        dist=s["sdist"],
        k=s["sk"],
        seed=s["sseed"],
        region=region,
    )


def needed(spec: dict | None) -> list[dict]:
    """The tasks the sampling panel wants for a map spec."""
    if not spec or not spec.get("layer") or not spec.get("sampling"):
        return []
    s = spec["sampling"]
    out = []
    proj = {"method": spec["method"], "params": spec["params"]}
    if s.get("smp"):
        t = sample_task(spec)
        out += [t, {**t, "kind": "sample_xy", **proj}]
        if s.get("dec"):
            out.append({**t, "kind": "decode", "decoder": s["dec"], "checkpoint": s.get("deck")})
    if s.get("ia") is not None and s.get("ib") is not None:
        p = tasks.task(
            "path_xy",
            spec["dataset"],
            spec["layer"],
            a=s["ia"],
            b=s["ib"],
            steps=s["isteps"],
            how=s["ihow"],
            **proj,
        )
        out.append(p)
        if s.get("dec"):
            out.append(
                {**p, "kind": "path_decode", "decoder": s["dec"], "checkpoint": s.get("deck")}
            )
    return out


def run(store, t: dict, progress=None) -> Any:
    """Compute (or look up, on a cached_only store) one sampling task."""
    from latentmap.pipeline.decoding import decoded_latents
    from latentmap.pipeline.sampling import interpolate_path, place_on_map, sample_latents

    ds, layer, kind = t["dataset"], t["layer"], t["kind"]
    if kind in ("samples", "sample_xy", "decode"):
        e = sample_latents(
            store, ds, layer, n=t["n"], dist=t["dist"], k=t["k"], seed=t["seed"], region=t["region"]
        )
        if kind == "samples":
            return e
        latents = np.asarray(e["latents"])
    else:
        path = interpolate_path(store, ds, layer, t["a"], t["b"], steps=t["steps"], how=t["how"])
        latents = np.asarray(path["latents"])
    if kind in ("sample_xy", "path_xy"):
        return place_on_map(store, ds, layer, t["method"], t["params"], latents)
    return decoded_latents(store, ds, layer, latents, t["decoder"], t.get("checkpoint"))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def map_traces(store, spec: dict, done: dict | None, notices: list[str]) -> tuple[list, list]:
    """(overlay traces for the map, names of what is still computing)."""
    out: list[dict] = []
    waiting: list[str] = []
    for t in needed(spec):
        if t["kind"] not in ("sample_xy", "path_xy"):
            continue
        try:
            xy = tasks.lookup(store, t)
        except data.EXPECTED_ERRORS as e:
            notices.append(f"{'Samples' if t['kind'] == 'sample_xy' else 'Path'}: {e}")
            continue
        if xy is None:
            if err := tasks.task_error(done, t):
                notices.append(f"Could not place {t['kind'][:-3]}s on the map: {err}")
            else:
                waiting.append("samples" if t["kind"] == "sample_xy" else "the path")
            continue
        xy = np.asarray(xy)
        rows = _nearest_rows(store, spec, t)
        if t["kind"] == "sample_xy":
            out.append(
                {
                    "type": "scatter",
                    "mode": "markers+text",
                    "name": "samples",
                    "x": xy[:, 0].tolist(),
                    "y": xy[:, 1].tolist(),
                    "text": [str(i + 1) for i in range(len(xy))],
                    "textposition": "top center",
                    "textfont": {"size": 11, "color": SAMPLE_COLOR},
                    "marker": {
                        "symbol": "star",
                        "size": 14,
                        "color": "#ffffff",
                        "line": {"color": SAMPLE_COLOR, "width": 1.5},
                    },
                    "customdata": rows,
                    "hovertemplate": "sample %{text}: click for its nearest image<extra></extra>",
                    "showlegend": True,
                }
            )
        else:
            out.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": "interpolation",
                    "x": xy[:, 0].tolist(),
                    "y": xy[:, 1].tolist(),
                    "line": {"color": PATH_COLOR, "width": 2},
                    "marker": {"size": 8, "color": PATH_COLOR},
                    "customdata": rows,
                    "hovertemplate": "step %{pointNumber}<extra></extra>",
                    "showlegend": True,
                }
            )
    return out, waiting


def _nearest_rows(store, spec: dict, t: dict) -> list[int] | None:
    """The nearest real item of each sample / path step (the map's click target)."""
    from latentmap.pipeline.sampling import interpolate_path

    try:
        if t["kind"] == "sample_xy":
            e = tasks.lookup(store, sample_task(spec))
            return None if e is None else [int(r) for r in np.asarray(e["nearest"])[:, 0]]
        p = interpolate_path(
            store, t["dataset"], t["layer"], t["a"], t["b"], steps=t["steps"], how=t["how"]
        )
        return [int(r) for r in p["nearest"]]
    except data.EXPECTED_ERRORS:
        return None


def _decoded(store, t: dict, done: dict | None, notes: list[str]) -> list[bytes] | None:
    from latentmap.pipeline.decoding import entry_pngs

    try:
        e = tasks.lookup(store, t)
    except data.EXPECTED_ERRORS as err:
        notes.append(f"Decoder: {err}")
        return None
    if e is None:
        if err := tasks.task_error(done, t):
            notes.append(f"Decoder: {err}")
        return None
    return entry_pngs(e)


def _decoded_img(png: bytes | None) -> list:
    if not png:
        return []
    return [html.Img(src=_data_uri(png), className="decoded", title="decoded from the latent")]


def summary_block(info: dict, baseline: bool) -> html.Div:
    """Distinct hits, hubs, mean similarity and label shares: samples vs. random items."""
    s, b = info.get("summary") or {}, info.get("baseline") or {}

    def line(label: str, a: Any, r: Any) -> html.Tr:
        return html.Tr([html.Td(label), html.Td(a), html.Td(r)])

    def num(v: Any, d: int = 3) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    hubs = s.get("hubs") or []
    rows = [
        html.Tr([html.Th(""), html.Th("samples"), html.Th("random images")]),
        line("distinct nearest images", s.get("distinct", "–"), b.get("distinct", "–")),
        line(
            "mean cosine similarity", num(s.get("mean_similarity")), num(b.get("mean_similarity"))
        ),
        line(
            "images hit by ≥2 samples (hubs)",
            f"{len(hubs)} ({s.get('hub_hits', 0)} samples)",
            "–",
        ),
    ]
    labels = s.get("labels") or {}
    table = [html.Table(rows, className="summary-table")]
    if labels:
        shares = [
            html.Tr(
                [
                    html.Td(lab),
                    html.Td(f"{100 * v.get('hit_share', 0):.0f}%"),
                    html.Td(f"{100 * v.get('data_share', 0):.0f}%"),
                ]
            )
            for lab, v in list(labels.items())[:30]
        ]
        head = html.Tr([html.Th("label"), html.Th("of hits"), html.Th("of data")])
        table.append(html.Table([head, *shares], className="summary-table"))
    note = (
        "Showing the baseline: truly random images."
        if baseline
        else "Toggle the baseline to compare with the same number of random images."
    )
    return html.Div([*table, html.Div(note, className="field-hint")])


def topk_strip(store, ds: str, e, i: int, v: str | None = None) -> list:
    """The k nearest real items of sample ``i`` (shown when its card is clicked)."""
    near, sims = np.asarray(e["nearest"])[i], np.asarray(e["sims"])[i]
    cards = [
        card(ds, data.row_details(store, ds, int(r), None, v), float(sm), where=f"k{j}")
        for j, (r, sm) in enumerate(zip(near, sims, strict=True))
        if r >= 0
    ]
    return [
        html.H4(f"Sample #{i + 1}: its {len(cards)} nearest images", className="sub-title"),
        html.Div(cards, className="gallery"),
    ]


def panel(
    store,
    spec: dict | None,
    done: dict | None,
    focus: int | None = None,
    thumbs: dict | None = None,
):
    """(style, title, notice, summary, sample cards, path cards) of the sampling panel."""
    if not spec or not spec.get("sampling"):
        return HIDDEN, "Samples", None, None, [], []
    s = spec["sampling"]
    on = s.get("smp")
    has_path = s.get("ia") is not None and s.get("ib") is not None
    if not on and not has_path:
        return HIDDEN, "Samples", None, None, [], []
    ds = spec["dataset"]
    v = data.thumb_variant(thumbs, ds)
    notes: list[str] = []
    title, summary, cards, path_cards = "Samples", None, [], []
    wanted = needed(spec)
    for t in wanted:
        if t["kind"] == "samples":
            _, why = region_of(s)
            if why:
                notes.append(why)
            try:
                e = tasks.lookup(store, t)
            except data.EXPECTED_ERRORS as err:
                notes.append(str(err))
                continue
            if e is None:
                err = tasks.task_error(done, t)
                notes.append(f"Sampling failed: {err}" if err else "Sampling… (background job)")
                continue
            notes += list(e.info.get("notes") or [])
            dec_t = next((x for x in wanted if x["kind"] == "decode"), None)
            decoded = _decoded(store, dec_t, done, notes) if dec_t else None
            if not s.get("dec"):
                notes.append(
                    "No decoder: give one (TorchScript, or file.py:Class + checkpoint) mapping a "
                    f"{spec['layer']} latent to an image to see each sample decoded."
                )
            info = e.info
            summary = summary_block(info, s.get("sbase"))
            region = info.get("region")
            where = "" if not region else f" fitted to {info.get('fit_rows')} items of the region"
            title = f"{info.get('n')} samples ({info.get('dist')}, seed {info.get('seed')}){where}"
            if s.get("sbase"):
                rows = (info.get("baseline") or {}).get("rows") or list(e["baseline_rows"])
                title = f"{len(rows)} random images (baseline, seed {info.get('seed')})"
                cards = [
                    card(ds, data.row_details(store, ds, int(r), None, v), where=f"b{i}")
                    for i, r in enumerate(rows)
                ]
            else:
                near, sims = np.asarray(e["nearest"]), np.asarray(e["sims"])
                if isinstance(focus, int) and 0 <= focus < len(near):
                    path_cards += topk_strip(store, ds, e, focus, v)
                for i in range(len(near)):
                    r = int(near[i, 0])
                    if r < 0:
                        continue
                    extra = [html.Div(f"#{i + 1}", className="sample-no")]
                    extra += _decoded_img(decoded[i] if decoded else None)
                    cards.append(
                        card(
                            ds,
                            data.row_details(store, ds, r, None, v),
                            float(sims[i, 0]),
                            where=f"s{i}",
                            extra=extra,
                            title=f"sample {i + 1}: nearest real image row {r}; click for its "
                            "neighbours",
                        )
                    )
        elif t["kind"] == "path_xy":
            from latentmap.pipeline.sampling import interpolate_path

            try:
                p = interpolate_path(
                    store, ds, spec["layer"], t["a"], t["b"], steps=t["steps"], how=t["how"]
                )
            except data.EXPECTED_ERRORS as err:
                notes.append(f"Interpolation: {err}")
                continue
            dec_t = next((x for x in wanted if x["kind"] == "path_decode"), None)
            decoded = _decoded(store, dec_t, done, notes) if dec_t else None
            path_cards.append(
                html.H4(
                    f"Path {t['a']} → {t['b']} ({t['how']}, {t['steps']} steps)",
                    className="sub-title",
                )
            )
            strip = []
            for i, (r, sim) in enumerate(zip(p["nearest"], p["sims"], strict=True)):
                extra = [html.Div(f"t={p['t'][i]:.2f}", className="sample-no")]
                extra += _decoded_img(decoded[i] if decoded else None)
                strip.append(
                    card(
                        ds,
                        data.row_details(store, ds, int(r), None, v),
                        float(sim),
                        where=f"p{i}",
                        extra=extra,
                    )
                )
            path_cards.append(html.Div(strip, className="gallery"))
    return SHOWN_BLOCK, title, notice(notes, "info"), summary, cards, path_cards


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.SAMPLE_HEADER, "style"),
        Output(ids.SAMPLE_TITLE, "children"),
        Output(ids.SAMPLE_NOTICE, "children"),
        Output(ids.SAMPLE_SUMMARY, "children"),
        Output(ids.SAMPLE_GALLERY, "children"),
        Output(ids.PATH_GALLERY, "children"),
        Input(ids.SPEC, "data"),
        Input(ids.TASKS_DONE, "data"),
        Input(ids.SAMPLE_FOCUS, "data"),
        Input(ids.THUMBS, "data"),
    )
    def draw(spec, done, focus, thumbs):
        try:
            return panel(settings.store(), spec, done, focus, thumbs)
        except data.EXPECTED_ERRORS as e:
            log.warning("sampling: %s", e)
            return SHOWN_BLOCK, "Samples", notice(str(e), "error"), None, [], []

    @app.callback(
        Output(ids.SAMPLE_FOCUS, "data"),
        Input({"type": ids.CARD_TYPE, "row": ALL, "where": ALL}, "n_clicks"),
        Input(ids.SPEC, "data"),
        prevent_initial_call=True,
    )
    def focus_sample(_clicks, _spec):
        trig = ctx.triggered_id
        if isinstance(trig, dict) and str(trig.get("where", "")).startswith("s"):
            if ctx.triggered and ctx.triggered[0]["value"]:
                return int(trig["where"][1:])
            return no_update
        return None if trig == ids.SPEC else no_update

    @app.callback(
        Output(ids.SAMPLE_SEED, "value"),
        Input(ids.SAMPLE_REROLL, "n_clicks"),
        prevent_initial_call=True,
    )
    def reroll(_n):
        return random.SystemRandom().randrange(0, 100_000)

    @app.callback(
        Output(ids.SAMPLE_REGION, "value"),
        Output(ids.SAMPLE_ROWS, "data"),
        Input(ids.SAMPLE_USE_SELECTION, "n_clicks"),
        State(ids.GRAPH, "selectedData"),
        State(ids.SHOWN, "data"),
        prevent_initial_call=True,
    )
    def use_selection(_n, selected, shown):
        from latentmap.callbacks.neighbors import selected_rows

        try:
            rows = selected_rows(settings.store(), selected, shown)
        except data.EXPECTED_ERRORS:
            rows = []
        if not rows:
            return no_update, no_update
        return "selection", sorted(rows)

    @app.callback(
        Output(ids.INTERP_A, "data"),
        Output(ids.INTERP_B, "data"),
        Input(ids.INTERP_SET_A, "n_clicks"),
        Input(ids.INTERP_SET_B, "n_clicks"),
        Input(ids.INTERP_CLEAR, "n_clicks"),
        State(ids.SELECTED, "data"),
        prevent_initial_call=True,
    )
    def set_path(_a, _b, _c, selected):
        if ctx.triggered_id == ids.INTERP_CLEAR:
            return None, None
        if selected is None:
            return no_update, no_update
        if ctx.triggered_id == ids.INTERP_SET_A:
            return selected, no_update
        return no_update, selected

    @app.callback(
        Output(ids.INTERP_INFO, "children"),
        Input(ids.INTERP_A, "data"),
        Input(ids.INTERP_B, "data"),
    )
    def path_info(a, b):
        if a is None and b is None:
            return "Click an item on the map, then set it as the start or the end."
        return (
            f"start: {'–' if a is None else f'row {a}'} · end: {'–' if b is None else f'row {b}'}"
        )
