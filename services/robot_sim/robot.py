"""Simulated robots: Meta-World scenes driven through the policy server, exactly like a controller.

Each robot is its own process (MuJoCo + EGL per process, no shared GIL) holding one ``StreamAct``
stream per episode: send the observation (camera image + state), execute the returned action
chunk in the simulator, repeat; at the end send the episode-end marker with the success flag.
The robot also tells the server which skill it is in: the planner's skills for the instruction,
advanced by the same segmenter that cut the demos, run on the steps executed so far — so the
rollouts carry the skill texts Stage 1 and the world model were trained with.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from services.robot_sim.metaworld_env import DEFAULT_ACTION_REPEAT, DEFAULT_CAMERA, SimConfig
from w2a_models.stats import wilson_ci95

if TYPE_CHECKING:
    from services.robot_sim.simulator import Simulator

log = logging.getLogger(__name__)

ORACLE_MODES = ("", "expert", "expert+future")


@dataclass(frozen=True)
class RobotConfig:
    robot_id: str
    task: str  # Meta-World task name, or with sim="libero" a task index or name of ``suite``
    target: str  # policy server host:port
    token: str  # this robot's bearer token
    seeds: tuple[int, ...]  # one episode per seed (the seed fixes the object/goal placement)
    base_only: bool = False  # A/B evaluation: ask for the frozen base's action only
    evaluation: bool = False  # evaluation episodes are logged but never trained on
    image_size: int = 64
    camera: str = DEFAULT_CAMERA
    max_steps: int = 200  # policy steps
    action_repeat: int = DEFAULT_ACTION_REPEAT  # env steps per policy step, as in the demos
    root_certificates: bytes | None = None
    timeout_s: float = 30.0  # per action chunk
    # Simulation-only teacher attached to each request (upper bounds and diagnostics, never used
    # for acting): "" none, "expert" the expert's chunk from this exact state, "expert+future"
    # also the frames of that expert future.
    oracle: str = ""
    sim: str = "metaworld"  # or "libero"
    suite: str = "libero_object"  # LIBERO only

    def __post_init__(self) -> None:
        if self.oracle not in ORACLE_MODES:
            raise ValueError(f"oracle must be one of {ORACLE_MODES}, got {self.oracle!r}")
        if self.sim not in ("metaworld", "libero"):
            raise ValueError(f"sim must be 'metaworld' or 'libero', got {self.sim!r}")
        if self.sim == "libero" and self.oracle:
            raise ValueError("the simulator oracle (expert teacher) exists for Meta-World only")


def make_sim(config: RobotConfig) -> Simulator:
    """The simulator a robot drives: the same interface for both (``simulator.Simulator``)."""
    return make_simulator(config.sim, config.task, config.image_size, config.camera, config.max_steps,
                          config.action_repeat, config.suite)


def make_simulator(sim: str, task: str, image_size: int, camera: str, max_steps: int, action_repeat: int,
                   suite: str = "libero_object") -> Simulator:
    """Meta-World or LIBERO (``task``: a Meta-World name, or an index or name in ``suite``);
    ``max_steps`` in policy steps."""
    if sim == "libero":
        from services.robot_sim.libero_env import LiberoConfig, LiberoSim

        return LiberoSim(LiberoConfig(suite=suite, task=task, image_size=image_size, camera=camera,
                                      max_steps=max_steps * action_repeat,  # LIBERO counts env steps
                                      action_repeat=action_repeat))
    from services.robot_sim.metaworld_env import MetaWorldSim, SimConfig

    return MetaWorldSim(SimConfig(task=task, image_size=image_size, camera=camera, max_steps=max_steps,
                                  action_repeat=action_repeat))


@dataclass
class EpisodeResult:
    robot_id: str
    task: str
    seed: int
    success: bool
    steps: int
    chunks: int
    policy_versions: list[int] = field(default_factory=list)
    fallbacks: int = 0
    skills: list[str] = field(default_factory=list)  # skills in the order the robot entered them
    seconds: float = 0.0
    render_seconds: float = 0.0  # in sim.render() (once per chunk)
    physics_seconds: float = 0.0  # in sim.step()


class SkillTracker:
    """Which planner skill the robot is in, from the gripper/motion segmenter on its history."""

    def __init__(self, instruction: str, task: str, action_repeat: int = 1) -> None:
        from w2a_models.plan_rules import decompose
        from w2a_models.tasks import TASKS

        self.texts = [s.description for s in decompose(instruction, task)] or [instruction]
        spec = TASKS.get(task)
        self.grasp = None if spec is None else spec.grasp
        self.task = task
        self.action_repeat = action_repeat  # the demos' segmenter step counts scale with it
        self.gripper: list[float] = []
        self.states: list[np.ndarray] = []

    def observe(self, state: np.ndarray, gripper_command: float) -> None:
        self.states.append(np.asarray(state, dtype=np.float32))
        self.gripper.append(1.0 if gripper_command > 0 else 0.0)

    def current(self) -> str:
        from w2a_models.episodes import STATE_LAYOUT
        from w2a_models.skills import SegmenterConfig, segment_episode

        if len(self.states) < 2:
            return self.texts[0]
        states = np.stack(self.states)
        seg = segment_episode(np.asarray(self.gripper), states[:, STATE_LAYOUT["ee_pos"]],
                              states[:, STATE_LAYOUT["object_pos"]],
                              SegmenterConfig(release_ends_place=self.task.startswith("libero"))
                              .for_action_repeat(self.action_repeat), grasp_task=self.grasp)
        return self.texts[min(len(seg.segments), len(self.texts)) - 1]


class ExpertTeacher:
    """What the scripted expert would do from the robot's exact state: a cloned simulator runs
    it for one chunk. Only a simulator can know this; it feeds the upper bounds."""

    def __init__(self, config: SimConfig, chunk_size: int, future: bool) -> None:
        from services.robot_sim.metaworld_env import MetaWorldSim, ScriptedExpert

        self.shadow = MetaWorldSim(config)
        self.expert = ScriptedExpert(config.task)
        self.chunk_size, self.future = chunk_size, future

    def begin(self, seed: int) -> None:
        self.shadow.reset(seed)  # same seed, same placement: the state copies line up

    def expert_chunk(self, sim) -> tuple[np.ndarray, list[np.ndarray]]:
        """-> (actions [M, A], frames of the expert future: M + 1 if ``future`` else none)."""
        self.shadow.copy_state_from(sim)
        obs, actions = self.shadow.obs, []
        frames = [self.shadow.render()] if self.future else []
        truncated = False
        for _ in range(self.chunk_size):
            if truncated:  # the episode's step limit: the expert holds its last action
                actions.append(actions[-1])
                frames += frames[-1:] if self.future else []
                continue
            actions.append(self.expert(obs))
            step = self.shadow.step(actions[-1])
            obs, truncated = step.obs, step.truncated
            if self.future:
                frames.append(self.shadow.render())
        return np.stack(actions).astype(np.float32), frames

    def oracle(self, sim):
        from w2a_client.client import image_proto
        from w2a_client.proto.w2a.v1 import policy_pb2 as pb

        actions, frames = self.expert_chunk(sim)
        return pb.SimOracle(expert_actions=actions.ravel().tolist(),
                            future_frames=[image_proto(f, "", "raw") for f in frames])

    def close(self) -> None:
        self.shadow.close()


class _Requests:
    """A request iterator fed one message at a time (the stream stays open between chunks)."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()

    def send(self, request) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self):
        while (item := self._queue.get()) is not None:
            yield item


def run_episode(client, sim: Simulator, config: RobotConfig, seed: int, episode_id: str,
                teacher: ExpertTeacher | None = None) -> EpisodeResult:
    from w2a_client.client import ActionChunk, act_request, episode_end_request

    instruction = sim.instruction
    tracker = SkillTracker(instruction, sim.task_name, config.action_repeat)
    result = EpisodeResult(config.robot_id, config.task, seed, False, 0, 0)
    started = time.perf_counter()
    obs = sim.reset(seed)
    if teacher is not None:
        teacher.begin(seed)
    requests = _Requests()
    responses = client.stream(requests, timeout=config.timeout_s * (config.max_steps + 2))
    try:
        while result.steps < config.max_steps and not result.success:
            skill = tracker.current()
            if not result.skills or result.skills[-1] != skill:
                result.skills.append(skill)
            t0 = time.perf_counter()
            frame = sim.render()
            result.render_seconds += time.perf_counter() - t0
            requests.send(act_request(config.robot_id, {config.camera: frame}, sim.state,
                                      instruction, episode_id=episode_id, step=result.steps,
                                      skill=skill, base_only=config.base_only,
                                      evaluation=config.evaluation,
                                      oracle=None if teacher is None else teacher.oracle(sim)))
            chunk = ActionChunk.from_proto(next(responses))
            result.chunks += 1
            result.fallbacks += int(chunk.fallback)
            if not result.policy_versions or result.policy_versions[-1] != chunk.version:
                result.policy_versions.append(chunk.version)
            for action in chunk.actions:
                tracker.observe(sim.state, float(action[-1]))  # the gripper is last (4-d and 7-d)
                t0 = time.perf_counter()
                step = sim.step(np.clip(action, -1.0, 1.0))
                result.physics_seconds += time.perf_counter() - t0
                obs = step.obs
                result.steps += 1
                if step.success:
                    result.success = True
                if step.success or step.truncated or result.steps >= config.max_steps:
                    break
        requests.send(episode_end_request(config.robot_id, episode_id, result.steps, result.success,
                                          evaluation=config.evaluation))
        next(responses)
    finally:
        requests.close()
        responses.cancel()
    del obs
    result.seconds = time.perf_counter() - started
    return result


class RobotError(RuntimeError):
    """A robot could not finish its episodes (policy server unreachable, request rejected, …)."""


def run_robot(config: RobotConfig) -> list[EpisodeResult]:
    """One robot, its episodes in order (the body of a robot process)."""
    import grpc

    try:
        return _run_robot(config)
    except grpc.RpcError as exc:  # not picklable across the process pool: say it in words
        raise RobotError(f"robot {config.robot_id} ({config.task}): policy server answered "
                         f"{exc.code().name}: {exc.details()}") from None


def _run_robot(config: RobotConfig) -> list[EpisodeResult]:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from w2a_client.client import PolicyClient

    torch.set_num_threads(1)
    results = []
    with PolicyClient(config.target, config.token, root_certificates=config.root_certificates) as client, \
            make_sim(config) as sim:
        client.wait_ready(60)
        teacher = None
        if config.oracle:
            teacher = ExpertTeacher(sim.config, int(client.info().chunk_size),
                                    future=config.oracle == "expert+future")
        try:
            for seed in config.seeds:
                kind = ("eval-" if config.evaluation else "") + ("base" if config.base_only else "w2a")
                episode_id = f"{config.task}-{kind}-s{seed}-{int(time.time() * 1e3)}"
                results.append(run_episode(client, sim, config, seed, episode_id, teacher))
        finally:
            if teacher is not None:
                teacher.close()
    return results


def run_robots(configs: list[RobotConfig], processes: int | None = None,
               on_result=None) -> list[EpisodeResult]:
    """Run robots in parallel processes; ``on_result(result)`` as each robot finishes."""
    if not configs:
        return []
    ctx = mp.get_context("spawn")  # MuJoCo/EGL contexts do not survive fork
    out: list[EpisodeResult] = []
    with ProcessPoolExecutor(processes or len(configs), mp_context=ctx) as pool:
        for results in pool.map(run_robot, configs):
            out.extend(results)
            if on_result is not None:
                for r in results:
                    on_result(r)
    return out


def split_seeds(seeds: list[int], robots: int) -> list[tuple[int, ...]]:
    """Round-robin the episode seeds over robots (every seed exactly once)."""
    return [tuple(seeds[i::robots]) for i in range(robots) if seeds[i::robots]]


def summarise(task: str, arm: str, results: list[EpisodeResult]) -> dict:
    successes = sum(r.success for r in results)
    steps, chunks = max(1, sum(r.steps for r in results)), max(1, sum(r.chunks for r in results))
    lo, hi = wilson_ci95(successes, len(results))
    return {"task": task, "arm": arm, "episodes": len(results), "successes": successes,
            "success_rate": successes / len(results) if results else 0.0, "ci95": [lo, hi],
            "seeds": sorted(r.seed for r in results),
            "outcomes": {int(r.seed): bool(r.success) for r in sorted(results, key=lambda r: r.seed)},
            "policy_versions": sorted({v for r in results for v in r.policy_versions}),
            "fallbacks": sum(r.fallbacks for r in results),
            # where the robots' time goes: physics per policy step, one render per chunk
            "physics_ms_per_step": 1e3 * sum(r.physics_seconds for r in results) / steps,
            "render_ms_per_chunk": 1e3 * sum(r.render_seconds for r in results) / chunks}


def result_dict(result: EpisodeResult) -> dict:
    return asdict(result)
