"""Planner settings (environment prefix ``W2A_PLANNER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

BackendName = Literal["rules", "openai"]


class PlannerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="W2A_PLANNER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    default_backend: BackendName = "rules"  # offline by default
    fallback_to_rules: bool = False  # answer from the rules backend when the LLM fails

    # OpenAI-compatible chat API: DeepSeek by default; vLLM / Ollama by URL.
    openai_base_url: str = "https://api.deepseek.com/v1"
    openai_model: str = "deepseek-chat"
    openai_api_key: SecretStr = SecretStr("")
    openai_response_format: Literal["json_object", "json_schema"] = "json_object"
    openai_timeout_s: float = Field(20.0, gt=0)
    openai_retries: int = Field(2, ge=0, le=10)  # extra attempts after the first
    openai_backoff_s: float = Field(0.5, ge=0)

    redis_url: str | None = None  # None: W2A_REDIS_URL, else an embedded redis-server
    state_dir: Path = Path("runs/planner")  # where the embedded redis-server keeps its data
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    cache_enabled: bool = True

    max_instruction_chars: int = Field(1000, ge=1)
    max_skills_limit: int = Field(16, ge=1, le=64)
