"""A headless Meta-World 3.1.1 environment with a fixed-size camera, as a robot would see it.

Rendering goes through ``mujoco.Renderer`` with ``MUJOCO_GL=egl`` (set here if unset, before MuJoCo
is imported), so no display is needed. Meta-World's corner cameras render upside down; frames
are flipped upright.

Why a ``front`` camera and an action repeat (the defaults): with Meta-World's own ``corner``
camera the workspace fills ~33x24 px of a 64-px frame, the puck and goal are 1-2 px, and with
its action scale (1 cm per env step at most) an 8-step chunk moves the hand ~2 px — less than one
VAE cell, so a world model sees nothing move. ``front`` is a free camera framed on the table
from across it (looking at the robot), so the object, the goal marker and the gripper fill the
frame; ``action_repeat`` env steps per policy step make one chunk move the hand several cells.
``w2a diagnose scene`` measures both (hand displacement per chunk in pixels).
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import warnings
from dataclasses import dataclass

import numpy as np

STATE_DIM = 18  # proprio + object state: see w2a_models.episodes.STATE_LAYOUT
UPSIDE_DOWN_CAMERAS = {"corner", "corner2", "corner3", "corner4"}
MUJOCO_CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")


@dataclass(frozen=True)
class FreeCamera:
    """A MuJoCo free camera: looks at ``lookat`` from ``distance`` m, angles in degrees."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float


# Framed on the table from across it: object, goal marker and gripper of the table-top tasks in view.
FREE_CAMERAS = {"front": FreeCamera(lookat=(0.0, 0.7, 0.08), distance=0.75, azimuth=270.0,
                                    elevation=-55.0)}
DEFAULT_CAMERA = "front"
DEFAULT_ACTION_REPEAT = 3


@dataclass(frozen=True)
class SimConfig:
    task: str = "pick-place-v3"
    image_size: int = 64
    camera: str = DEFAULT_CAMERA  # a FREE_CAMERAS preset or one of Meta-World's MUJOCO_CAMERAS
    max_steps: int = 200  # policy steps (each runs ``action_repeat`` env steps)
    action_repeat: int = DEFAULT_ACTION_REPEAT  # env steps per policy step (action held)

    def __post_init__(self) -> None:
        if self.camera not in FREE_CAMERAS and self.camera not in MUJOCO_CAMERAS:
            raise ValueError(f"unknown camera {self.camera!r}; choose one of: "
                             f"{', '.join([*FREE_CAMERAS, *MUJOCO_CAMERAS])}")
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {self.action_repeat}")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (>= 8), got {self.image_size}")


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

    @property
    def task_name(self) -> str:
        return self.config.task

    @property
    def instruction(self) -> str:
        from services.robot_sim.collect import instruction_for

        return instruction_for(self.config.task)

    def reset(self, seed: int) -> np.ndarray:
        import mujoco

        self.close()
        self.env = self._cls(seed=seed)  # the seed fixes object and goal positions
        self.env.max_path_length = self.config.max_steps * self.config.action_repeat
        self.obs, _ = self.env.reset()
        size = self.config.image_size
        self._renderer = mujoco.Renderer(self.env.model, size, size)
        return self.obs

    def _camera(self):
        import mujoco

        preset = FREE_CAMERAS.get(self.config.camera)
        if preset is None:
            return self.config.camera
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = preset.lookat
        cam.distance, cam.azimuth, cam.elevation = preset.distance, preset.azimuth, preset.elevation
        return cam

    def render(self) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("call reset() before render()")
        self._renderer.update_scene(self.env.data, camera=self._camera())
        frame = self._renderer.render()
        if self.config.camera in UPSIDE_DOWN_CAMERAS:
            frame = frame[::-1]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points [N, 3] -> pixel coordinates [N, 2] (column, row) in the upright frame."""
        if self._renderer is None:
            raise RuntimeError("call reset() before project()")
        self._renderer.update_scene(self.env.data, camera=self._camera())
        gl = self._renderer.scene.camera[0]
        pos, forward, up = (np.asarray(v, dtype=np.float64) for v in (gl.pos, gl.forward, gl.up))
        right = np.cross(forward, up)
        rel = np.atleast_2d(np.asarray(points, dtype=np.float64)) - pos
        depth = rel @ forward
        half = self.config.image_size / 2
        focal = half * gl.frustum_near / gl.frustum_top
        col = half + focal * (rel @ right) / depth
        row = half - focal * (rel @ up) / depth
        if self.config.camera in UPSIDE_DOWN_CAMERAS:
            row = self.config.image_size - row
        return np.stack([col, row], axis=1)

    def step(self, action: np.ndarray) -> StepResult:
        """One policy step: the action is held for ``action_repeat`` env steps (stops at success)."""
        if self.env is None:
            raise RuntimeError("call reset() before step()")
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        success = truncated = False
        for _ in range(self.config.action_repeat):
            self.obs, _, _, truncated, info = self.env.step(action)
            success = bool(info.get("success", False))
            if success or truncated:
                break
        return StepResult(self.obs, success, bool(truncated))

    @property
    def state(self) -> np.ndarray:
        return np.asarray(self.obs[:STATE_DIM], dtype=np.float32)

    def copy_state_from(self, other: MetaWorldSim) -> None:
        """Become an exact copy of ``other``'s current state (reset both with the same seed first).

        The physics (MuJoCo's full integration state) and the env's own step bookkeeping are copied, so the
        expert and the simulator continue from here exactly as ``other`` would."""
        import mujoco

        if self.env is None or other.env is None:
            raise RuntimeError("reset() both simulators (same seed) before copying state")
        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # everything mj_step reads, warm start included
        state = np.empty(mujoco.mj_stateSize(other.env.model, spec))
        mujoco.mj_getState(other.env.model, other.env.data, state, spec)
        mujoco.mj_setState(self.env.model, self.env.data, state, spec)
        mujoco.mj_forward(self.env.model, self.env.data)  # positions of sites and bodies
        for name in ("_prev_obs", "_last_stable_obs"):
            value = getattr(other.env, name, None)
            setattr(self.env, name, None if value is None else np.copy(value))
        self.env.curr_path_length = other.env.curr_path_length
        self.env._did_see_sim_exception = other.env._did_see_sim_exception
        self.obs = np.copy(other.obs)

    def close(self) -> None:
        if self._renderer is not None:
            with contextlib.suppress(Exception):  # EGL teardown can complain at exit; the context is gone either way
                self._renderer.close()
            self._renderer = None
        if self.env is not None:
            self.env.close()
            self.env = None

    def __enter__(self) -> MetaWorldSim:
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
