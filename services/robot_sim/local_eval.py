"""Run a base policy in the simulator in-process, without servers.

For pilots that choose settings (task set, base demo count) before a real run: no gRPC, no
Redis, so a pilot of many configurations fits in minutes. Reported results never come from
here; they come from sim robots acting through the policy server (``services.robot_sim.robot``).
The loop mirrors a robot's: one observation per chunk, the chunk executed open loop, each
action clipped to [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.robot_sim.collect import instruction_for
from services.robot_sim.metaworld_env import MetaWorldSim, SimConfig
from w2a_models.base_policy import BasePolicy, ObservationBatch

@dataclass(frozen=True)
class LocalEpisode:
    seed: int
    success: bool
    steps: int


def run_local_episodes(policy: BasePolicy, sim_config: SimConfig, seeds: list[int]) -> list[LocalEpisode]:
    """One episode per seed, the base policy alone."""
    camera = policy.spec.cameras[0].name
    instruction = instruction_for(sim_config.task)
    out = []
    with MetaWorldSim(sim_config) as sim:
        for seed in seeds:
            sim.reset(seed)
            steps, success = 0, False
            while steps < sim_config.max_steps and not success:
                batch = ObservationBatch({camera: sim.render()[None]}, sim.state[None], [instruction])
                for action in policy.predict(batch).actions[0]:
                    step = sim.step(np.clip(action, -1.0, 1.0))
                    steps += 1
                    success = step.success
                    if success or step.truncated or steps >= sim_config.max_steps:
                        break
            out.append(LocalEpisode(seed, success, steps))
    return out
