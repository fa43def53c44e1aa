"""URL <-> controls: one callback owns both directions.

A change of the location's ``search`` (first load, back/forward, a pasted link) restores the
controls from the URL; a change of any control writes the URL. ``ctx.triggered_id`` tells
which. Every value is checked by ``state.resolve_view``; bad ones fall back with a notice.
"""

from __future__ import annotations

import logging
from typing import Any

from dash import Dash, Input, Output, State, ctx, no_update
from latentmap.callbacks import data
from latentmap.callbacks.state import NONE, View, parse_query, raw_from_view, resolve_view, to_query
from latentmap.components import ids
from latentmap.components.gallery import notice
from latentmap.settings import Settings

log = logging.getLogger(__name__)

# (component id, property, raw key) of every control the URL describes, in callback order.
CONTROLS: list[tuple[str, str, str]] = [
    (ids.DATASET, "value", "ds"),
    (ids.LAYER, "value", "layer"),
    (ids.METHOD, "value", "method"),
    (ids.PERPLEXITY, "value", "perplexity"),
    (ids.N_NEIGHBORS, "value", "n_neighbors"),
    (ids.MIN_DIST, "value", "min_dist"),
    (ids.COLOR, "value", "color"),
    (ids.SYMBOL, "value", "symbol"),
    (ids.FILTER_COL, "value", "filter"),
    (ids.FILTER_VALUES, "value", "fv"),
    (ids.FILTER_MODE, "value", "fmode"),
    (ids.K, "value", "k"),
    (ids.SELECTED, "data", "sel"),
    (ids.CAMERA, "data", "cam"),
    (ids.TAB, "value", "tab"),
    (ids.OVERLAYS, "value", "ov"),
    (ids.LAYERS_PICK, "value", "layers"),
    (ids.ALIGN, "value", "align"),
    (ids.COMPARE, "value", "cmp"),
    (ids.POOL, "value", "pool"),
    (ids.POOL_CHANS, "value", "pchan"),
    (ids.BAND_R, "value", "br"),
    (ids.BAND_G, "value", "bg"),
    (ids.BAND_B, "value", "bb"),
    (ids.STRETCH, "value", "stretch"),
    (ids.CHAN_COL, "value", "ccol"),
    (ids.CHAN_STAT, "value", "cstat"),
    (ids.CHAN_GROUPS, "value", "cgrp"),
    (ids.CHAN, "data", "chan"),
    (ids.TRUE_COL, "value", "true"),
    (ids.PRED_COL, "value", "pred"),
    (ids.CNORM, "value", "cnorm"),
    (ids.DMETRIC, "value", "dmetric"),
    (ids.CELL, "data", "cell"),
    (ids.SAMPLE_ON, "value", "smp"),
    (ids.SAMPLE_N, "value", "sn"),
    (ids.SAMPLE_DIST, "value", "sdist"),
    (ids.SAMPLE_K, "value", "sk"),
    (ids.SAMPLE_SEED, "value", "sseed"),
    (ids.SAMPLE_REGION, "value", "sreg"),
    (ids.SAMPLE_VALUE, "value", "sval"),
    (ids.SAMPLE_ROWS, "data", "srows"),
    (ids.SAMPLE_BASE, "value", "sbase"),
    (ids.INTERP_A, "data", "ia"),
    (ids.INTERP_B, "data", "ib"),
    (ids.INTERP_STEPS, "value", "isteps"),
    (ids.INTERP_HOW, "value", "ihow"),
    (ids.DECODER, "value", "dec"),
    (ids.DECODER_CKPT, "value", "deck"),
]
OPTIONS = [
    ids.DATASET,
    ids.LAYER,
    ids.COLOR,
    ids.SYMBOL,
    ids.FILTER_COL,
    ids.FILTER_VALUES,
    ids.HOVER_COLS,
    ids.LAYERS_PICK,
    ids.TRUE_COL,
    ids.PRED_COL,
    ids.SAMPLE_REGION,
    ids.SAMPLE_VALUE,
    ids.CHAN_COL,
    ids.CHAN_GROUPS,
    ids.BAND_R,
    ids.BAND_G,
    ids.BAND_B,
]
# what a user change of one control resets (the rest of the view is kept)
RESETS = {
    ids.DATASET: (
        "layer",
        "filter",
        "fv",
        "sel",
        "cam",
        "layers",
        "true",
        "pred",
        "cell",
        "sreg",
        "sval",
        "srows",
        "ia",
        "ib",
        "br",
        "bg",
        "bb",
        "stretch",
    ),  # fmt: skip
    ids.SAMPLE_REGION: ("sval", "srows"),
    ids.TRUE_COL: ("cell",),
    ids.PRED_COL: ("cell",),
    ids.LAYER: ("cam", "pool", "pchan", "chan"),
    ids.POOL: ("cam",),
    ids.POOL_CHANS: ("cam",),
    ids.METHOD: ("cam",),
    ids.PERPLEXITY: ("cam",),
    ids.N_NEIGHBORS: ("cam",),
    ids.MIN_DIST: ("cam",),
    ids.FILTER_COL: ("fv",),
}
RESTORE_TRIGGERS = (None, ids.LOCATION)


def control_values(view: View) -> dict[str, Any]:
    """Raw key -> control value for a view."""
    raw = raw_from_view(view)
    for key in ("perplexity", "n_neighbors", "min_dist"):
        raw.setdefault(key, no_update)  # keep the inputs of other methods as they are
    raw["fv"] = list(view.filter_values)
    raw["cam"] = list(view.camera) if view.camera else None
    raw["cnorm"] = ["1"] if view.cnorm else []
    raw["smp"] = ["1"] if view.sampling["smp"] else []
    raw["sbase"] = ["1"] if view.sampling["sbase"] else []
    raw["srows"] = list(view.sampling["srows"]) or None
    pool, _, chans = (view.pool or "").partition(":")
    raw["pool"] = pool or "default"
    raw["pchan"] = chans
    return raw


def options(store, view: View) -> dict[str, list]:
    out: dict[str, list] = {i: [] for i in OPTIONS}
    out[ids.DATASET] = data.dataset_options(store)
    if not view.dataset:
        return out
    out[ids.LAYER] = store.layers(view.dataset)
    cols = data.columns(store, view.dataset)
    names = [c for c in cols if c != "has_nan" or cols[c]["values"] != ["False"]]
    out[ids.COLOR] = names
    cat = [c for c in names if cols[c]["kind"] == "categorical" and len(cols[c]["values"]) <= 60]
    out[ids.SYMBOL] = cat
    out[ids.FILTER_COL] = [c for c in names if cols[c]["kind"] == "categorical"]
    if view.filter_col:
        out[ids.FILTER_VALUES] = cols[view.filter_col]["values"][:2000]
    out[ids.HOVER_COLS] = names
    out[ids.LAYERS_PICK] = out[ids.LAYER]
    out[ids.TRUE_COL] = names
    out[ids.PRED_COL] = names
    cat = [c for c in names if cols[c]["kind"] == "categorical"]
    out[ids.CHAN_COL] = [c for c in cat if data.GROUP_SEP not in c]
    from latentmap.pipeline.groups import list_groups

    out[ids.CHAN_GROUPS] = list_groups(store, view.dataset)
    bands = _band_info(store, view.dataset)
    if bands is not None and bands.available:
        opts = [{"label": str(i), "value": i} for i in range(int(bands.n_bands or 0))]
        out[ids.BAND_R] = out[ids.BAND_G] = out[ids.BAND_B] = opts
    out[ids.SAMPLE_REGION] = [{"label": "the box / lasso selection", "value": "selection"}] + [
        c for c in names if cols[c]["kind"] == "categorical"
    ]
    reg = view.sampling.get("sreg")
    if reg and reg != "selection" and reg in cols:
        out[ids.SAMPLE_VALUE] = cols[reg]["values"][:2000]
    return out


def _band_info(store, ds: str | None):
    from latentmap.pipeline.bands import band_info

    if not ds:
        return None
    try:
        return band_info(store, ds)
    except (OSError, ValueError, KeyError):
        return None


def band_controls(store, view: View) -> dict[str, Any]:
    """Raw key -> value of the band picker: the view's choice, else the encoded bands."""
    from latentmap.pipeline.bands import DEFAULT_PERCENTILES

    if view.thumbs:
        rgb, pct = view.thumbs
    else:
        info = _band_info(store, view.dataset)
        if info is None or not info.available:
            return {"br": None, "bg": None, "bb": None, "stretch": list(DEFAULT_PERCENTILES)}
        n = int(info.n_bands or 3)
        rgb = tuple(min(int(b), n - 1) for b in info.encoded_rgb)
        rgb = rgb if n >= 3 else (rgb[0],) * 3
        pct = DEFAULT_PERCENTILES
    return {"br": rgb[0], "bg": rgb[1], "bb": rgb[2], "stretch": [float(p) for p in pct]}


def _combine_bands(raw: dict[str, Any]) -> None:
    """The picker's three bands and stretch slider -> the link's ``rgb`` and ``stretch``."""
    bands = [raw.pop(k, None) for k in ("br", "bg", "bb")]
    raw["rgb"] = ",".join(str(b) for b in bands) if all(b is not None for b in bands) else None
    st = raw.get("stretch")
    ok = isinstance(st, (list, tuple)) and len(st) == 2
    raw["stretch"] = ",".join(f"{float(p):g}" for p in st) if ok else None


def dataset_info(store, view: View) -> str:
    if not view.dataset:
        return ""
    m = store.manifest(view.dataset)
    model = m.get("model", {}).get("spec", "")
    dim = m.get("layers", {}).get(view.layer, {}).get("dim")
    parts = [f"{int(m.get('n', 0)):,} items", f"{view.layer}: {dim}-d" if dim else "", model]
    return " · ".join(p for p in parts if p)


def _no_code_from_links(raw: dict[str, Any]) -> list[str]:
    """A link never makes the server run Python: a decoder named as file.py:Class or
    module:Class is dropped from a restored URL (a TorchScript file, which runs no Python
    code, is kept). Typed into the decoder box by the user, it still works."""
    from pathlib import Path

    spec = str(raw.get("dec") or "").strip()
    if ":" not in spec:
        return []
    try:
        if Path(spec).expanduser().is_file():
            return []
    except (OSError, RuntimeError):  # name too long, ~unknown-user: not a file
        pass
    raw.pop("dec", None)
    raw.pop("deck", None)
    return [
        "The link names a Python decoder class; links never load Python code: "
        "enter it in the decoder box to use it."
    ]


def sync(
    store,
    preferred_dataset: str | None,
    trigger: Any,
    search: str | None,
    values: dict[str, Any],
    shown: dict | None,
    spec: dict | None,
    diag_spec: dict | None = None,
    thumbs: dict | None = None,
) -> dict[str, Any]:
    """All outputs of the URL callback, as a dict (plain function, testable without Dash).

    Keys: "search", "controls" (raw key -> value or no_update), "options" (id -> list),
    "spec", "diag_spec", "thumbs", "camera_restore", "notices", "info".
    """
    notices: list[str] = []
    restoring = trigger in RESTORE_TRIGGERS
    if restoring:
        raw, notices = parse_query(search)
        notices += _no_code_from_links(raw)
    else:
        raw = {key: values.get(key) for _, _, key in CONTROLS}
        raw["color"] = raw["color"] or None
        raw["cnorm"] = "1" if raw.get("cnorm") else "0"
        pchan = str(raw.pop("pchan", "") or "").replace(" ", "")
        if raw.get("pool") not in (None, "", "default") and pchan:
            raw["pool"] = f"{raw['pool']}:{pchan}"
        for key in ("true", "pred"):
            if raw.get(key) is None:
                raw[key] = NONE  # a cleared dropdown means "no column", not "default"
        for key in RESETS.get(trigger, ()):
            raw.pop(key, None)
        _combine_bands(raw)
        if trigger == ids.REDUCE_CANCEL and shown:
            raw.update(ds=shown["dataset"], layer=shown["layer"], method=shown["method"])
            raw.update(shown.get("params") or {})
        if trigger == ids.DATASET:
            raw = {k: v for k, v in raw.items() if v is not None}
    view, more = resolve_view(store, raw, preferred_dataset=preferred_dataset, quiet=not restoring)
    notices += more
    new_search = to_query(view)
    controls = {**control_values(view), **band_controls(store, view)}
    out_controls = {}
    for _, _, key in CONTROLS:
        v = controls.get(key, no_update)
        out_controls[key] = no_update if (v is not no_update and v == values.get(key)) else v
    new_spec = view.spec()
    new_diag = view.diag_spec()
    return {
        "diag_spec": no_update if new_diag == diag_spec else new_diag,
        "search": no_update if restoring or new_search == (search or "") else new_search,
        "controls": out_controls,
        "options": options(store, view),
        "spec": no_update if new_spec == spec else new_spec,
        "thumbs": no_update if view.thumbs_spec() == thumbs else view.thumbs_spec(),
        "camera_restore": {"camera": controls["cam"]} if trigger == ids.LOCATION else no_update,
        "notices": notices,
        "info": dataset_info(store, view),
    }


def register(app: Dash, settings: Settings) -> None:
    outputs = (
        [Output(ids.LOCATION, "search")]
        + [Output(i, p) for i, p, _ in CONTROLS]
        + [Output(i, "options") for i in OPTIONS]
        + [
            Output(ids.SPEC, "data"),
            Output(ids.DIAG_SPEC, "data"),
            Output(ids.THUMBS, "data"),
            Output(ids.CAMERA_RESTORE, "data"),
            Output(ids.URL_NOTICE, "children"),
            Output(ids.DATASET_INFO, "children"),
        ]
    )
    inputs = (
        [Input(ids.LOCATION, "search")]
        + [Input(i, p) for i, p, _ in CONTROLS]
        + [
            Input(ids.REDUCE_CANCEL, "n_clicks"),
            Input(ids.DATASETS_VERSION, "data"),
            Input(ids.GROUPS_VERSION, "data"),
        ]
    )
    states = [
        State(ids.SHOWN, "data"),
        State(ids.SPEC, "data"),
        State(ids.DIAG_SPEC, "data"),
        State(ids.THUMBS, "data"),
    ]

    @app.callback(outputs, inputs, states)
    def url_sync(search, *args):
        n = len(CONTROLS)
        values = {key: v for (_, _, key), v in zip(CONTROLS, args[:n], strict=True)}
        shown, spec, diag_spec, thumbs = args[n + 3], args[n + 4], args[n + 5], args[n + 6]
        store = settings.store()
        try:
            out = sync(
                store,
                settings.dataset,
                ctx.triggered_id,
                search,
                values,
                shown,
                spec,
                diag_spec,
                thumbs,
            )
        except data.EXPECTED_ERRORS as e:
            log.warning("URL state: %s", e)
            return [no_update] * (len(outputs) - 2) + [notice(str(e), "error"), no_update]
        return (
            [out["search"]]
            + [out["controls"][key] for _, _, key in CONTROLS]
            + [out["options"][i] for i in OPTIONS]
            + [out["spec"], out["diag_spec"], out["thumbs"], out["camera_restore"]]
            + [notice(out["notices"]), out["info"]]
        )
