"""The data panel: the list of cached datasets and the encode job (background, cancellable).

The dataset and layer pickers themselves belong to the URL callback (``url.py``): a finished
encode bumps ``DATASETS_VERSION``, which refreshes their options there.
"""

from __future__ import annotations

import logging

from dash import Dash, Input, Output, State, dcc, html, no_update
from latentmap.callbacks.data import EXPECTED_ERRORS
from latentmap.components import ids
from latentmap.components.gallery import dataset_table, notice
from latentmap.components.layout import HIDDEN, SHOWN_FLEX
from latentmap.settings import Settings

log = logging.getLogger(__name__)


def _text(value) -> str | None:
    value = (value or "").strip() if isinstance(value, str) else value
    return value or None


def allows_code(settings) -> bool:
    """May the web form load Python model classes (``file.py:Class`` / ``module:Class``)? Not on
    a shared server (credentials set) unless ``LATENTMAP_ALLOW_CODE=1``: any signed-in user
    could otherwise run Python files that exist on the server."""
    import os

    if os.environ.get("LATENTMAP_ALLOW_CODE", "").lower() in ("1", "true", "yes", "on"):
        return True
    return not (settings.users or settings.auth_file)


def encode_request(
    source,
    model,
    checkpoint,
    layers,
    pool,
    labels,
    name,
    device: str = "auto",
    *,
    allow_code: bool = True,
):
    """An EncodeRequest from the form's fields (raises EncodeError for a missing folder, a
    ``~user`` that does not exist, or Python model code where ``allow_code`` is False)."""
    from pathlib import Path

    from latentmap.pipeline.jobs import EncodeError, EncodeRequest

    source = _text(source)
    if not source:
        raise EncodeError("enter a folder of images or an embeddings file to encode")
    for what, value in (("folder", source), ("labels file", _text(labels))):
        try:
            Path(value or "").expanduser()
        except RuntimeError:
            raise EncodeError(f"the {what} {value!r} names a user that does not exist") from None
    spec = _text(model) or "pixels"
    if not allow_code and ":" in spec:
        raise EncodeError(
            f"{spec!r} is Python code: on a shared server the web form runs built-in and "
            "TorchScript models only (use the CLI, or set LATENTMAP_ALLOW_CODE=1)"
        )
    layer_list = tuple(p.strip() for p in (layers or "").split(",") if p.strip())
    return EncodeRequest(
        source=source,
        model=spec,
        checkpoint=_text(checkpoint),
        layers=layer_list,
        pool=_text(pool) or "mean",
        labels=_text(labels),
        name=_text(name),
        device=device,
    )


def run_encode(store, req, set_progress=None, *, redis_url=None):
    """Run an encode; (notice component, ok) with a link to the new dataset on success.

    The encode job ends with every layer's PCA map; search indexes and the t-SNE / UMAP maps
    then start in the background (``pipeline.precompute.launch``), on the Celery workers when
    ``redis_url`` is set."""
    from latentmap.pipeline.jobs import encode
    from latentmap.pipeline.precompute import launch

    def progress(done: int, total: int, message: str) -> None:
        if set_progress is not None:
            set_progress((str(done), str(max(total, 1)), f"{done:,} / {total:,} · {message}"))

    try:
        result = encode(store, req, progress=progress)
    except EXPECTED_ERRORS as e:
        log.warning("encode failed: %s", e)
        return notice(f"Encode failed: {e}", "error"), False
    lines = [f"Encoded {result.n_encoded:,} items in {result.seconds:.1f} s."]
    if launch(store.root, result.ds_id, redis_url):
        lines.append(
            "Search indexes and the t-SNE / UMAP maps are being computed in the background "
            "(see the status page); the PCA map is ready now."
        )
    if result.skipped:
        lines.append(
            f"{len(result.skipped)} file(s) skipped, e.g. {result.skipped[0][0]}: {result.skipped[0][1]}"
        )
    lines += result.notices
    body = html.Div(
        [
            notice(lines, "info"),
            dcc.Link("Open the new dataset →", href=f"?ds={result.ds_id}", className="btn"),
        ]
    )
    return body, True


def register(app: Dash, settings: Settings) -> None:
    @app.callback(
        Output(ids.DATASETS_TABLE, "children"),
        Input(ids.DATASETS_VERSION, "data"),
        Input(ids.DATASETS_REFRESH, "n_clicks"),
    )
    def list_datasets(_version, _clicks):
        try:
            return dataset_table(settings.store().list_datasets())
        except EXPECTED_ERRORS as e:
            return notice(str(e), "error")

    @app.callback(
        Output(ids.ENCODE_NOTICE, "children"),
        Output(ids.DATASETS_VERSION, "data"),
        Input(ids.ENCODE_START, "n_clicks"),
        State(ids.ENCODE_SOURCE, "value"),
        State(ids.ENCODE_MODEL, "value"),
        State(ids.ENCODE_CHECKPOINT, "value"),
        State(ids.ENCODE_LAYERS, "value"),
        State(ids.ENCODE_POOL, "value"),
        State(ids.ENCODE_LABELS, "value"),
        State(ids.ENCODE_NAME, "value"),
        State(ids.DATASETS_VERSION, "data"),
        background=True,
        running=[
            (Output(ids.ENCODE_START, "disabled"), True, False),
            (Output(ids.ENCODE_CANCEL, "disabled"), False, True),
            (Output(ids.ENCODE_BOX, "style"), SHOWN_FLEX, HIDDEN),
        ],
        progress=[
            Output(ids.ENCODE_PROGRESS, "value"),
            Output(ids.ENCODE_PROGRESS, "max"),
            Output(ids.ENCODE_LABEL, "children"),
        ],
        progress_default=["0", "100", ""],
        cancel=[Input(ids.ENCODE_CANCEL, "n_clicks")],
        prevent_initial_call=True,
        interval=700,
    )
    def start_encode(
        set_progress, clicks, source, model, checkpoint, layers, pool, labels, name, version
    ):
        if not clicks:
            return no_update, no_update
        try:
            req = encode_request(
                source,
                model,
                checkpoint,
                layers,
                pool,
                labels,
                name,
                settings.device,
                allow_code=allows_code(settings),
            )
        except EXPECTED_ERRORS as e:
            return notice(str(e), "error"), no_update
        body, ok = run_encode(settings.store(), req, set_progress, redis_url=settings.redis_url)
        return body, (int(version or 0) + 1) if ok else no_update
