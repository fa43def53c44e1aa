"""The background callback manager: diskcache (embedded) or Celery (when a Redis URL is set)."""

from __future__ import annotations

import logging

from latentmap.settings import Settings

log = logging.getLogger(__name__)


def make_celery(redis_url: str):
    """A Celery app for Dash background callbacks on ``redis_url`` (broker and results)."""
    import os

    from celery import Celery

    app = Celery("latentmap", broker=redis_url, backend=redis_url)
    # A job survives the death of its worker: the message is acknowledged only when the job
    # ends, so a killed worker's job goes back to the queue (after the visibility timeout) and
    # another worker runs it; encodes resume from their last written batch, and every other
    # job is content-keyed and cached, so a repeat costs a cache hit.
    visibility = int(os.environ.get("LATENTMAP_CELERY_VISIBILITY_TIMEOUT", "3600"))
    # JSON only: Dash passes JSON-able arguments, and a pickle-accepting worker would run code
    # from anyone who can write to Redis (Celery also refuses pickle when run as root).
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        result_expires=3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": visibility},
        result_backend_transport_options={"visibility_timeout": visibility},
    )
    register_jobs(app)
    return app


def register_jobs(app) -> None:
    """Named Celery tasks for the scale-out path (besides Dash's background callbacks):
    ``latentmap.encode``, ``latentmap.reduce``, ``latentmap.index``,
    ``latentmap.precompute`` (queued by every encode); the cache directory is
    the worker's ``LATENTMAP_CACHE_DIR`` (a shared volume when several machines work)."""

    def _store():
        from latentmap.settings import Settings

        return Settings.from_env().store()

    @app.task(name="latentmap.encode")
    def encode_job(request: dict) -> dict:
        from dataclasses import fields

        from latentmap.pipeline.jobs import EncodeRequest, encode

        known = {f.name for f in fields(EncodeRequest)}
        req = EncodeRequest(**{k: v for k, v in request.items() if k in known})
        store = _store()
        r = encode(store, req)
        from latentmap.pipeline.precompute import launch

        # indexes and t-SNE / UMAP maps as a job of their own, which any worker may take
        launch(store.root, r.ds_id, Settings.from_env().redis_url)
        return {"dataset": r.ds_id, "n": r.n_encoded, "reused": r.reused, "notices": r.notices}

    @app.task(name="latentmap.reduce")
    def reduce_job(ds: str, layer: str, method: str, params: dict | None = None) -> dict:
        from latentmap.pipeline.reduce import projection

        e = projection(_store(), ds, layer, method, params)
        return {"dataset": ds, "layer": layer, "method": method, "seconds": e.info.get("seconds")}

    @app.task(name="latentmap.index")
    def index_job(ds: str, layer: str) -> dict:
        from latentmap.pipeline.ann import build_index

        e = build_index(_store(), ds, layer)
        return {"dataset": ds, "layer": layer, **e.info}

    @app.task(name="latentmap.precompute")
    def precompute_job(ds: str, steps: list | None = None) -> dict:
        from latentmap.pipeline.precompute import STEPS, run

        done = run(_store(), ds, tuple(steps or STEPS))
        return {"dataset": ds, "done": done}


def redis_problem(url: str, timeout: float = 3.0) -> str | None:
    """None when Redis answers at ``url``, else a one-line reason."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
    except Exception as e:  # noqa: BLE001 - any failure means "not usable", said in one line
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no answer'}"
    return None


def check_redis(settings: Settings) -> Settings:
    """At start-up: the settings to run with when Redis is configured. Unreachable Redis is
    an error naming the URL and what to do, unless ``redis_fallback`` asks for embedded jobs
    (then the returned settings have no Redis URL and a warning is logged)."""
    import dataclasses

    from latentmap.settings import SettingsError

    if not settings.redis_url:
        return settings
    why = redis_problem(settings.redis_url)
    if why is None:
        return settings
    if settings.redis_fallback:
        log.warning(
            "Redis at %s is unreachable (%s): running background jobs in this process",
            settings.redis_url,
            why,
        )
        return dataclasses.replace(settings, redis_url=None)
    raise SettingsError(
        f"cannot reach Redis at {settings.redis_url} ({why}): start redis-server, fix "
        "LATENTMAP_REDIS_URL, or set LATENTMAP_REDIS_FALLBACK=1 to run jobs in this process"
    )


def make_manager(settings: Settings, celery_app=None):
    """CeleryManager when ``settings.redis_url`` is set, else a DiskcacheManager under the cache."""
    if settings.redis_url or celery_app is not None:
        from dash import CeleryManager

        return CeleryManager(celery_app or make_celery(settings.redis_url))
    import diskcache
    from dash import DiskcacheManager

    jobs = settings.cache_dir / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    return DiskcacheManager(diskcache.Cache(str(jobs)), expire=3600)
