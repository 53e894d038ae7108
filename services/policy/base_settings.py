"""The frozen base policy the server wraps, one typed settings class per backend.

``PolicySettings.base`` is a discriminated union on ``backend``: each backend owns its fields, its
defaults and their validation, and builds its policy (``build()``). In the environment the fields
are nested under ``W2A_POLICY_BASE__`` (``W2A_POLICY_BASE__BACKEND=openpi``,
``W2A_POLICY_BASE__HOST=10.0.0.5``, …) or given at once as JSON (``W2A_POLICY_BASE='{"backend":
"gr00t", "port": 5555}'``). The flat names of earlier versions (``W2A_POLICY_BASE_BACKEND``,
``W2A_POLICY_BASE_CHECKPOINT``, ``W2A_POLICY_REMOTE_*``, ``W2A_POLICY_LEROBOT_*``) are refused
with the new name, never silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from w2a_models.base_policy import BasePolicy, CameraSpec


class _Backend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Remote(_Backend):
    """A policy served elsewhere: where it is, how its keys map to ours, its shapes, deadlines."""

    host: str = "127.0.0.1"
    api_key: SecretStr = SecretStr("")
    cameras: dict[str, tuple[int, int]] = {"corner": (224, 224)}  # camera -> (height, width)
    image_keys: dict[str, str] = {"corner": "observation/image"}  # camera -> remote key
    chunk_size: int = Field(10, ge=1)  # the first M actions of the remote horizon are served
    connect_timeout_s: float = Field(5.0, gt=0)
    call_timeout_s: float = Field(2.0, gt=0)

    def camera_specs(self) -> tuple[CameraSpec, ...]:
        return tuple(CameraSpec(name, h, w) for name, (h, w) in self.cameras.items())


class TinyVlaBase(_Backend):
    """The built-in TinyVLA (``w2a train-base`` writes its checkpoint)."""

    backend: Literal["tiny-vla"] = "tiny-vla"
    checkpoint: Path | None = None  # TinyVLA checkpoint directory

    def build(self) -> BasePolicy:
        from w2a_models.base_policy.tiny_vla import TinyVLA

        if self.checkpoint is None:
            raise ValueError("set W2A_POLICY_BASE__CHECKPOINT to a TinyVLA checkpoint directory "
                             "(train one with `w2a train-base`)")
        return TinyVLA.load(self.checkpoint)


class LeRobotBase(_Backend):
    """A local LeRobot ``pretrained_model`` directory (ACT, Diffusion, …)."""

    backend: Literal["lerobot"]
    checkpoint: Path | None = None  # the pretrained_model directory
    image_keys: dict[str, str] = {}  # camera -> LeRobot image feature key ({} = "observation.images.<camera>")
    chunk_size: int | None = Field(None, ge=1)  # None: the policy's own horizon
    device: str = "cpu"

    def build(self) -> BasePolicy:
        from services.policy.backends.lerobot_base import LeRobotBase as Policy
        from services.policy.backends.lerobot_base import LeRobotBaseConfig

        if self.checkpoint is None:
            raise ValueError("set W2A_POLICY_BASE__CHECKPOINT to a LeRobot pretrained_model directory")
        return Policy(LeRobotBaseConfig(checkpoint=self.checkpoint, image_keys=dict(self.image_keys),
                                        chunk_size=self.chunk_size, device=self.device))


class OpenpiBase(_Remote):
    """An openpi policy server (``serve_policy.py``, websocket + msgpack-numpy)."""

    backend: Literal["openpi"]
    port: int = Field(8000, ge=1, le=65535)
    state_key: str = "observation/state"
    prompt_key: str = "prompt"
    action_key: str = "actions"
    state_dim: int = Field(8, ge=1)
    action_dim: int = Field(7, ge=1)

    def build(self) -> BasePolicy:
        from services.policy.backends.openpi_base import OpenpiBase as Policy
        from services.policy.backends.openpi_base import OpenpiBaseConfig

        return Policy(OpenpiBaseConfig(
            host=self.host, port=self.port, api_key=self.api_key.get_secret_value() or None,
            cameras=self.camera_specs(), image_keys=dict(self.image_keys), state_key=self.state_key,
            prompt_key=self.prompt_key, action_key=self.action_key, state_dim=self.state_dim,
            action_dim=self.action_dim, chunk_size=self.chunk_size, connect_timeout_s=self.connect_timeout_s,
            call_timeout_s=self.call_timeout_s))


class Gr00tBase(_Remote):
    """An Isaac-GR00T inference server (ZeroMQ); the state and action vectors split into its keys."""

    backend: Literal["gr00t"]
    port: int = Field(5555, ge=1, le=65535)
    image_keys: dict[str, str] = {"corner": "video.ego_view"}
    state_parts: list[tuple[str, int]] = [("state.single_arm", 7), ("state.gripper", 1)]
    action_parts: list[tuple[str, int]] = [("action.single_arm", 6), ("action.gripper", 1)]
    language_key: str = "annotation.human.task_description"
    chunk_size: int = Field(16, ge=1)

    def build(self) -> BasePolicy:
        from services.policy.backends.gr00t_base import Gr00tBase as Policy
        from services.policy.backends.gr00t_base import Gr00tBaseConfig

        return Policy(Gr00tBaseConfig(
            host=self.host, port=self.port, api_token=self.api_key.get_secret_value() or None,
            cameras=self.camera_specs(), video_keys=dict(self.image_keys),
            state_parts=tuple(map(tuple, self.state_parts)), language_key=self.language_key,
            action_parts=tuple(map(tuple, self.action_parts)), chunk_size=self.chunk_size,
            timeout_ms=int(self.call_timeout_s * 1000)))


class CosmosPolicyBase(_Remote):
    """A Cosmos Policy server (``deploy.py``: ``POST /act`` on ``http://host:port``)."""

    backend: Literal["cosmos-policy"]
    port: int = Field(8777, ge=1, le=65535)
    image_keys: dict[str, str] = {"corner": "primary_image"}
    state_key: str = "proprio"
    prompt_key: str = "task_description"
    state_dim: int = Field(14, ge=1)
    action_dim: int = Field(14, ge=1)
    chunk_size: int = Field(50, ge=1)
    call_timeout_s: float = Field(10.0, gt=0)

    def build(self) -> BasePolicy:
        from services.policy.backends.cosmos_policy_base import CosmosPolicyBase as Policy
        from services.policy.backends.cosmos_policy_base import CosmosPolicyBaseConfig

        return Policy(CosmosPolicyBaseConfig(
            url=f"http://{self.host}:{self.port}", cameras=self.camera_specs(), image_keys=dict(self.image_keys),
            proprio_key=self.state_key, task_key=self.prompt_key, state_dim=self.state_dim,
            action_dim=self.action_dim, chunk_size=self.chunk_size, connect_timeout_s=self.connect_timeout_s,
            call_timeout_s=self.call_timeout_s))


BaseBackend = Annotated[TinyVlaBase | LeRobotBase | OpenpiBase | Gr00tBase | CosmosPolicyBase,
                        Field(discriminator="backend")]
BACKENDS = (TinyVlaBase, LeRobotBase, OpenpiBase, Gr00tBase, CosmosPolicyBase)

_RENAMED = {"W2A_POLICY_BASE_BACKEND": "W2A_POLICY_BASE__BACKEND",
            "W2A_POLICY_BASE_CHECKPOINT": "W2A_POLICY_BASE__CHECKPOINT"}


def refuse_flat_names(environ=os.environ) -> None:
    """Settings of earlier versions would otherwise be ignored without a word."""
    old = sorted(k for k in environ if k in _RENAMED or k.startswith(("W2A_POLICY_REMOTE_", "W2A_POLICY_LEROBOT_")))
    if old:
        new = [_RENAMED.get(k) or "W2A_POLICY_BASE__" + k.split("_", 3)[3] for k in old]
        raise ValueError(f"renamed base settings: {', '.join(f'{a} -> {b}' for a, b in zip(old, new))} "
                         "(see services/policy/base_settings.py)")
