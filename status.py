"""The job status page: ``/status`` (a plain HTML table) and ``/status.json``.

Lists running jobs with their progress, the last failed jobs with their error and the last
finished ones with their duration, from the registry ``pipeline.joblog`` keeps under the cache
(so it shows the jobs of every process sharing the cache), and the embedded server's warm UMAP
workers (``pipeline.localworker``). All text is HTML-escaped.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from flask import Response, jsonify
from latentmap.pipeline import joblog, localworker

STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em;min-width:40em}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.err{color:#a00;white-space:pre-wrap}.muted{color:#777}"
)


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)) or ts <= 0:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _secs(v: Any) -> str:
    return f"{v:.1f} s" if isinstance(v, (int, float)) else ""


def _pct(v: Any) -> str:
    return f"{100 * v:.0f} %" if isinstance(v, (int, float)) else ""


def _table(title: str, jobs: list[dict], columns: list[tuple[str, Any]]) -> str:
    head = f"<h2>{escape(title)} ({len(jobs)})</h2>"
    if not jobs:
        return head + '<p class="muted">none</p>'
    th = "".join(f"<th>{escape(name)}</th>" for name, _ in columns)
    rows = []
    for j in jobs:
        cells = []
        for name, get in columns:
            cls = ' class="err"' if name == "error" else ""
            cells.append(f"<td{cls}>{escape(str(get(j) or ''))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"{head}<table><tr>{th}</tr>{''.join(rows)}</table>"


def _workers(rows: list[dict]) -> str:
    """The embedded server's warm UMAP workers (none under Celery or with
    LATENTMAP_UMAP_WORKERS=0)."""
    if not rows:
        return ""

    def state(w: dict) -> str:
        if not w.get("ready"):
            return "compiling UMAP (once per start)"
        return f"busy: {w.get('current')}" if w.get("busy") else "ready"

    return _table(
        "Warm UMAP workers",
        rows,
        [
            ("process", lambda w: w.get("pid")),
            ("state", state),
            (
                "compiled in",
                lambda w: (
                    _secs(w.get("warm_seconds"))
                    or ("at its first UMAP (LATENTMAP_WARMUP=0)" if w.get("ready") else "")
                ),
            ),
            ("maps computed", lambda w: w.get("served")),
        ],
    )


def render_status(summary: dict[str, Any]) -> str:
    """The status page's HTML for a :func:`latentmap.pipeline.joblog.summary`."""
    base = [
        ("job", lambda j: j.get("job")),
        ("what", lambda j: j.get("detail")),
        ("dataset", lambda j: j.get("dataset")),
    ]
    running = _table(
        "Running",
        summary["running"],
        [
            *base,
            ("started", lambda j: _when(j.get("started"))),
            ("progress", lambda j: _pct(j.get("progress"))),
            ("message", lambda j: j.get("message")),
            ("process", lambda j: f"{j.get('host')}:{j.get('pid')}"),
        ],
    )
    failed = _table(
        "Failed",
        summary["failed"],
        [
            *base,
            ("started", lambda j: _when(j.get("started"))),
            ("after", lambda j: _secs(j.get("seconds"))),
            ("error", lambda j: j.get("error")),
        ],
    )
    finished = _table(
        "Finished",
        summary["finished"],
        [
            *base,
            ("started", lambda j: _when(j.get("started"))),
            ("duration", lambda j: _secs(j.get("seconds"))),
        ],
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='10'><title>latentmap jobs</title>"
        f"<style>{STYLE}</style></head><body><h1>latentmap jobs</h1>"
        f"<p class='muted'>as of {escape(_when(summary['now']))}; refreshes every 10 s; "
        "<a href='status.json'>JSON</a></p>"
        f"{running}{failed}{finished}{_workers(summary.get('umap_workers') or [])}</body></html>"
    )


def register_status(app, settings) -> None:
    """Add ``/status`` and ``/status.json`` to a Dash app's Flask server."""

    @app.server.route("/status.json")
    def status_json():
        response = jsonify(
            {**joblog.summary(settings.cache_dir), "umap_workers": localworker.states()}
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.server.route("/status")
    def status_page():
        html = render_status(
            {**joblog.summary(settings.cache_dir), "umap_workers": localworker.states()}
        )
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"})
