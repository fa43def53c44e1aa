"""Celery worker entry point: ``celery -A latentmap.callbacks.worker:celery_app worker``.

The worker builds the same Dash app as the web process (from ``LATENTMAP_*`` settings, with
``LATENTMAP_REDIS_URL`` set) so that every background callback is registered as a task under
the same name on both sides.
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
