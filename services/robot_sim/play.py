"""Play data: the base policy with exploration noise, every policy step recorded like a demo.

Stage 1 learns which action chunk goes with which video. Trained on expert demos alone, the
adapters only ever see the expert's states and the expert's actions; on the base's own states
(where Stage 2 asks them to rank nearby actions) they rank the right chunk barely above chance
(issue 17's diagnostics). Play data fills that gap with what any robot fleet has: the base
acting, a random offset per chunk (the size of the corrections a residual makes) so the same
kind of state is seen with different actions, and the camera frame after every step. It uses
no simulator internals: action and video are what the robot did and saw, whatever the outcome.
Episodes are written in the demo format, so ``build_chunks`` reads them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from services.robot_sim.metaworld_env import MetaWorldSim, SimConfig
from services.robot_sim.seeds import ROLLOUT_SEEDS_START
from w2a_models.episodes import Episode, EpisodeStore

PLAY_SEEDS_START = ROLLOUT_SEEDS_START + 40_000  # task i plays on start + 1000 i + (0 … n-1)


@dataclass(frozen=True)
class PlayConfig:
    sim: SimConfig
    episodes: int = 10
    seed: int = 0
    chunk_offset_std: float = 0.3  # one Gaussian offset per chunk and action element
    step_noise_std: float = 0.05  # and a little per step on top
    clean_fraction: float = 0.25  # chunks the base plays unperturbed


def play_episode(base, sim: MetaWorldSim, config: PlayConfig, seed: int) -> Episode:
    """One episode of the base with exploration noise; the recorded actions are the executed ones."""
    from services.robot_sim.collect import instruction_for
    from w2a_models.base_policy import ObservationBatch

    rng = np.random.default_rng(seed)
    camera = base.spec.cameras[0].name
    instruction = instruction_for(sim.config.task)
    sim.reset(seed)
    frames, actions, states = [], [], []
    success = False
    frame = sim.render()
    while len(actions) < sim.config.max_steps and not success:
        chunk = base.predict(ObservationBatch({camera: frame[None]}, sim.state[None], [instruction])).actions[0]
        if rng.random() >= config.clean_fraction:
            chunk = chunk + rng.normal(0.0, config.chunk_offset_std, chunk.shape[1:])
            chunk = chunk + rng.normal(0.0, config.step_noise_std, chunk.shape)
        for action in np.clip(chunk, -1.0, 1.0).astype(np.float32):
            frames.append(frame)
            states.append(sim.state)
            actions.append(action)
            step = sim.step(action)
            frame = sim.render()
            success = step.success
            if success or step.truncated or len(actions) >= sim.config.max_steps:
                break
    frames.append(frame)  # the frame after the last action: its chunk's video is complete
    states.append(sim.state)
    actions.append(actions[-1])  # the episode format pairs every frame with an action
    acts = np.stack(actions)
    return Episode(frames=np.stack(frames), actions=acts, state=np.stack(states).astype(np.float32),
                   gripper=(acts[:, 3] > 0).astype(np.float32), instruction=instruction,
                   task=sim.config.task, success=success, seed=seed, camera=sim.config.camera,
                   action_repeat=sim.config.action_repeat)


def collect_play(base, out: str | Path, config: PlayConfig, progress: bool = True) -> dict:
    """``episodes`` play episodes on seeds ``seed, seed + 1, …`` into an episode store."""
    store = EpisodeStore(out)
    successes = 0
    with MetaWorldSim(config.sim) as sim:
        for seed in tqdm(range(config.seed, config.seed + config.episodes), desc=f"play {config.sim.task}",
                         unit="ep", disable=not progress):
            episode = play_episode(base, sim, config, seed)
            store.add(episode)
            successes += int(episode.success)
    return {"task": config.sim.task, "episodes": config.episodes, "successes": successes, "out": str(out)}
