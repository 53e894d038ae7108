"""Probe: which action dimensions, and how much, of a trained Stage 2 residual break the base.

Replays a run's base and its last residual checkpoint in-process, as the policy server would
(a_final = a_base + residual, the server's norm cap and action bounds), on rollout-range
placements (never the official init states), once per variant of the residual: only some of its
dimensions (a mask), or all of them scaled down. A variant that keeps the base's successes while
the full residual loses them names where the harm is. Output: one JSON line per (variant, task)
and a summary table.

    .venv/bin/python scripts/probe_residual_dims.py --run runs/libero5 --out runs/probe_dims \\
        --tasks libero_object:5,libero_object:1,libero_object:6 --masks none,all,0-1-2,all@0.1,sign@0.1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

from services.robot_sim.seeds import ROLLOUT_SEEDS_START
from w2a_models.stats import mcnemar_exact, wilson_ci95

PROBE_SEEDS_START = ROLLOUT_SEEDS_START + 80_000  # pilot_base.py's placements: comparable with its bases


# per-dimension RMS of the trained residual of runs/libero5 on rollout placements (probe 1): the
# size a random control ('random@s') draws with, so it differs from 'all@s' only in direction
RANDOM_RMS = (0.5, 0.55, 0.5, 0.05, 0.05, 0.05, 0.7)


class Variant(NamedTuple):
    kind: str  # "base" (no residual), "residual" (the trained one), "gauss" or "sign" (random controls)
    dims: tuple[int, ...]  # the residual's dimensions kept (() = all it moves)
    factor: float  # scale of the residual, or of the random control


def _variant(text: str) -> Variant:
    """'none' -> the base alone; 'all' -> every dimension; '0-1-2' -> only those; '@0.1' after
    either scales the residual by 0.1 (a bound 10x smaller); 'random@0.1' -> Gaussian noise of
    0.1 x RANDOM_RMS instead of the trained residual; 'sign@0.1' -> +-0.1 with a random sign on
    every element the run's residual may move (a saturated residual's size without its
    direction). The random ones are controls for the direction."""
    dims, _, scale = text.partition("@")
    factor = float(scale) if scale else 1.0
    if dims in ("random", "sign"):
        return Variant("gauss" if dims == "random" else "sign", (), factor)
    if dims == "none":
        return Variant("base", (), factor)
    if dims == "all":
        return Variant("residual", (), factor)
    return Variant("residual", tuple(int(d) for d in dims.split("-")), factor)


def _episodes(job: tuple) -> dict:
    run, task, seeds, mask_text, max_norm = job
    os.environ.setdefault("MUJOCO_GL", "egl")
    import numpy as np
    import torch

    from services.demo import libero_task
    from services.policy.safety import SafetyConfig, apply_safety
    from services.robot_sim.libero_env import policy_step_limit
    from services.robot_sim.local_eval import run_local_episodes
    from services.robot_sim.robot import make_simulator
    from services.trainer.checkpointing import TrainerCheckpoint
    from w2a_models.base_policy.tiny_vla import TinyVLA

    torch.set_num_threads(1)
    base = TinyVLA.load(run / "base")
    variant = _variant(mask_text)
    residual = None
    dim = base.spec.action_dim
    if variant.kind == "gauss":
        noise_std = variant.factor * np.asarray(RANDOM_RMS[:dim], dtype=np.float32)
    if variant.kind in ("residual", "sign"):
        residual = TrainerCheckpoint(run / "trainer_w2a", 1).restore().residual.eval()
        moved = residual.dim_mask.numpy()
        keep = np.zeros(dim, dtype=np.float32)
        keep[list(variant.dims) if variant.dims else slice(None)] = variant.factor
        keep = keep * moved
    safety = SafetyConfig((-1.0,) * dim, (1.0,) * dim, max_norm)
    applied, rngs = [], {}

    def chunk(seed, out):
        """base + the variant's residual, as the policy server applies it (cap, bounds)."""
        res = np.zeros_like(out.actions)
        rng = rngs.setdefault(seed, np.random.default_rng(seed))
        if variant.kind == "gauss":
            res = (rng.standard_normal(res.shape) * noise_std).astype(np.float32)
        elif variant.kind == "sign":
            res = (rng.choice((-1.0, 1.0), size=res.shape) * keep).astype(np.float32)
        elif residual is not None:
            with torch.no_grad():
                res = residual(torch.from_numpy(out.features), torch.from_numpy(out.actions)).numpy()
            res = res * keep
        safe = apply_safety(out.actions, res, safety)
        applied.append(np.abs(safe.residual[0]).mean(axis=0))
        return safe.final[0]

    suite, name = libero_task(task)
    limit = policy_step_limit(suite, 1)
    with make_simulator("libero", name, 64, "agentview", limit, 1, suite) as sim:
        successes = [int(e.success) for e in run_local_episodes(base, sim, seeds, limit, chunk)]
    return {"task": task, "mask": mask_text, "per_seed": successes, "episodes": len(seeds),
            "success_rate": sum(successes) / len(seeds),
            "mean_abs_residual_per_dim": np.mean(applied, axis=0).round(3).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a `w2a demo --profile libero` output directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", default="libero_object:5,libero_object:1,libero_object:6")
    ap.add_argument("--masks", default="none,all,0-1-2,0-1-2-6",
                    help="'none' = the base alone, 'all' = the residual as trained, '0-1-2' = only those "
                         "dims; '@0.1' after either scales it")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--residual-max-norm", type=float, default=2.0, help="the policy server's cap (the profile's)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tasks, masks = args.tasks.split(","), args.masks.split(",")
    for m in masks:
        _variant(m)  # fail here on a bad mask, not in a worker
    args.out.mkdir(parents=True, exist_ok=True)
    # task i of the run's list: the pilot's placements for that list position
    order = json.loads((args.run / "report.json").read_text())["profile"]["tasks"]
    jobs = [(args.run, t, list(range(PROBE_SEEDS_START + 1000 * order.index(t),
                                     PROBE_SEEDS_START + 1000 * order.index(t) + args.episodes)),
             m, args.residual_max_norm) for m in masks for t in tasks]
    rows = []
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        for row in pool.map(_episodes, jobs):
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "probe.json").write_text(json.dumps(rows, indent=1))
    reference = {r["task"]: r["per_seed"] for r in rows if r["mask"] == masks[0]}
    print(f"\n| residual dims | {' | '.join(tasks)} | all | vs {masks[0]} (gained / lost, p) "
          "| mean abs residual per dim |")
    print("| --- |" + " --- |" * (len(tasks) + 3))
    for m in masks:
        mine = [r for t in tasks for r in rows if r["mask"] == m and r["task"] == t]
        k, n = sum(sum(r["per_seed"]) for r in mine), sum(r["episodes"] for r in mine)
        lo, hi = wilson_ci95(k, n)
        a = [s for r in mine for s in reference[r["task"]]]
        b = [s for r in mine for s in r["per_seed"]]
        gained = sum(1 for x, y in zip(a, b) if y and not x)
        lost = sum(1 for x, y in zip(a, b) if x and not y)
        dims = [round(sum(r["mean_abs_residual_per_dim"][d] for r in mine) / len(mine), 3)
                for d in range(len(mine[0]["mean_abs_residual_per_dim"]))]
        cells = " | ".join(f"{r['success_rate']:.2f}" for r in mine)
        print(f"| {m} | {cells} | {k}/{n} [{lo:.2f}, {hi:.2f}] | +{gained} -{lost}, "
              f"p = {mcnemar_exact(gained, lost):.2g} | {dims} |")


if __name__ == "__main__":
    main()
