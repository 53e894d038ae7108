"""Pilot: which tasks, base demo counts and training steps put the behaviour-cloned base in the
useful range.

World2Act's residual needs a base that roughly works (25-65 % success here). For each demo count
N and step count S this trains one multi-task TinyVLA on the first N expert demos of every
candidate task (what ``w2a demo`` does) and evaluates it in-process on rollout-range seeds —
never on evaluation seeds (on LIBERO: sampled placements, never the official init states).
Output: one JSON line per (N, S, task) and a summary table.

    .venv/bin/python scripts/pilot_base.py --out runs/pilot --tasks pick-place-v3,push-v3 --counts 4,8
    .venv/bin/python scripts/pilot_base.py --sim libero --out runs/libero_pilot \\
        --tasks libero_object:0,libero_10:0 --counts 10 --base-steps 1500,6000 --episodes 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from services.demo import _base_subset, _collect_task, _train_base, base_bc_config
from services.robot_sim.metaworld_env import DEFAULT_ACTION_REPEAT, DEFAULT_CAMERA
from services.robot_sim.seeds import DEMO_SEEDS_START, ROLLOUT_SEEDS_START
from w2a_models.stats import wilson_ci95

PILOT_SEEDS_START = ROLLOUT_SEEDS_START + 80_000  # inside the rollout range, used by nothing else


def _evaluate(job: tuple) -> dict:
    """One task's pilot episodes in a worker process (simulators are single-threaded)."""
    sim_name, base_dir, task, seeds, size, camera, repeat, max_steps = job
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from services.robot_sim.local_eval import run_local_episodes
    from services.robot_sim.robot import make_simulator
    from w2a_models.base_policy.tiny_vla import TinyVLA

    torch.set_num_threads(1)
    name, suite = task, "libero_object"
    if sim_name == "libero":
        from services.demo import libero_task
        from services.robot_sim.libero_env import policy_step_limit

        suite, name = libero_task(task)
        max_steps = max_steps or policy_step_limit(suite, repeat)
    with make_simulator(sim_name, name, size, camera, max_steps, repeat, suite) as sim:
        results = run_local_episodes(TinyVLA.load(base_dir), sim, seeds, max_steps)
    return {"task": task, "successes": sum(r.success for r in results), "episodes": len(results),
            "mean_steps": sum(r.steps for r in results) / len(results),
            "per_seed": [int(r.success) for r in results]}  # seed order: recipes pair up seed by seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sim", choices=("metaworld", "libero"), default="metaworld")
    ap.add_argument("--tasks", default="pick-place-v3,push-v3,plate-slide-v3,button-press-v3,door-open-v3",
                    help="Meta-World task names, or LIBERO '<suite>:<task index>'")
    ap.add_argument("--eval-tasks", default=None,
                    help="the tasks to evaluate (default: all of --tasks; the base still trains on every task)")
    ap.add_argument("--counts", default="4,8", help="demos per task the base trains on")
    ap.add_argument("--base-steps", default="1500", help="BC steps, one base per value")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--camera", default=None, help=f"default {DEFAULT_CAMERA} (Meta-World), agentview (LIBERO)")
    ap.add_argument("--action-repeat", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None, help="policy steps; LIBERO default: the suite's limit")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--state-std-floor", type=float, default=0.0, help="base_bc.BCConfig.state_std_floor")
    ap.add_argument("--image-shift", default="0", help="base_bc.BCConfig.image_shift; comma list, one base each")
    ap.add_argument("--state-noise", default="0", help="base_bc.BCConfig.state_noise; comma list, one base each")
    ap.add_argument("--labels", default="executed", help="base_bc.BCConfig.labels; comma list, one base each")
    ap.add_argument("--bc-seed", type=int, default=0, help="base_bc.BCConfig.seed: how much is the training run's luck")
    ap.add_argument("--demo-noise", type=float, default=0.0,
                    help="LIBERO: perturbed execution of the demos (libero_experts.ActionNoise std)")
    args = ap.parse_args()
    libero = args.sim == "libero"
    camera = args.camera or ("agentview" if libero else DEFAULT_CAMERA)
    repeat = args.action_repeat or (1 if libero else DEFAULT_ACTION_REPEAT)
    max_steps = args.max_steps if args.max_steps is not None else (0 if libero else 60)
    tasks = args.tasks.split(",")
    eval_tasks = args.eval_tasks.split(",") if args.eval_tasks else tasks
    if unknown := set(eval_tasks) - set(tasks):
        ap.error(f"--eval-tasks {sorted(unknown)} are not in --tasks {tasks}")
    counts = [int(c) for c in args.counts.split(",")]
    step_counts = [int(s) for s in args.base_steps.split(",")]
    # one base per (steps, image shift, state noise, labels): the recipes a pilot compares
    recipes = [(steps, int(shift), float(noise), labels) for steps in step_counts
               for shift in args.image_shift.split(",") for noise in args.state_noise.split(",")
               for labels in args.labels.split(",")]
    spawn = mp.get_context("spawn")
    data = args.out / "data"
    started = time.monotonic()
    # the demo's seeds: task i collects from DEMO_SEEDS_START + 1000 i
    jobs = [(args.sim, data / t, t, max(counts), DEMO_SEEDS_START + 1000 * i, args.size, camera, repeat, max_steps,
             args.demo_noise) for i, t in enumerate(tasks) if not (data / t / "index.json").exists()]
    if jobs:
        with ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
            list(pool.map(_collect_task, jobs))
        print(f"collected {len(jobs)} tasks in {time.monotonic() - started:.0f}s", flush=True)
    rows = []
    for n in counts:
        subset = _base_subset(data, args.out / f"base_data_{n}", n, tasks)
        for steps, shift, noise, labels in recipes:
            floor = f"_floor{args.state_std_floor:g}" if args.state_std_floor else ""
            augment = ((f"_shift{shift}" if shift else "") + (f"_snoise{noise:g}" if noise else "")
                       + ("_expertlabels" if labels == "expert" else "")
                       + (f"_seed{args.bc_seed}" if args.bc_seed else ""))
            base_dir = args.out / f"base_{n}_{steps}{floor}{augment}"
            started = time.monotonic()
            if not (base_dir / "train_report.json").exists():
                _train_base((subset, base_dir, base_bc_config(
                    steps, state_std_floor=args.state_std_floor, image_shift=shift, state_noise=noise,
                    labels=labels, seed=args.bc_seed)))
            trained = time.monotonic() - started
            evals = [(args.sim, base_dir, t, list(range(PILOT_SEEDS_START + 1000 * t_i,
                                                         PILOT_SEEDS_START + 1000 * t_i + args.episodes)),
                      args.size, camera, repeat, max_steps) for t_i, t in enumerate(tasks) if t in eval_tasks]
            with ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
                for result in pool.map(_evaluate, evals):
                    k, m = result["successes"], result["episodes"]
                    lo, hi = wilson_ci95(k, m)
                    row = {"demos": n, "base_steps": steps, "state_std_floor": args.state_std_floor,
                           "image_shift": shift, "state_noise": noise, "labels": labels, "bc_seed": args.bc_seed,
                           "demo_noise": args.demo_noise, "task": result["task"], "episodes": m,
                           "success_rate": k / m, "ci95": [lo, hi], "mean_steps": result["mean_steps"],
                           "per_seed": result["per_seed"], "train_s": round(trained, 1)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    (args.out / "pilot.json").write_text(json.dumps(rows, indent=1))
    print("\n| demos per task | base steps | image shift | state noise | labels | " + " | ".join(eval_tasks) + " |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(eval_tasks))
    for n in counts:
        for steps, shift, noise, labels in recipes:
            cells = [f"{r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" for t in eval_tasks
                     for r in rows if (r["demos"], r["base_steps"], r["image_shift"], r["state_noise"],
                                       r["labels"], r["task"]) == (n, steps, shift, noise, labels, t)]
            print(f"| {n} | {steps} | {shift} | {noise:g} | {labels} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
