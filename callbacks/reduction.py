"""Uncomputed projections run as a background job with a progress bar and a cancel button.

The figure callback writes a request into ``REDUCE_REQUEST``; this job computes and caches
the projection (``pipeline.reduce.projection``) and answers with a token in ``REDUCE_DONE``
that makes the figure callback draw it. The old map stays usable meanwhile; a newer request
cancels a running one, and the cancel button stops it (the URL callback then puts the
controls back to what the map shows).
"""

from __future__ import annotations

import logging
import time

from dash import Dash, Input, Output, no_update
from latentmap.callbacks.data import EXPECTED_ERRORS
from latentmap.components import ids
from latentmap.components.layout import HIDDEN, SHOWN_FLEX
from latentmap.pipeline.joblog import job
from latentmap.settings import Settings

log = logging.getLogger(__name__)


def run_request(store, request: dict | None, set_progress=None) -> dict | None:
    """Compute the projection a request asks for; a token for REDUCE_DONE (errors included)."""
    from latentmap.pipeline.reduce import projection

    if not request or not isinstance(request.get("proj"), dict):
        return None
    proj = request["proj"]
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if set_progress is not None and (now - last[0] > 0.2 or fraction >= 1.0):
            last[0] = now
            set_progress((str(int(round(100 * fraction))), message))

    token = {"nonce": request.get("nonce"), "proj": proj}
    detail = f"{proj.get('method')} of {proj.get('layer')}"
    with job(store.root, "projection", dataset=proj.get("dataset"), detail=detail) as j:

        def tracked(fraction: float, message: str) -> None:
            j.progress(fraction, message)
            progress(fraction, message)

        try:
            projection(
                store,
                proj["dataset"],
                proj["layer"],
                proj["method"],
                proj.get("params"),
                progress=tracked,
            )
        except EXPECTED_ERRORS as e:
            log.warning("projection failed: %s", e)
            token["error"] = str(e)
            j.fail(e)
    return token


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.REDUCE_DONE, "data"),
        Input(ids.REDUCE_REQUEST, "data"),
        background=True,
        running=[
            (Output(ids.REDUCE_BOX, "style"), SHOWN_FLEX, HIDDEN),
            (Output(ids.REDUCE_CANCEL, "disabled"), False, True),
        ],
        progress=[Output(ids.REDUCE_PROGRESS, "value"), Output(ids.REDUCE_LABEL, "children")],
        progress_default=["0", ""],
        cancel=[Input(ids.REDUCE_CANCEL, "n_clicks")],
        prevent_initial_call=True,
        interval=500,
    )
    def compute_projection(set_progress, request):
        token = run_request(settings.store(), request, set_progress)
        return no_update if token is None else token
