"""Link-by-link diagnostics of the World2Act chain on on-policy states (``w2a diagnose links``).

Stage 2 can only improve the base where the chain carries the right signal, link by link:

1. the base is wrong (``e_base`` = distance of the base chunk to the expert's chunk a* from the
   same state — a cloned simulator runs the scripted expert);
2. the world model's imagined future, read through the Stage 1 adapters, points nearer a* than
   the base does (``e_wm`` = distance of decode(B_v(imagined latents)) to a*); the same with the
   *real* future (``e_real``, the perfect world model) and with a copy of the first frame
   (``e_copy``, a world model that imagines nothing);
3. the Stage 2 gradient at the base action points toward a* (``cos_grad`` = mean cosine of
   -dL/da with a* - a_base, batches of on-policy chunks as in the trainer);
4. the world model's features are nearer the real future than trivial predictions are (MSE
   against copy-first-frame and the mean real feature);
5. Stage 1 ranks the expert chunk first among local candidates: a* against perturbed versions
   of it at the residual's scale and the base chunk, scored by the adapters' similarity to the
   real (or imagined) future.

States come from base-only rollouts on seeds of their own (inside the rollout range, used by
nothing else), run in-process: diagnostics measure, they never train or evaluate anything. The
simulator internals (the expert, the real future) are read here only as the yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from services.robot_sim.seeds import ROLLOUT_SEEDS_START

DIAGNOSE_SEEDS_START = ROLLOUT_SEEDS_START + 85_000


@dataclass(frozen=True)
class DiagnoseConfig:
    episodes: int = 6  # base rollouts per task
    max_chunks: int = 64  # per task
    candidates: int = 8  # perturbed expert chunks competing with a* in the retrieval check
    perturb_scale: float = 0.3  # of those perturbations (the residual's order of magnitude)
    batch: int = 16  # on-policy chunks per Stage 2 batch for the gradient check
    temperature: float = 0.07
    wm_seed: int = 0


@dataclass
class OnPolicyChunk:
    task: str
    frame: np.ndarray  # uint8 [H, W, 3]
    skill: str
    features: np.ndarray  # [F] the base's observation features
    base: np.ndarray  # [M, A]
    expert: np.ndarray  # [M, A] a* from the same state
    future: np.ndarray  # uint8 [M+1, H, W, 3] the expert's future, rendered


def collect_on_policy(base, sim_config, config: DiagnoseConfig, seed_start: int) -> list[OnPolicyChunk]:
    """Base-only rollouts; at every chunk start the expert's chunk and future from that state."""
    from services.robot_sim.collect import instruction_for
    from services.robot_sim.metaworld_env import MetaWorldSim
    from services.robot_sim.robot import ExpertTeacher, SkillTracker
    from w2a_models.base_policy import ObservationBatch

    camera = base.spec.cameras[0].name
    chunk_size = base.spec.chunk_size
    instruction = instruction_for(sim_config.task)
    teacher = ExpertTeacher(sim_config, chunk_size, future=True)
    out: list[OnPolicyChunk] = []
    try:
        with MetaWorldSim(sim_config) as sim:
            for seed in range(seed_start, seed_start + config.episodes):
                sim.reset(seed)
                teacher.begin(seed)
                tracker = SkillTracker(instruction, sim_config.task, sim_config.action_repeat)
                steps, done = 0, False
                while not done and steps < sim_config.max_steps and len(out) < config.max_chunks:
                    frame = sim.render()
                    pred = base.predict(ObservationBatch({camera: frame[None]}, sim.state[None], [instruction]))
                    expert, future = teacher.expert_chunk(sim)
                    out.append(OnPolicyChunk(sim_config.task, frame, tracker.current(), pred.features[0],
                                             pred.actions[0], expert, np.stack(future)))
                    for action in pred.actions[0]:
                        tracker.observe(sim.state, float(action[3]))
                        step = sim.step(np.clip(action, -1.0, 1.0))
                        steps += 1
                        done = step.success or step.truncated or steps >= sim_config.max_steps
                        if done:
                            break
    finally:
        teacher.close()
    return out


def _rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).reshape(len(a), -1).mean(axis=1))


@torch.no_grad()
def _decode(adapters, latents: np.ndarray) -> np.ndarray:
    """decode(B_v(latents)): the action chunk the adapters read from a video."""
    return adapters.decoder(adapters.video(torch.from_numpy(latents))).numpy()


def _gradient_cosines(adapters, base: np.ndarray, expert: np.ndarray, latents: np.ndarray,
                      batch: int, temperature: float) -> np.ndarray:
    """Per chunk: cos(-dL/da at a = a_base, a* - clip(a_base)) for the Stage 2 InfoNCE."""
    from w2a_models.losses import info_nce

    cosines = []
    for start in range(0, len(base) - 1, batch):
        sl = slice(start, min(start + batch, len(base)))
        if sl.stop - sl.start < 2:
            break
        actions = torch.from_numpy(base[sl]).clone().requires_grad_(True)
        with torch.no_grad():
            z_video = adapters.video(torch.from_numpy(latents[sl]))
        loss = info_nce(z_video, adapters.action(actions), temperature)
        (grad,) = torch.autograd.grad(loss, actions)
        want = torch.from_numpy(expert[sl] - np.clip(base[sl], -1, 1))
        cosines += torch.nn.functional.cosine_similarity((-grad).flatten(1), want.flatten(1), dim=1).tolist()
    return np.asarray(cosines)


@torch.no_grad()
def _retrieval(adapters, latents: np.ndarray, expert: np.ndarray, base: np.ndarray,
               config: DiagnoseConfig, rng: np.random.Generator) -> float:
    """Top-1 rate of a* among [a*, a* + noise (K), a_base], scored by cos(B_v(video), B_a(cand))."""
    k = config.candidates
    noise = rng.normal(0.0, config.perturb_scale, (len(expert), k, *expert.shape[1:])).astype(np.float32)
    candidates = np.concatenate([expert[:, None], expert[:, None] + noise, base[:, None]], axis=1)
    z_video = torch.nn.functional.normalize(adapters.video(torch.from_numpy(latents)), dim=-1)
    flat = torch.from_numpy(candidates.reshape(-1, *expert.shape[1:]).astype(np.float32))
    z_action = torch.nn.functional.normalize(adapters.action(flat), dim=-1).view(len(expert), k + 2, -1)
    scores = torch.einsum("be,bke->bk", z_video, z_action)
    return float((scores.argmax(dim=1) == 0).float().mean())


def diagnose_chunks(chunks: list[OnPolicyChunk], world_model, adapters,
                    config: DiagnoseConfig = DiagnoseConfig()) -> dict:
    """All link figures for one set of on-policy chunks (one task)."""
    if len(chunks) < 2:
        raise ValueError(f"need at least 2 on-policy chunks, got {len(chunks)}")
    adapters = adapters.eval()
    m = chunks[0].base.shape[0]
    base = np.stack([c.base for c in chunks]).astype(np.float32)
    expert = np.stack([c.expert for c in chunks]).astype(np.float32)
    real = world_model.encode_batch(np.stack([c.future for c in chunks]))[:, 1:]
    copy = world_model.encode_batch(np.stack([np.repeat(c.frame[None], m + 1, 0) for c in chunks]))[:, 1:]
    imagined = np.stack([world_model.generate(c.frame, c.skill, m + 1, config.wm_seed).features[1:]
                         for c in chunks])
    real, copy, imagined = (x.astype(np.float32) for x in (real, copy, imagined))
    mean = np.broadcast_to(real.mean(axis=0, keepdims=True), real.shape)
    rng = np.random.default_rng(0)
    e_base = _rms(np.clip(base, -1, 1), expert)
    e = {name: _rms(np.clip(_decode(adapters, lat), -1, 1), expert)
         for name, lat in (("wm", imagined), ("real", real), ("copy", copy))}
    cos = {name: _gradient_cosines(adapters, base, expert, lat, config.batch, config.temperature)
           for name, lat in (("wm", imagined), ("real", real))}
    mse = lambda a: float(np.mean((a - real) ** 2))  # noqa: E731
    return {
        "chunks": len(chunks),
        "e_base": float(e_base.mean()), "e_wm": float(e["wm"].mean()), "e_real": float(e["real"].mean()),
        "e_copy": float(e["copy"].mean()),
        "frac_e_wm_below_e_base": float(np.mean(e["wm"] < e_base)),
        "frac_e_real_below_e_base": float(np.mean(e["real"] < e_base)),
        "cos_grad_wm": float(cos["wm"].mean()) if cos["wm"].size else None,
        "cos_grad_real": float(cos["real"].mean()) if cos["real"].size else None,
        "wm_feature_mse": mse(imagined), "copy_feature_mse": mse(copy), "mean_feature_mse": mse(mean),
        "retrieval_top1_real": _retrieval(adapters, real, expert, base, config, rng),
        "retrieval_top1_wm": _retrieval(adapters, imagined, expert, base, config, rng),
        "retrieval_chance": 1.0 / (config.candidates + 2),
        "correction_abs_median": [float(v) for v in np.median(np.abs(expert - np.clip(base, -1, 1)),
                                                             axis=(0, 1))],
    }


def link_line(task: str, row: dict) -> str:
    """One line of a task's link figures (``diagnose_chunks`` output), for progress logs."""
    return (f"  {task}: e_base {row['e_base']:.3f} e_wm {row['e_wm']:.3f} e_real {row['e_real']:.3f} "
            f"e_copy {row['e_copy']:.3f} cos_wm {row['cos_grad_wm']:.3f} cos_real {row['cos_grad_real']:.3f} "
            f"ret_real {row['retrieval_top1_real']:.2f} ret_wm {row['retrieval_top1_wm']:.2f}")


def diagnose_run(run_dir, tasks: list[str], sim_settings: dict, config: DiagnoseConfig = DiagnoseConfig(),
                 progress=print, features: str | None = None, adapters_dir: str = "stage1_chunk") -> dict:
    """Load a demo run's base, world model and adapters; diagnose each task.

    ``features``: the world model's read-out (default: the one the run's report names)."""
    import json
    from pathlib import Path

    from services.robot_sim.metaworld_env import SimConfig
    from services.trainer.residual_app import load_adapters
    from w2a_models.base_policy.tiny_vla import TinyVLA
    from w2a_models.world_model import WorldModel, WorldModelConfig

    run_dir = Path(run_dir)
    if features is None:
        report = run_dir / "report.json"
        profile = json.loads(report.read_text()).get("profile", {}) if report.exists() else {}
        features = profile.get("wm_features", "dit_pooled")
    base = TinyVLA.load(run_dir / "base")
    world_model = WorldModel.from_pretrained(run_dir / "world_model", WorldModelConfig(features=features))
    adapters = load_adapters(run_dir / adapters_dir / "checkpoint")
    out = {"run": str(run_dir), "features": features, "adapters": adapters_dir,
           "config": config.__dict__, "tasks": {}}
    for t_i, task in enumerate(tasks):
        sim = SimConfig(task=task, **sim_settings)
        chunks = collect_on_policy(base, sim, config, DIAGNOSE_SEEDS_START + 1000 * t_i)
        out["tasks"][task] = diagnose_chunks(chunks, world_model, adapters, config)
        if progress:
            progress(f"{task}: {out['tasks'][task]}")
    return out
