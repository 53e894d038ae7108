"""How much a policy chunk moves in the camera image: the visibility check of a scene setting.

A world model can only tell a good chunk from a bad one if the chunk changes the image. This
rolls out the scripted expert and measures, per chunk of M policy steps, how far the hand (the
tool centre point) and the object move in pixels, and how big the workspace appears. The figures
are compared against the latent cell of the world model's VAE (8 px).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from services.robot_sim.metaworld_env import MetaWorldSim, ScriptedExpert, SimConfig
from w2a_models.episodes import STATE_LAYOUT

HAND, OBJECT = STATE_LAYOUT["ee_pos"], STATE_LAYOUT["object_pos"]

VAE_CELL_PX = 8  # spatial downsampling of the Wan VAE in the world model


@dataclass(frozen=True)
class ChunkMotion:
    task: str
    camera: str
    image_size: int
    action_repeat: int
    episodes: int
    expert_success_rate: float
    mean_policy_steps: float  # per expert episode
    hand_px_per_chunk_median: float
    hand_px_per_chunk_mean: float
    object_px_per_chunk_max_median: float  # per episode, the largest object move in one chunk
    goal_in_frame: bool  # the task's goal position projects inside the image
    hand_cells_per_chunk_median: float  # median hand motion in VAE cells

    def as_dict(self) -> dict:
        return asdict(self)


def measure_chunk_motion(config: SimConfig, episodes: int = 10, chunk: int = 8, seed: int = 0
                         ) -> ChunkMotion:
    """Expert rollouts on seeds ``seed …``; per-chunk pixel motion of hand and object."""
    expert = ScriptedExpert(config.task)
    hand_moves, object_moves, lengths, goal_inside = [], [], [], []
    successes = 0
    with MetaWorldSim(config) as sim:
        for s in range(seed, seed + episodes):
            obs = sim.reset(s)
            hand, obj = [obs[HAND].copy()], [obs[OBJECT].copy()]
            for _ in range(config.max_steps):
                step = sim.step(expert(obs))
                obs = step.obs
                hand.append(obs[HAND].copy())
                obj.append(obs[OBJECT].copy())
                if step.success or step.truncated:
                    successes += int(step.success)
                    break
            lengths.append(len(hand) - 1)
            hand_px, obj_px = sim.project(np.array(hand)), sim.project(np.array(obj))
            if len(hand_px) > chunk:
                hand_moves += list(np.linalg.norm(hand_px[chunk:] - hand_px[:-chunk], axis=1))
                object_moves.append(float(np.max(np.linalg.norm(obj_px[chunk:] - obj_px[:-chunk], axis=1))))
            goal = sim.project(np.asarray(obs[-3:])[None])[0]
            goal_inside.append(bool(np.all((goal >= 0) & (goal < config.image_size))))
    hand_moves = hand_moves or [0.0]
    return ChunkMotion(
        task=config.task, camera=config.camera, image_size=config.image_size,
        action_repeat=config.action_repeat, episodes=episodes,
        expert_success_rate=successes / episodes, mean_policy_steps=float(np.mean(lengths)),
        hand_px_per_chunk_median=float(np.median(hand_moves)),
        hand_px_per_chunk_mean=float(np.mean(hand_moves)),
        object_px_per_chunk_max_median=float(np.median(object_moves)) if object_moves else 0.0,
        goal_in_frame=all(goal_inside),
        hand_cells_per_chunk_median=float(np.median(hand_moves)) / VAE_CELL_PX)
