"""Run a base policy in the simulator in-process, without servers.

For pilots that choose settings (task set, base demo count) before a real run: no gRPC, no
Redis, so a pilot of many configurations fits in minutes. Reported results never come from
here; they come from sim robots acting through the policy server (``services.robot_sim.robot``).
The loop mirrors a robot's: one observation per chunk, the chunk executed open loop, each
action clipped to [-1, 1]. ``chunk`` lets a probe change what is executed (e.g. base + a trained
residual under the server's safety rules) without a loop of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.robot_sim.simulator import Simulator
from w2a_models.base_policy import BaseOutput, BasePolicy, ObservationBatch

ChunkFn = Callable[[int, BaseOutput], np.ndarray]  # (seed, base output) -> executed chunk [M, A]


@dataclass(frozen=True)
class LocalEpisode:
    seed: int
    success: bool
    steps: int


def run_local_episodes(policy: BasePolicy, sim: Simulator, seeds: list[int], max_steps: int,
                       chunk: ChunkFn | None = None) -> list[LocalEpisode]:
    """One episode per seed on an open simulator (Meta-World or LIBERO), the base policy alone
    unless ``chunk`` says what to execute; an episode ends at success, the simulator's own
    truncation, or ``max_steps`` policy steps."""
    camera = policy.spec.cameras[0].name
    out = []
    for seed in seeds:
        sim.reset(seed)
        steps, success, ended = 0, False, False
        while not ended:
            batch = ObservationBatch({camera: sim.render()[None]}, sim.state[None], [sim.instruction])
            predicted = policy.predict(batch)
            for action in (predicted.actions[0] if chunk is None else chunk(seed, predicted)):
                step = sim.step(np.clip(action, -1.0, 1.0))
                steps += 1
                success = step.success
                ended = success or step.truncated or steps >= max_steps
                if ended:
                    break
        out.append(LocalEpisode(seed, success, steps))
    return out
