"""Structured logging of background jobs, and a small on-disk registry of them.

Every job (an encode, a projection, a diagnostics task...) logs one JSON line per event to the
``latentmap.jobs`` logger::

    {"event": "job.start", "job": "projection", "id": "3f2a...", "dataset": "ab12...", ...}
    {"event": "job.progress", ..., "progress": 0.4, "message": "..."}   (at most 1 per 2 s)
    {"event": "job.end", ..., "seconds": 12.3}
    {"event": "job.fail", ..., "seconds": 0.2, "error": "ValueError: ..."}

and keeps its record in ``<cache>/jobs/status/<id>.json`` (one file per job, written
atomically), so every process sharing the cache (web workers, Celery workers, the CLI) sees
every job. The newest :data:`KEEP` records are kept. A "running" record whose process is gone
(a cancelled job is killed, not told) reads as ``lost``.

    with job(store.root, "projection", dataset=ds, detail="UMAP of z") as j:
        ...
        j.progress(0.5, "optimising")
        if bad:
            j.fail("reason")   # recorded without raising; an exception escaping the block
                               # is recorded as a failure too (and re-raised)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentmap.pipeline.store import save_json

log = logging.getLogger("latentmap.jobs")

KEEP = 200  # records kept on disk
PROGRESS_EVERY = 2.0  # seconds between two progress events of one job
STATUS_DIR = ("jobs", "status")
_HOST = socket.gethostname()


def status_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir).joinpath(*STATUS_DIR)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Job:
    """One job's lifetime: ``start`` -> ``progress``* -> ``end`` or ``fail`` (once)."""

    def __init__(
        self,
        cache_dir: str | Path | None,
        kind: str,
        *,
        dataset: str | None = None,
        detail: str | None = None,
        clock=time.time,
    ):
        self.dir = status_dir(cache_dir) if cache_dir is not None else None
        self.kind = kind
        self.dataset = dataset
        self.detail = detail
        self.id = uuid.uuid4().hex[:16]
        self._clock = clock
        self.started = 0.0
        self.state = "new"
        self.fraction: float | None = None
        self.message = ""
        self.error: str | None = None
        self._last_progress = -float("inf")
        self._t0 = 0.0

    # ----- events
    def start(self) -> Job:
        self.started = self._clock()
        self._t0 = time.perf_counter()
        self.state = "running"
        self._emit("job.start", logging.INFO)
        self._save()
        return self

    def progress(self, fraction: float | None, message: str = "") -> None:
        """Record progress (0..1); logged and saved at most once per PROGRESS_EVERY seconds."""
        if self.state != "running":
            return
        self.fraction = None if fraction is None else min(max(float(fraction), 0.0), 1.0)
        self.message = str(message)[:200]
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        self._emit("job.progress", logging.INFO, progress=self.fraction, message=self.message)
        self._save()

    def end(self, **info: Any) -> None:
        if self.state != "running":
            return
        self.state = "done"
        self.fraction = 1.0
        self._emit("job.end", logging.INFO, seconds=self.seconds, **info)
        self._save()
        self._prune()

    def fail(self, error: str | BaseException) -> None:
        if self.state != "running":
            return
        self.state = "failed"
        self.error = _reason(error) if isinstance(error, BaseException) else str(error)
        self._emit("job.fail", logging.WARNING, seconds=self.seconds, error=self.error)
        self._save()
        self._prune()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self._t0, 3) if self.started else 0.0

    # ----- output
    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.kind,
            "dataset": self.dataset,
            "detail": self.detail,
            "state": self.state,
            "started": self.started,
            "updated": self._clock(),
            "seconds": self.seconds,
            "progress": self.fraction,
            "message": self.message,
            "error": self.error,
            "pid": os.getpid(),
            "host": _HOST,
        }

    def _emit(self, event: str, level: int, **extra: Any) -> None:
        line = {"event": event, "job": self.kind, "id": self.id, "dataset": self.dataset}
        if self.detail:
            line["detail"] = self.detail
        line.update(extra)
        log.log(level, json.dumps(line, default=str))

    def _save(self) -> None:
        if self.dir is None:
            return
        try:
            save_json(self.dir / f"{self.id}.json", self.record())
        except OSError as e:  # the registry must never break the job itself
            log.warning(json.dumps({"event": "job.registry_error", "error": _reason(e)}))

    def _prune(self) -> None:
        if self.dir is not None:
            prune(self.dir.parent.parent)


@contextlib.contextmanager
def job(
    cache_dir: str | Path | None,
    kind: str,
    *,
    dataset: str | None = None,
    detail: str | None = None,
) -> Iterator[Job]:
    """Run a block as a logged job; an exception escaping it is recorded as the failure."""
    j = Job(cache_dir, kind, dataset=dataset, detail=detail).start()
    try:
        yield j
    except BaseException as e:  # recorded and re-raised (cancellation included)
        j.fail(e)
        raise
    j.end()


# --------------------------------------------------------------------------- the registry


def _alive(rec: dict[str, Any]) -> bool:
    if rec.get("host") != _HOST or not isinstance(rec.get("pid"), int):
        return True  # another machine: trust the record
    try:
        os.kill(rec["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _records(folder: Path) -> list[tuple[float, Path]]:
    try:
        entries = list(os.scandir(folder))
    except OSError:  # not there yet, or not readable
        return []
    out = []
    for e in entries:
        if e.name.endswith(".json") and not e.name.startswith("."):
            with contextlib.suppress(OSError):
                out.append((e.stat().st_mtime, Path(e.path)))
    return sorted(out, reverse=True)


def list_jobs(cache_dir: str | Path, limit: int = KEEP) -> list[dict[str, Any]]:
    """Job records, newest first; a running job whose process died reads as state "lost"."""
    out = []
    for _, path in _records(status_dir(cache_dir))[:limit]:
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced or pruned right now
        if rec.get("state") == "running" and not _alive(rec):
            rec["state"] = "lost"
            rec["error"] = rec.get("error") or "the process running it ended (cancelled or killed)"
        out.append(rec)
    return out


def summary(cache_dir: str | Path, recent: int = 20) -> dict[str, Any]:
    """{"running", "failed", "finished"} job records for the status page (newest first)."""
    jobs = list_jobs(cache_dir)
    return {
        "now": time.time(),
        "running": [j for j in jobs if j.get("state") == "running"],
        "failed": [j for j in jobs if j.get("state") in ("failed", "lost")][:recent],
        "finished": [j for j in jobs if j.get("state") == "done"][:recent],
    }


def prune(cache_dir: str | Path, keep: int = KEEP) -> None:
    """Delete all but the newest ``keep`` records (running ones are never deleted)."""
    records = _records(status_dir(cache_dir))
    for _, path in records[keep:]:
        try:
            rec = json.loads(path.read_text())
            if rec.get("state") == "running" and _alive(rec):
                continue
            path.unlink()
        except (OSError, ValueError):
            continue
