"""Thumbnail band picker: which bands make the RGB preview and the contrast stretch.

The URL callback owns the choice (``rgb`` / ``stretch`` in the link) and writes the THUMBS
store; the tasks job regenerates the thumbnails of a new choice in the background
(``pipeline.bands.ensure_thumbs``); once they are written the cards switch to them.
"""

from __future__ import annotations

import logging

from dash import Dash, Input, Output, set_props
from latentmap.callbacks import data, tasks
from latentmap.components import ids
from latentmap.components.layout import HIDDEN, SHOWN_BLOCK
from latentmap.settings import Settings

log = logging.getLogger(__name__)


def box(store, spec: dict | None, thumbs: dict | None, done: dict | None):
    """(style, note) of the band picker for the shown dataset."""
    from latentmap.pipeline.bands import band_info, describe

    ds = (spec or {}).get("dataset")
    if not ds:
        return HIDDEN, None
    try:
        info = band_info(store, ds)
    except data.EXPECTED_ERRORS:
        return HIDDEN, None
    if not info.available:
        return HIDDEN, None
    n = int(info.n_bands or 0)
    bands = f"{n} band{'s' if n != 1 else ''}"
    if n < 3:
        bands += " (greyscale preview of the red choice)"
    if not thumbs or thumbs.get("dataset") != ds:
        return SHOWN_BLOCK, f"{bands} · thumbnails as encoded"
    want = thumbs["want"]
    if thumbs.get("v"):
        return SHOWN_BLOCK, f"{bands} · showing {describe(want)}"
    err = tasks.task_error(done, tasks.task("thumbs", ds, None, variant=want))
    if err:
        return SHOWN_BLOCK, f"Could not make thumbnails with {describe(want)}: {err}"
    return SHOWN_BLOCK, f"{bands} · making thumbnails with {describe(want)}…"


def ready_thumbs(store, thumbs: dict | None) -> dict | None:
    """THUMBS with the wanted variant switched on once its thumbnails exist (else None)."""
    from latentmap.pipeline.bands import ready_variant

    if not thumbs or not thumbs.get("want") or thumbs.get("v"):
        return None
    if ready_variant(store, thumbs["dataset"], thumbs["want"]):
        return {**thumbs, "v": thumbs["want"]}
    return None


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.BANDS_BOX, "style"),
        Output(ids.BANDS_NOTE, "children"),
        Input(ids.SPEC, "data"),
        Input(ids.THUMBS, "data"),
        Input(ids.TASKS_DONE, "data"),
    )
    def band_box(spec, thumbs, done):
        return box(settings.store(), spec, thumbs, done)

    @app.callback(Input(ids.TASKS_DONE, "data"), Input(ids.THUMBS, "data"))
    def thumbs_made(_done, thumbs):
        # set_props, not an Output: THUMBS -> tasks job -> TASKS_DONE -> THUMBS would be a
        # dependency cycle, which Dash refuses to run. (Two output-less callbacks with the same
        # inputs get the same id in Dash, and the later one replaces the other: channels.pooled
        # listens to TASKS_DONE alone, so THUMBS is an input here too.)
        try:
            new = ready_thumbs(settings.store(), thumbs)
        except data.EXPECTED_ERRORS as e:
            log.info("thumbnails: %s", e)
            return
        if new is not None:
            set_props(ids.THUMBS, {"data": new})
