"""World-model backend settings (environment prefix ``W2A_WM_``): the fallbacks the Triton model
reads when its ``config.pbtxt`` parameters leave a value empty (the launcher and the Kubernetes
Deployment set them; a parameter in the model config always wins)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorldModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="W2A_WM_", extra="ignore")

    dir: str = ""  # the world-model checkpoint directory (parameter model_dir)
    num_inference_steps: int | None = Field(None, ge=1)  # wm_generate's sampling steps; None: the model's default
    features: Literal["dit_pooled", "latent_map"] = "dit_pooled"  # what wm_generate/wm_encode return
