"""A local LeRobot policy checkpoint as the frozen base (optional extra: ``pip install w2a[lerobot]``).

The checkpoint is a LeRobot ``pretrained_model`` directory: ``config.json`` (its ``type`` picks the
policy class: act, pi0, pi05, smolvla, groot, ...), ``model.safetensors`` and the saved processor
pipelines (``policy_preprocessor.json`` / ``policy_postprocessor.json``: normalisation statistics,
tokenisation, device). One ``predict`` runs, for the whole micro-batch:

    preprocessor({"observation.images.<cam>": float [B,3,H,W] in [0,1],
                  "observation.state": float [B,S], "task": [str] * B})
    -> policy.predict_action_chunk(...)  [B, H, A] -> postprocessor (unnormalise)

and serves the first M actions of each chunk (a shorter horizon holds its last action).
``predict_action_chunk`` is stateless for chunking policies; policies that stack several past
observations (``n_obs_steps > 1``, e.g. Diffusion Policy) keep hidden queues across calls and are
refused at load with a clear error, since one server answers many robots from one model.

The residual sees the same observation features as every non-tiny base: state plus camera
thumbnails (``backends/common.py``).

Camera names: by default a LeRobot image feature ``observation.images.front`` becomes the camera
``front`` with the feature's height and width; ``image_keys`` maps camera -> feature key otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.policy.backends.common import feature_dim, fit_chunk, remote_output
from w2a_models.base_policy import BaseOutput, CameraSpec, ObservationBatch, PolicySpec

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
TASK_KEY = "task"


class LeRobotNotInstalled(ImportError):
    """``lerobot`` is not importable in this environment."""


@dataclass(frozen=True)
class LeRobotBaseConfig:
    checkpoint: Path
    image_keys: dict[str, str] = field(default_factory=dict)  # camera -> feature key; {} = derive
    chunk_size: int | None = None  # served M; None = the policy's own horizon
    device: str = "cpu"  # "cuda" on GPU nodes; the processors move tensors there


@dataclass
class LoadedPolicy:
    """What the backend needs from LeRobot: the model, its two pipelines and its feature shapes."""

    policy: Any  # lerobot PreTrainedPolicy (has predict_action_chunk)
    preprocess: Callable[[dict], dict]
    postprocess: Callable[[Any], Any]
    image_shapes: dict[str, tuple[int, int, int]]  # feature key -> (C, H, W)
    state_dim: int
    action_dim: int
    horizon: int  # actions per predict_action_chunk call
    policy_type: str


def load_lerobot_policy(checkpoint: Path, device: str = "cpu") -> LoadedPolicy:
    """Load a LeRobot checkpoint directory with LeRobot's own factory functions."""
    try:
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    except ImportError as exc:
        raise LeRobotNotInstalled(
            "the lerobot base needs the `lerobot` package (pip install 'w2a[lerobot]'); "
            f"importing it failed: {exc}") from exc
    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a LeRobot checkpoint (no config.json)")
    cfg = PreTrainedConfig.from_pretrained(checkpoint)
    cfg.device = device
    if getattr(cfg, "n_obs_steps", 1) != 1:
        raise ValueError(f"{checkpoint}: {cfg.type} uses {cfg.n_obs_steps} past observations; the "
                         "server shares one model across robots and serves stateless chunk policies only")
    policy = get_policy_class(cfg.type).from_pretrained(checkpoint, config=cfg)
    policy.eval()
    preprocess, postprocess = make_pre_post_processors(
        cfg, pretrained_path=str(checkpoint),
        preprocessor_overrides={"device_processor": {"device": device}})
    horizon = int(getattr(cfg, "chunk_size", None) or getattr(cfg, "n_action_steps", 1))
    return LoadedPolicy(
        policy=policy, preprocess=preprocess, postprocess=postprocess,
        image_shapes={k: tuple(f.shape) for k, f in cfg.image_features.items()},
        state_dim=int(cfg.robot_state_feature.shape[0]) if cfg.robot_state_feature else 0,
        action_dim=int(cfg.action_feature.shape[0]), horizon=horizon, policy_type=str(cfg.type))


def camera_map(image_shapes: dict[str, tuple[int, int, int]], image_keys: dict[str, str]) -> dict[str, str]:
    """camera name -> LeRobot image feature key; every image feature the policy reads must be fed."""
    if not image_shapes:
        raise ValueError("the LeRobot policy reads no camera image; w2a serves vision-language-action bases")
    if image_keys:
        unknown = sorted(set(image_keys.values()) - set(image_shapes))
        missing = sorted(set(image_shapes) - set(image_keys.values()))
        if unknown or missing:
            raise ValueError(f"image_keys do not match the policy's image features {sorted(image_shapes)}: "
                             f"unknown {unknown}, unfed {missing}")
        return dict(image_keys)
    return {key.removeprefix(IMAGE_PREFIX): key for key in image_shapes}


class LeRobotBase:
    def __init__(self, config: LeRobotBaseConfig, loaded: LoadedPolicy | None = None,
                 name: str | None = None) -> None:
        self.config = config
        self.loaded = loaded or load_lerobot_policy(config.checkpoint, config.device)
        lp = self.loaded
        self.cameras = camera_map(lp.image_shapes, dict(config.image_keys))
        chunk = config.chunk_size or lp.horizon
        if chunk > lp.horizon:
            raise ValueError(f"chunk_size {chunk} exceeds the policy's horizon {lp.horizon}")
        camera_specs = tuple(CameraSpec(cam, lp.image_shapes[key][1], lp.image_shapes[key][2])
                             for cam, key in self.cameras.items())
        self.spec = PolicySpec(name=name or f"lerobot-{lp.policy_type}", action_dim=lp.action_dim,
                               chunk_size=chunk, state_dim=lp.state_dim, cameras=camera_specs,
                               feature_dim=feature_dim(lp.state_dim, len(camera_specs)))
        self._lock = threading.Lock()  # one forward at a time on one model

    def lerobot_batch(self, batch: ObservationBatch) -> dict:
        """Our observation batch -> the raw (unnormalised) batch LeRobot's preprocessor expects."""
        out: dict = {}
        for cam, key in self.cameras.items():
            images = np.ascontiguousarray(batch.images[cam])  # uint8 [B, H, W, 3]
            out[key] = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        if self.loaded.state_dim:
            out[STATE_KEY] = torch.from_numpy(np.asarray(batch.state, np.float32))
        out[TASK_KEY] = list(batch.instructions)
        return out

    def predict(self, batch: ObservationBatch) -> BaseOutput:
        lp = self.loaded
        with self._lock, torch.inference_mode():
            actions = lp.postprocess(lp.policy.predict_action_chunk(lp.preprocess(self.lerobot_batch(batch))))
        actions = actions.detach().float().cpu().numpy()
        if actions.ndim == 2:  # single-step policies answer [B, A]
            actions = actions[:, None]
        rows = [fit_chunk(a, self.spec.chunk_size, self.spec.action_dim, f"LeRobot {lp.policy_type}")
                for a in actions]
        return remote_output(rows, batch, self.spec.cameras)
