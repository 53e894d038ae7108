"""Pilot: which Stage 2 schedule lets a residual taught by the scripted expert beat the base.

The upper bound of issue 17 ("expert_corrected": the residual regressed onto a* - a_base on the
policy's own states) ended below the base in the first full run, so no Stage 2 signal could
help until the schedule does. This pilot runs that upper bound in-process (no servers): robots
roll out with base + residual under the policy server's safety rules, the expert labels every
chunk from the exact state, and the residual updates whenever a batch is full — as the trainer
does — with one of several schedules:

- ``stream``: each batch is trained on ``--steps`` times and forgotten (the trainer before the
  replay buffer);
- ``replay``: every step mixes the new batch with ``--replay-batch`` earlier chunks
  (``services.trainer.replay.ReplayBuffer``: on-policy aggregation).

Seeds are in the rollout range (never evaluation seeds). Results choose the demo's defaults;
reported results come from ``w2a demo``.

    .venv/bin/python scripts/pilot_stage2.py --run runs/full2 --out runs/pilot_stage2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.policy.safety import SafetyConfig, apply_safety
from services.robot_sim.collect import instruction_for
from services.robot_sim.metaworld_env import DEFAULT_ACTION_REPEAT, DEFAULT_CAMERA, MetaWorldSim, SimConfig
from services.robot_sim.robot import ExpertTeacher
from services.robot_sim.seeds import ROLLOUT_SEEDS_START
from services.trainer.replay import ReplayBuffer
from services.trainer.stage2 import expert_residual_loss
from w2a_models.base_policy import ObservationBatch
from w2a_models.base_policy.tiny_vla import TinyVLA
from w2a_models.residual import ResidualConfig, ResidualPolicy
from w2a_models.stats import paired_comparison

ROLLOUT_START = ROLLOUT_SEEDS_START + 60_000  # used by nothing else
HOLDOUT_START = ROLLOUT_SEEDS_START + 65_000  # the pilot's own judging seeds (still rollout range)


@dataclass
class Schedule:
    name: str
    steps: int
    lr: float
    replay_batch: int


class Learner:
    """One residual, its optimizer and (optionally) its replay, updated once a batch is full."""

    def __init__(self, schedule: Schedule, obs_dim: int, bound: float, batch: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.schedule, self.batch = schedule, batch
        self.residual = ResidualPolicy(ResidualConfig(obs_dim=obs_dim, scale=bound))
        self.optimizer = torch.optim.AdamW(self.residual.parameters(), lr=schedule.lr, weight_decay=0.0)
        self.replay = ReplayBuffer(20_000 if schedule.replay_batch else 0, seed)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.updates = 0

    def add(self, features, base, expert) -> None:
        self.pending.append((features, base, expert))
        if len(self.pending) >= self.batch:
            self.update()

    def update(self) -> None:
        new = tuple(np.stack(x) for x in zip(*self.pending))
        self.pending = []
        self.residual.train()
        for _ in range(self.schedule.steps):
            f, b, e = (torch.from_numpy(a) for a in self.replay.mixed(new, self.schedule.replay_batch))
            loss, _ = expert_residual_loss(self.residual, f, b, e)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.residual.parameters(), 1.0)
            self.optimizer.step()
        self.residual.eval()
        self.replay.add(*new)
        self.updates += 1


def run_episode(sim, teacher, policy, camera, instruction, seed, safety, learner=None,
                residual=None) -> bool:
    """One episode, a chunk per observation executed open loop (as a sim robot does)."""
    sim.reset(seed)
    if teacher is not None:
        teacher.begin(seed)
    steps, success = 0, False
    while steps < sim.config.max_steps and not success:
        out = policy.predict(ObservationBatch({camera: sim.render()[None]}, sim.state[None], [instruction]))
        res = np.zeros_like(out.actions)
        if residual is not None:
            with torch.no_grad():
                res = residual(torch.from_numpy(out.features), torch.from_numpy(out.actions)).numpy()
        safe = apply_safety(out.actions, res, safety)
        if learner is not None:
            expert, _ = teacher.expert_chunk(sim)
            learner.add(out.features[0], safe.base[0], expert)
        for action in safe.final[0]:
            step = sim.step(np.clip(action, -1.0, 1.0))
            steps += 1
            success = step.success
            if success or step.truncated or steps >= sim.config.max_steps:
                break
    return success


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a w2a demo run directory (its base/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", default="pick-place-v3,push-v3")
    ap.add_argument("--schedules", default="stream:10:1e-3:0,replay:10:1e-3:96",
                    help="name:steps:lr:replay_batch, comma-separated")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=10, help="rollout episodes per task and round")
    ap.add_argument("--judge", type=int, default=30, help="held-out pilot episodes per task")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bound", type=float, default=1.0)
    ap.add_argument("--max-norm", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    policy = TinyVLA.load(args.run / "base")
    camera = policy.spec.cameras[0].name
    spec = policy.spec
    safety = SafetyConfig((-1.0,) * spec.action_dim, (1.0,) * spec.action_dim, args.max_norm)  # the server default
    sims = {t: SimConfig(task=t, image_size=64, camera=DEFAULT_CAMERA, action_repeat=DEFAULT_ACTION_REPEAT,
                         max_steps=args.max_steps) for t in tasks}
    schedules = []
    for text in args.schedules.split(","):
        name, steps, lr, replay = text.split(":")
        schedules.append(Schedule(name, int(steps), float(lr), int(replay)))
    judge_seeds = {t: list(range(HOLDOUT_START + 1000 * i, HOLDOUT_START + 1000 * i + args.judge))
                   for i, t in enumerate(tasks)}
    rows = []

    def judge(label: str, residual) -> dict[str, dict[int, bool]]:
        outcomes = {}
        for task in tasks:
            with MetaWorldSim(sims[task]) as sim:
                outcomes[task] = {s: run_episode(sim, None, policy, camera, instruction_for(task), s,
                                                 safety, residual=residual) for s in judge_seeds[task]}
            print(f"  {label:10s} {task:16s} {np.mean(list(outcomes[task].values())):.2f}", flush=True)
        return outcomes

    base = judge("base", None)
    for sched in schedules:
        started = time.monotonic()
        learner = Learner(sched, spec.feature_dim, args.bound, args.batch, seed=0)
        for rnd in range(args.rounds):
            rates = {}
            episode_sims = {t: (MetaWorldSim(sims[t]), ExpertTeacher(sims[t], spec.chunk_size, future=False))
                            for t in tasks}
            try:
                for e in range(args.episodes):  # tasks interleave, as concurrent robots do
                    for t_i, task in enumerate(tasks):
                        sim, teacher = episode_sims[task]
                        seed = ROLLOUT_START + 1000 * t_i + rnd * args.episodes + e
                        ok = run_episode(sim, teacher, policy, camera, instruction_for(task), seed, safety,
                                         learner=learner, residual=learner.residual)
                        rates.setdefault(task, []).append(ok)
            finally:
                for sim, teacher in episode_sims.values():
                    sim.close()
                    teacher.close()
            print(f"  {sched.name:10s} round {rnd + 1}: rollout success "
                  + ", ".join(f"{t} {np.mean(v):.2f}" for t, v in rates.items())
                  + f"; {learner.updates} updates", flush=True)
        outcomes = judge(sched.name, learner.residual)
        for task in tasks:
            cmp = paired_comparison(base[task], outcomes[task]).as_dict()
            row = {"schedule": sched.__dict__, "task": task, "base": float(np.mean(list(base[task].values()))),
                   "trained": float(np.mean(list(outcomes[task].values()))), "paired": cmp,
                   "updates": learner.updates, "seconds": round(time.monotonic() - started, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "pilot_stage2.json").write_text(json.dumps(rows, indent=1))
    print("\n| schedule | task | base | trained | difference [95 % CI] | McNemar p |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c = r["paired"]
        print(f"| {r['schedule']['name']} | {r['task']} | {r['base']:.2f} | {r['trained']:.2f} | "
              f"{100 * c['difference']:+.0f} [{100 * c['difference_ci95'][0]:+.0f}, "
              f"{100 * c['difference_ci95'][1]:+.0f}] | {c['p_value']:.3g} |")


if __name__ == "__main__":
    main()
