"""The explorer's app factory: ``create_app(settings)`` -> a Dash app.

Nothing heavy happens at import or creation: no data is read, no torch / umap is imported.
``server`` (for gunicorn: ``gunicorn 'latentmap.app:server'``) is built on first access from
``LATENTMAP_*`` environment settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dash import Dash, set_props
from flask import abort, request, send_file
from latentmap.auth import protect
from latentmap.callbacks import (
    bands,
    channels,
    datasets,
    diagnostics,
    exports,
    layers,
    neighbors,
    reduction,
    sampling,
    scatter,
    tasks,
    url,
)
from latentmap.callbacks.manager import make_manager
from latentmap.components import ids
from latentmap.components.gallery import notice
from latentmap.components.layout import build_layout
from latentmap.pipeline.store import StoreError
from latentmap.settings import Settings
from latentmap.status import register_status

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
THUMB_MAX_AGE = 24 * 3600


def _on_error(err: Exception) -> None:
    """Last line of defence: log the traceback, show one line, never a traceback, in the page."""
    log.exception("callback failed: %s", err)
    set_props(
        ids.GLOBAL_NOTICE,
        {
            "children": notice(
                f"Something went wrong ({type(err).__name__}); see the server log.", "error"
            )
        },
    )


def register_routes(app: Dash, settings: Settings) -> None:
    """Flask routes: thumbnails by dataset id and integer row (never a path from the request)."""

    @app.server.route("/thumb/<ds_id>/<int:row>.png")
    def thumbnail(ds_id: str, row: int):
        store = settings.store()
        try:
            path = store.thumbnail_path(ds_id, row, request.args.get("v") or None)
        except StoreError:
            path = None
        if path is None:
            abort(404)
        response = send_file(
            path, mimetype="image/png", max_age=THUMB_MAX_AGE, etag=True, conditional=True
        )
        response.headers["Cache-Control"] = f"public, max-age={THUMB_MAX_AGE}"
        return response

    @app.server.route("/reports/<ds_id>/<name>")
    def report_zip(ds_id: str, name: str):
        from latentmap.callbacks.diagnostics import REPORT_NAME
        from latentmap.pipeline.store import valid_dataset_id

        if not valid_dataset_id(ds_id) or not REPORT_NAME.fullmatch(name):
            abort(404)
        reports = settings.store().root / "reports"
        path = reports / ds_id / name
        if not path.is_file() or not path.resolve().is_relative_to(reports.resolve()):
            abort(404)  # missing, or a symlink out of the cache
        return send_file(path, mimetype="application/zip", as_attachment=True, download_name=name)

    @app.server.route("/thumb/<path:_anything>")
    def no_thumbnail(_anything: str):
        abort(404)  # anything else under /thumb/ (paths, negative rows...) is not found

    @app.server.after_request
    def _no_sniff(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/thumb/") and response.status_code == 404:
            response.headers["Cache-Control"] = "no-store"
        return response


def create_app(settings: Settings | None = None, *, celery_app=None) -> Dash:
    """Build the Dash app for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    app = Dash(
        __name__,
        title="latentmap",
        update_title=None,
        assets_folder=str(ASSETS),
        background_callback_manager=make_manager(settings, celery_app),
        suppress_callback_exceptions=True,
        compress=_has_flask_compress(),
        on_error=_on_error,
    )
    app.layout = build_layout()
    app.server.config["LATENTMAP_SETTINGS"] = settings
    register_routes(app, settings)
    register_status(app, settings)  # /status and /status.json: the job registry
    protect(app, settings)  # access control and request guards (auth.py); refuses open sharing
    for module in (
        url,
        scatter,
        neighbors,
        reduction,
        datasets,
        tasks,
        layers,
        diagnostics,
        sampling,
        channels,
        bands,
        exports,
    ):
        module.register(app, settings)
    return app


def _has_flask_compress() -> bool:
    try:
        import flask_compress  # noqa: F401
    except ImportError:
        return False
    return True


def __getattr__(name: str):
    # gunicorn 'latentmap.app:server': built on first access, never at import
    if name == "server":
        return create_app(Settings.from_env()).server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from latentmap.cli import main

    raise SystemExit(main(["serve", "--demo"]))
