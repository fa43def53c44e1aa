"""The background callback manager: diskcache (embedded) or Celery (when a Redis URL is set)."""

from __future__ import annotations

import logging

from latentmap.settings import Settings

log = logging.getLogger(__name__)


def make_celery(redis_url: str):
    """A Celery app for Dash background callbacks on ``redis_url`` (broker and results)."""
    from celery import Celery

    app = Celery("latentmap", broker=redis_url, backend=redis_url)
    # JSON only: Dash passes JSON-able arguments, and a pickle-accepting worker would run code
    # from anyone who can write to Redis (Celery also refuses pickle when run as root).
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )
    return app


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
