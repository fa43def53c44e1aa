"""Celery worker entry point: ``celery -A latentmap.callbacks.worker:celery_app worker``.

The worker builds the same Dash app as the web process (from ``LATENTMAP_*`` settings, with
``LATENTMAP_REDIS_URL`` set) so that every background callback is registered as a task under
the same name on both sides.

UMAP's numba compilation (60-90 s on 2 cores) is paid when the worker starts, not on a user's
first UMAP: with ``--pool=solo`` / ``threads`` in the worker process before it takes jobs,
with the prefork pool in each child as it starts. ``LATENTMAP_WARMUP=0`` skips it.
"""

from __future__ import annotations

from latentmap.settings import Settings, SettingsError

settings = Settings.from_env()
if not settings.redis_url:
    raise SettingsError(
        "LATENTMAP_REDIS_URL must be set for a Celery worker (e.g. redis://127.0.0.1:6379/0)"
    )

from latentmap.app import create_app  # noqa: E402 - needs the settings check first
from latentmap.callbacks.manager import make_celery  # noqa: E402

celery_app = make_celery(settings.redis_url)
dash_app = create_app(settings, celery_app=celery_app)


def _warm(where: str) -> None:
    from latentmap.pipeline import warmup

    if warmup.enabled():
        warmup.run_and_report(where)


def _on_worker_init(sender=None, **_kw) -> None:
    pool = str(getattr(sender, "pool_cls", "") or "").lower()
    if "solo" in pool or "thread" in pool:
        _warm("worker process")


def _on_process_init(**_kw) -> None:
    _warm("pool child")


from celery.signals import worker_init, worker_process_init  # noqa: E402

worker_init.connect(_on_worker_init, weak=False)
worker_process_init.connect(_on_process_init, weak=False)
