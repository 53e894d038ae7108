"""Collect expert demonstrations in Meta-World into the episode format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from services.robot_sim.metaworld_env import MetaWorldSim, ScriptedExpert, SimConfig
from w2a_models.episodes import Episode, EpisodeStore
from w2a_models.tasks import TASKS


@dataclass(frozen=True)
class CollectConfig:
    sim: SimConfig = field(default_factory=SimConfig)
    episodes: int = 10
    seed: int = 0
    keep_failures: bool = False
    settle_steps: int = 5  # steps recorded after success, so the clip shows the finished task
    max_attempts_factor: int = 3  # give up after episodes * factor attempts


@dataclass
class CollectReport:
    out: str
    task: str
    saved: int = 0
    attempted: int = 0
    failures: int = 0
    files: list[str] = field(default_factory=list)


def instruction_for(task: str) -> str:
    spec = TASKS.get(task)
    return spec.instruction if spec else task.removesuffix("-v3").replace("-", " ")


def rollout_expert(sim: MetaWorldSim, expert: ScriptedExpert, seed: int, settle_steps: int) -> Episode:
    """One expert episode: stop ``settle_steps`` after the first success, or at ``max_steps``.

    One recorded step is one policy step (the expert's action held ``action_repeat`` env steps),
    so demos have the time base the policy acts on."""
    obs = sim.reset(seed)
    frames, actions, states, gripper = [], [], [], []
    success_at: int | None = None
    for t in range(sim.config.max_steps):
        action = expert(obs)
        frames.append(sim.render())
        states.append(sim.state)
        actions.append(action)
        gripper.append(1.0 if action[3] > 0 else 0.0)
        result = sim.step(action)
        obs = result.obs
        if result.success and success_at is None:
            success_at = t
        if success_at is not None and t >= success_at + settle_steps:
            break
        if result.truncated:
            break
    return Episode(
        frames=np.stack(frames),
        actions=np.stack(actions).astype(np.float32),
        state=np.stack(states).astype(np.float32),
        gripper=np.asarray(gripper, dtype=np.float32),
        instruction=instruction_for(sim.config.task),
        task=sim.config.task,
        success=success_at is not None,
        seed=seed,
        camera=sim.config.camera,
        action_repeat=sim.config.action_repeat,
    )


def collect(out: str | Path, config: CollectConfig, progress: bool = True) -> CollectReport:
    """Roll out the scripted expert with seeds ``seed, seed+1, …`` until ``episodes`` are saved."""
    store = EpisodeStore(out)
    expert = ScriptedExpert(config.sim.task)
    report = CollectReport(out=str(out), task=config.sim.task)
    bar = tqdm(total=config.episodes, desc=f"collect {config.sim.task}", unit="ep",
               disable=not progress)
    seed = config.seed
    with MetaWorldSim(config.sim) as sim:
        while report.saved < config.episodes:
            if report.attempted >= config.episodes * config.max_attempts_factor:
                break
            episode = rollout_expert(sim, expert, seed, config.settle_steps)
            report.attempted += 1
            seed += 1
            if not episode.success:
                report.failures += 1
                if not config.keep_failures:
                    continue
            entry = store.add(episode)
            report.files.append(entry.file)
            report.saved += 1
            bar.update(1)
            bar.set_postfix(failures=report.failures)
    bar.close()
    return report
