"""Settings every service shares (environment prefix ``W2A_``), read in one place.

Each service's own settings (``W2A_POLICY_*``, ``W2A_PLANNER_*``, ``W2A_TRAINER_*``) may name their
own Redis; when they do not, ``W2A_REDIS_URL`` is the one Redis of the deployment. ``setup_process``
is the first call of every long-running entry point: torch threads (1 by default: two torch
processes on a small machine each slow ~10x when they oversubscribe the cores) and logging.
"""

from __future__ import annotations

import logging

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="W2A_", extra="ignore")

    redis_url: str | None = None  # the deployment's Redis, unless a service names its own
    torch_threads: int = Field(1, ge=1)  # intra-op threads of every torch process

    def redis_for(self, own: str | None) -> str | None:
        """A service's Redis: its own setting first, then the shared one (None: neither is set)."""
        return own or self.redis_url


def setup_process(shared: SharedSettings | None = None, log_level: int = logging.INFO) -> SharedSettings:
    """Torch threads and logging for a service process; returns the settings it used."""
    shared = shared or SharedSettings()
    try:
        import torch
    except ImportError:  # the planner and the robot client run without torch
        pass
    else:
        torch.set_num_threads(shared.torch_threads)
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    return shared


def settings_env(settings: BaseSettings) -> dict[str, str]:
    """The environment that makes a child process read ``settings`` back: one variable per field
    that was given (lists and maps as JSON, booleans lower-case, secrets revealed). Build the
    object with ``Settings.model_validate({...})`` so values are checked here, not in the child,
    and only the given fields travel."""
    import json
    from pathlib import Path

    prefix = settings.model_config.get("env_prefix", "")
    env = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value)
        elif isinstance(value, Path):
            text = str(value)
        elif value is None:
            continue
        else:
            text = str(value)
        env[f"{prefix}{name.upper()}"] = text
    return env
