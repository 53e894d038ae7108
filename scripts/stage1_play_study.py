"""Does Stage 1 rank actions on the base's own states once it has seen them? (issue 17, link 2)

On one demo run (its demos, base and world model), on the same on-policy diagnostic chunks:

  D       Stage 1 on the expert demos only (the full profile's Stage 1: spatial latents,
          same-index and perturbed negatives)
  F       D's Stage 1 on the demos plus play data (``services.robot_sim.play``: the base with a
          random offset per chunk, every frame recorded; no simulator internals)
  G       F with more play data

For each: held-out retrieval and the link diagnostics (e_real / e_wm against e_base, cos_grad,
on-policy local retrieval of the expert's chunk a* by its real and imagined future). All
in-process; nothing here evaluates a policy.

    .venv/bin/python scripts/stage1_play_study.py --run runs/full2 --out runs/full2/play_study.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from services.jobs.diagnostics import (
    DIAGNOSE_SEEDS_START,
    DiagnoseConfig,
    collect_on_policy,
    diagnose_chunks,
    link_line,
)
from services.jobs.stage1 import Stage1Config, train_stage1
from services.jobs.stage1_data import InProcessEncoder, build_chunks
from services.robot_sim.metaworld_env import SimConfig
from services.robot_sim.play import PLAY_SEEDS_START, PlayConfig, collect_play
from services.trainer.residual_app import load_adapters
from w2a_models.base_policy.tiny_vla import TinyVLA
from w2a_models.episodes import find_episode_files
from w2a_models.world_model import WorldModel, WorldModelConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--play-episodes", default="0,16,32", help="play episodes per task, one variant each")
    ap.add_argument("--offset-std", type=float, default=0.3)
    ap.add_argument("--stage1-steps", type=int, default=1000)
    ap.add_argument("--episodes", type=int, default=6, help="base rollouts per task (diagnostics)")
    ap.add_argument("--max-chunks", type=int, default=48)
    ap.add_argument("--sampling-steps", type=int, default=8, help="the full profile's wm_sampling_steps")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = json.loads((args.run / "report.json").read_text())["profile"]
    sim_settings = {"camera": p["camera"], "image_size": p["image_size"],
                    "action_repeat": p["action_repeat"], "max_steps": p["max_steps"]}
    base = TinyVLA.load(args.run / "base")
    model = WorldModel.from_pretrained(args.run / "world_model", WorldModelConfig(
        features=p["wm_features"], num_inference_steps=args.sampling_steps))
    encoder = InProcessEncoder(model)
    counts = sorted({int(n) for n in args.play_episodes.split(",")})
    play_root = args.run / f"play_std{args.offset_std}"
    play = {}
    for i, task in enumerate(p["tasks"]):  # the largest count once; smaller variants take a prefix
        started = time.monotonic()
        play[task] = collect_play(base, play_root / task, PlayConfig(
            SimConfig(task=task, **sim_settings), episodes=max(counts), seed=PLAY_SEEDS_START + 1000 * i,
            chunk_offset_std=args.offset_std), progress=False)
        print(f"play {task}: {play[task]} in {time.monotonic() - started:.0f}s", flush=True)
    config = DiagnoseConfig(episodes=args.episodes, max_chunks=args.max_chunks,
                            perturb_scale=0.3 * p["residual_scale"])
    on_policy = {t: collect_on_policy(base, SimConfig(task=t, **sim_settings), config,
                                      DIAGNOSE_SEEDS_START + 1000 * i) for i, t in enumerate(p["tasks"])}
    print({t: len(c) for t, c in on_policy.items()}, flush=True)
    demos = find_episode_files(args.run / "data")
    s1 = Stage1Config(steps=args.stage1_steps, video_encoder="spatial", same_index_negatives=p["stage1_same_index"],
                      perturbed_negatives=p["stage1_perturbed"], perturb_scale=0.3 * p["residual_scale"])
    results = {"play": play, "variants": {}}
    for n in counts:
        name = f"play_{n}"
        started = time.monotonic()
        paths = demos + [f for t in p["tasks"] for f in find_episode_files(play_root / t)[:n]]
        chunks = build_chunks(paths, encoder, 8, args.run / "cache_study", progress=False)
        stage1 = train_stage1(chunks, args.run / "play_study" / name, replace(s1), progress=False)
        adapters = load_adapters(args.run / "play_study" / name / "checkpoint")
        links = {t: diagnose_chunks(c, model, adapters, config) for t, c in on_policy.items()}
        keys = ("v2a_top1_all", "v2a_top1_same_skill", "v2a_top1_local", "chance_top1_local", "recon_mse",
                "train_pairs")
        results["variants"][name] = {"play_episodes_per_task": n, "stage1": {k: stage1.get(k) for k in keys},
                                     "links": links, "seconds": round(time.monotonic() - started, 1)}
        print(name, json.dumps(results["variants"][name]["stage1"]), flush=True)
        for t, row in links.items():
            print(link_line(t, row), flush=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
