"""A headless Meta-World 3.1.1 environment with a fixed-size camera, as a robot would see it.

Rendering goes through ``mujoco.Renderer`` with ``MUJOCO_GL=egl`` (set here if unset, before MuJoCo
is imported), so no display is needed. Meta-World's corner cameras render upside down; frames
are flipped upright.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

STATE_DIM = 18  # proprio + object state: see w2a_models.episodes.STATE_LAYOUT
UPSIDE_DOWN_CAMERAS = {"corner", "corner2", "corner3", "corner4"}


@dataclass(frozen=True)
class SimConfig:
    task: str = "pick-place-v3"
    image_size: int = 64
    camera: str = "corner"
    max_steps: int = 200


@dataclass
class StepResult:
    obs: np.ndarray  # the full Meta-World observation (39-d)
    success: bool
    truncated: bool


def _env_class(task: str):
    import metaworld

    key = f"{task}-goal-observable"
    if key not in metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
        known = sorted(k.removesuffix("-goal-observable")
                       for k in metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE)
        raise ValueError(f"unknown Meta-World task {task!r}; choose one of: {', '.join(known)}")
    return metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key]


class MetaWorldSim:
    """One Meta-World scene; ``reset(seed)`` draws a new object/goal placement from the seed."""

    def __init__(self, config: SimConfig = SimConfig()) -> None:
        self.config = config
        self._cls = _env_class(config.task)
        self.env = None
        self._renderer = None
        self.obs: np.ndarray | None = None

    def reset(self, seed: int) -> np.ndarray:
        import mujoco

        self.close()
        self.env = self._cls(seed=seed)  # the seed fixes object and goal positions
        self.env.max_path_length = self.config.max_steps
        self.obs, _ = self.env.reset()
        size = self.config.image_size
        self._renderer = mujoco.Renderer(self.env.model, size, size)
        return self.obs

    def render(self) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("call reset() before render()")
        self._renderer.update_scene(self.env.data, camera=self.config.camera)
        frame = self._renderer.render()
        if self.config.camera in UPSIDE_DOWN_CAMERAS:
            frame = frame[::-1]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def step(self, action: np.ndarray) -> StepResult:
        if self.env is None:
            raise RuntimeError("call reset() before step()")
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self.obs, _, _, truncated, info = self.env.step(action)
        return StepResult(self.obs, bool(info.get("success", False)), bool(truncated))

    @property
    def state(self) -> np.ndarray:
        return np.asarray(self.obs[:STATE_DIM], dtype=np.float32)

    def close(self) -> None:
        if self._renderer is not None:
            try:
                self._renderer.close()
            except Exception:  # EGL teardown can complain at exit; the context is gone either way
                pass
            self._renderer = None
        if self.env is not None:
            self.env.close()
            self.env = None

    def __enter__(self) -> "MetaWorldSim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ScriptedExpert:
    """Meta-World's hand-written policy for a task, the source of demonstrations."""

    def __init__(self, task: str) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World has no scripted expert for {task!r}")
        self.policy = ENV_POLICY_MAP[task]()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Constant(s) may be too high"
            return np.clip(self.policy.get_action(obs), -1.0, 1.0).astype(np.float32)
