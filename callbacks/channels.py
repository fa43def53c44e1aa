"""Channels tab (seed 002): per-category channel means / stds / spatial mean maps of a layer,
click a cell to colour the map by that channel; category-group mappings; the pooling control
of layers that kept their spatial latents.
"""

from __future__ import annotations

import logging

import numpy as np
from dash import Dash, Input, Output, State, ctx, no_update, set_props
from latentmap.callbacks import data, tasks
from latentmap.components import ids
from latentmap.components.figures import empty_figure
from latentmap.components.gallery import notice
from latentmap.components.layout import HIDDEN, SHOWN_BLOCK
from latentmap.settings import Settings

log = logging.getLogger(__name__)


def panel(store, diag: dict | None, done: dict | None):
    """(notice, figure) of the Channels tab."""
    from latentmap.components.channel_figures import channel_heatmap, channel_maps_figure

    if not diag or not diag.get("layer"):
        return notice("No dataset.", "info"), empty_figure("")
    t = tasks.channel_task(diag)
    if t is None:
        msg = "Pick a categorical column to compare channels across its categories."
        return notice(msg, "warning"), empty_figure("No column")
    try:
        e = tasks.lookup(store, t)
    except data.EXPECTED_ERRORS as err:
        return notice(str(err), "warning"), empty_figure("")
    if e is None:
        err = tasks.task_error(done, t)
        msg = f"failed: {err}" if err else f"Computing the channel analysis of {t['layer']}…"
        return None, empty_figure(msg)
    info = e.info
    cats = list(info["categories"])
    stat = (diag.get("channels") or {}).get("cstat", "means")
    chan = (diag.get("channels") or {}).get("chan")
    notes = list(info.get("notes") or [])
    by = f"{info['column']}" + (f" grouped by {t['groups']}" if t.get("groups") else "")
    if stat == "maps":
        if "maps" not in e.arrays:
            notes.append(f"{t['layer']} kept no spatial latents: no maps (means shown instead).")
            stat = "means"
        else:
            fig = channel_maps_figure(
                cats, np.asarray(e["maps"]), title=f"{t['layer']}: mean map per channel, by {by}"
            )
            return notice(notes, "info") if notes else None, fig
    M = np.asarray(e["stds" if stat == "stds" else "means"])
    fig = channel_heatmap(
        cats,
        M,
        title=f"{t['layer']}: channel {'std' if stat == 'stds' else 'mean'} per {by}",
        counts=list(np.asarray(e["counts"])),
        value_name="std" if stat == "stds" else "mean",
        highlight_channel=chan,
    )
    return notice(notes, "info") if notes else None, fig


def save_mapping(store, ds: str | None, name: str | None, text: str | None):
    """(notice, bumped version or no_update) for the Save mapping button."""
    from latentmap.pipeline.groups import GroupsError, apply_groups, parse_groups_text, save_groups

    if not ds:
        return notice("Pick a dataset first.", "warning"), no_update
    if not (name or "").strip() or not (text or "").strip():
        return notice("Give the mapping a name and its text (YAML or JSON).", "warning"), no_update
    try:
        groups = parse_groups_text(text, source=f"mapping {name!r}")
        save_groups(store, ds, name.strip(), groups)
    except GroupsError as e:
        return notice(str(e), "error"), no_update
    meta = store.metadata(ds)
    warnings: list[str] = []
    used = []
    for col in meta.columns:
        grouped, warn = apply_groups(meta[col], groups)
        if any(v not in (None, "(other)") for v in grouped):
            used.append(str(col))
            warnings += warn
    msg = [
        f"Saved mapping {name.strip()!r}" + (f" (applies to {', '.join(used)})." if used else ".")
    ]
    if not used:
        msg.append("None of its categories occur in this dataset's columns.")
    return notice(msg + warnings, "info"), 1


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.CHAN_NOTICE, "children"),
        Output(ids.CHAN_GRAPH, "figure"),
        Input(ids.DIAG_SPEC, "data"),
        Input(ids.TASKS_DONE, "data"),
    )
    def draw(diag, done):
        if not diag or diag.get("tab") != "chan":
            return no_update, no_update
        try:
            return panel(settings.store(), diag, done)
        except data.EXPECTED_ERRORS as e:
            log.warning("channels: %s", e)
            return notice(str(e), "error"), empty_figure("")

    @app.callback(
        Output(ids.CHAN, "data", allow_duplicate=True),
        Input(ids.CHAN_GRAPH, "clickData"),
        Input(ids.CHAN_CLEAR, "n_clicks"),
        prevent_initial_call=True,
    )
    def pick_channel(click, _clear):
        from latentmap.components.channel_figures import channel_from_click

        if ctx.triggered_id == ids.CHAN_CLEAR:
            return None
        c = channel_from_click(click)
        return no_update if c is None else int(c)

    @app.callback(
        Output(ids.GROUPS_NOTICE, "children"),
        Output(ids.GROUPS_VERSION, "data"),
        Input(ids.GROUPS_SAVE, "n_clicks"),
        State(ids.DATASET, "value"),
        State(ids.GROUPS_NAME, "value"),
        State(ids.GROUPS_TEXT, "value"),
        State(ids.GROUPS_VERSION, "data"),
        prevent_initial_call=True,
    )
    def save(_n, ds, name, text, version):
        try:
            msg, bump = save_mapping(settings.store(), ds, name, text)
        except data.EXPECTED_ERRORS as e:
            return notice(str(e), "error"), no_update
        return msg, (version or 0) + 1 if bump is not no_update else no_update

    @app.callback(Input(ids.TASKS_DONE, "data"), State(ids.SPEC, "data"))
    def pooled(_done, spec):
        # set_props, not an Output: SPEC -> tasks job -> TASKS_DONE -> URL callback -> SPEC
        # would be a dependency cycle, which Dash refuses to run
        if not spec or not spec.get("pool_pending"):
            return
        base, pool = spec["pool_pending"]
        name = f"{base}@{pool}"
        try:
            ready = name in settings.store().layers(spec["dataset"])
        except data.EXPECTED_ERRORS:
            return
        if ready:
            set_props(ids.LAYER, {"value": name})

    @app.callback(
        Output(ids.POOL_BOX, "style"),
        Input(ids.SPEC, "data"),
    )
    def pool_box(spec):
        from latentmap.pipeline.spatial import spatial_layers

        if not spec or not spec.get("layer"):
            return HIDDEN
        try:
            shapes = spatial_layers(settings.store(), spec["dataset"])
        except data.EXPECTED_ERRORS:
            return HIDDEN
        return SHOWN_BLOCK if spec["layer"].split("@")[0] in shapes else HIDDEN
