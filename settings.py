"""One typed settings object, read from ``LATENTMAP_*`` environment variables and CLI flags.

Nothing reads settings from globals: ``Settings`` is built once and passed in.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "LATENTMAP_"


class SettingsError(ValueError):
    """An invalid setting; the message names the setting and the value."""


def _default_cache_dir() -> Path:
    return Path(__file__).resolve().parent / "cache"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path = field(default_factory=_default_cache_dir)
    host: str = "127.0.0.1"
    port: int = 8050
    dataset: str | None = None  # id or name opened first; None = the demo / newest
    demo: bool = False
    redis_url: str | None = None  # when set, background jobs run on Celery workers
    # Redis unreachable at start: run jobs in this process (True) instead of refusing to start
    redis_fallback: bool = False
    device: str = "auto"
    debug: bool = False
    max_spatial_bytes: int = 2 * 1024**3  # unpooled latents kept when below this
    thumb_size: int = 96
    # access control (see latentmap.auth): "user:password" pairs, comma-separated, and/or a
    # file of "user:password" lines; required when host is not a loopback address
    users: str | None = field(default=None, repr=False)
    auth_file: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser().resolve())
        if not (0 < int(self.port) < 65536):
            raise SettingsError(f"port must be 1..65535, got {self.port!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise SettingsError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.thumb_size < 8 or self.thumb_size > 1024:
            raise SettingsError(f"thumb_size must be 8..1024, got {self.thumb_size!r}")
        if self.auth_file is not None:
            object.__setattr__(self, "auth_file", Path(self.auth_file).expanduser())

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``LATENTMAP_<FIELD>`` variables, then overrides (None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def store(self):
        from latentmap.pipeline.store import Store

        return Store(self.cache_dir)


def _parse(name: str, typ: Any, raw: str) -> Any:
    t = str(typ)
    try:
        if "bool" in t:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if t.startswith("int"):
            return int(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {t}") from None
