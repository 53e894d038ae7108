"""Pilot: which tasks and base demo counts put the behaviour-cloned base in the useful range.

World2Act's residual needs a base that roughly works (25-65 % success here). For each demo count
N this trains one multi-task TinyVLA on the first N expert demos of every candidate task (what
``w2a demo`` does) and evaluates it in-process on rollout-range seeds — never on evaluation
seeds. Output: one JSON line per (N, task) and a summary table.

    .venv/bin/python scripts/pilot_base.py --out runs/pilot --tasks pick-place-v3,push-v3 --counts 4,8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from services.demo import _base_subset
from services.robot_sim.collect import CollectConfig, collect
from services.robot_sim.local_eval import run_local_episodes
from services.robot_sim.metaworld_env import DEFAULT_ACTION_REPEAT, DEFAULT_CAMERA, SimConfig
from services.robot_sim.seeds import DEMO_SEEDS_START, ROLLOUT_SEEDS_START
from services.trainer.base_bc import BCConfig, train_base
from w2a_models.base_policy.tiny_vla import TinyVLA
from w2a_models.stats import wilson_ci95

PILOT_SEEDS_START = ROLLOUT_SEEDS_START + 80_000  # inside the rollout range, used by nothing else


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", default="pick-place-v3,push-v3,plate-slide-v3,button-press-v3,door-open-v3")
    ap.add_argument("--counts", default="4,8")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--base-steps", type=int, default=1500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--camera", default=DEFAULT_CAMERA)
    ap.add_argument("--action-repeat", type=int, default=DEFAULT_ACTION_REPEAT)
    ap.add_argument("--max-steps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = args.tasks.split(",")
    counts = [int(c) for c in args.counts.split(",")]
    sims = {t: SimConfig(task=t, image_size=args.size, camera=args.camera,
                         action_repeat=args.action_repeat, max_steps=args.max_steps) for t in tasks}
    data = args.out / "data"
    for i, task in enumerate(tasks):  # the demo's seeds: task i collects from 1000 * i
        if not (data / task / "index.json").exists():
            collect(data / task, CollectConfig(sim=sims[task], episodes=max(counts),
                                               seed=DEMO_SEEDS_START + 1000 * i), progress=False)
    rows = []
    for n in counts:
        started = time.monotonic()
        subset = _base_subset(data, args.out / f"base_data_{n}", n, tasks)
        train_base(subset, args.out / f"base_{n}", config=BCConfig(steps=args.base_steps,
                                                                   holdout_fraction=0.0), progress=False)
        policy = TinyVLA.load(args.out / f"base_{n}")
        trained = time.monotonic() - started
        for t_i, task in enumerate(tasks):
            seeds = list(range(PILOT_SEEDS_START + 1000 * t_i, PILOT_SEEDS_START + 1000 * t_i + args.episodes))
            results = run_local_episodes(policy, sims[task], seeds)
            k = sum(r.success for r in results)
            lo, hi = wilson_ci95(k, len(results))
            row = {"demos": n, "task": task, "episodes": len(results), "success_rate": k / len(results),
                   "ci95": [lo, hi], "train_s": round(trained, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "pilot.json").write_text(json.dumps(rows, indent=1))
    print("\n| demos per task | " + " | ".join(tasks) + " |")
    print("| --- |" + " --- |" * len(tasks))
    for n in counts:
        cells = [f"{r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
                 for t in tasks for r in rows if r["demos"] == n and r["task"] == t]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
