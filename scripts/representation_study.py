"""Representation study on one demo run: which world-model read-out and Stage 1 negatives carry
the signal World2Act needs, measured link by link on the same data.

Each variant adds one change to the previous one (issue 17, item 5):

  A  pooled DiT features, temporal adapter (what the system did before)
  B  latent_map features (clean VAE latents kept spatial), spatial adapter
  C  B + hard negatives at the same chunk index of the skill
  D  C + perturbed copies of the positive chunk as negatives
  E  D with classifier-free guidance (scale 3) on the skill text when imagining

For every variant: held-out Stage 1 retrieval (among all chunks, same-skill chunks, and the
chunk's own perturbed copies) and the link diagnostics on on-policy states of the run's base
(e_wm / e_real against e_base, cos_grad, local retrieval of a*). All in-process, no servers;
nothing here evaluates a policy.

    .venv/bin/python scripts/representation_study.py --run runs/full1 --out runs/full1/representation.json
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
from services.trainer.residual_app import load_adapters
from w2a_models.base_policy.tiny_vla import TinyVLA
from w2a_models.episodes import find_episode_files
from w2a_models.world_model import WorldModel, WorldModelConfig

_D = Stage1Config(video_encoder="spatial", same_index_negatives=True, perturbed_negatives=8)
VARIANTS = {  # name: (read-out, guidance scale, Stage 1)
    "A_pooled_dit": ("dit_pooled", 1.0, Stage1Config(video_encoder="temporal")),
    "B_latent_map": ("latent_map", 1.0, Stage1Config(video_encoder="spatial")),
    "C_same_index": ("latent_map", 1.0, Stage1Config(video_encoder="spatial", same_index_negatives=True)),
    "D_perturbed": ("latent_map", 1.0, _D),
    "E_guidance3": ("latent_map", 3.0, _D),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--stage1-steps", type=int, default=1000)
    ap.add_argument("--episodes", type=int, default=6, help="base rollouts per task (diagnostics)")
    ap.add_argument("--max-chunks", type=int, default=48)
    ap.add_argument("--perturb-scale", type=float, default=0.3)
    ap.add_argument("--profile", default="full", help="the run's profile when it has no report.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ap_report = args.run / "report.json"
    if ap_report.exists():
        p = json.loads(ap_report.read_text())["profile"]
    else:  # a run that stopped before its report: the profile it was started with
        from dataclasses import asdict

        from services.demo import PROFILES

        p = asdict(PROFILES[args.profile])
    sim_settings = {"camera": p["camera"], "image_size": p["image_size"],
                    "action_repeat": p["action_repeat"], "max_steps": p["max_steps"]}
    base = TinyVLA.load(args.run / "base")
    paths = find_episode_files(args.run / "data")
    config = DiagnoseConfig(episodes=args.episodes, max_chunks=args.max_chunks, perturb_scale=args.perturb_scale)
    on_policy = {t: collect_on_policy(base, SimConfig(task=t, **sim_settings), config,
                                      DIAGNOSE_SEEDS_START + 1000 * i) for i, t in enumerate(p["tasks"])}
    print({t: len(c) for t, c in on_policy.items()}, flush=True)
    models: dict[str, WorldModel] = {}
    chunks: dict[str, object] = {}
    results = {}
    for name in args.variants.split(","):
        features, guidance, s1 = VARIANTS[name]
        started = time.monotonic()
        key = f"{features}-{guidance}"
        if key not in models:
            models[key] = WorldModel.from_pretrained(args.run / "world_model", WorldModelConfig(
                features=features, guidance_scale=guidance))
        if features not in chunks:  # real clips only: the guidance does not change them
            chunks[features] = build_chunks(paths, InProcessEncoder(models[key]), 8, None, progress=False)
        s1 = replace(s1, steps=args.stage1_steps, perturb_scale=args.perturb_scale)
        stage1 = train_stage1(chunks[features], args.run / "study" / name, s1, progress=False)
        adapters = load_adapters(args.run / "study" / name / "checkpoint")
        links = {t: diagnose_chunks(c, models[key], adapters, config) for t, c in on_policy.items()}
        keys = ("v2a_top1_all", "v2a_top1_same_skill", "v2a_top1_local", "chance_top1_all",
                "chance_top1_same_skill", "chance_top1_local", "recon_mse")
        results[name] = {"features": features, "guidance_scale": guidance,
                         "stage1": {k: stage1.get(k) for k in keys}, "links": links,
                         "seconds": round(time.monotonic() - started, 1)}
        print(name, json.dumps(results[name]["stage1"]), flush=True)
        for t, row in links.items():
            print(link_line(t, row), flush=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
