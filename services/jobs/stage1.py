"""Stage 1: align world-model chunk latents and action chunks (``w2a train-adapters``).

VideoAdapter + ActionAdapter + decoder are trained with bidirectional InfoNCE (tau 0.07) plus
action reconstruction. Each batch row gets K hard negatives: chunks of *other demos of the same
skill*; the rest of the batch are the easy negatives. ``alignment="trajectory"`` is the paper's
ablation: one pooled pair per demo (mean over its chunks). Both are evaluated the same way, on
chunk-level retrieval among held-out demos, so the figures compare.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from services.common.distributed import Ranks, gather_rows
from services.jobs.stage1_data import ChunkSet
from w2a_models.adapters import AdapterConfig, Stage1Adapters
from w2a_models.checkpoints import load_checkpoint, save_module
from w2a_models.losses import Stage1LossConfig, stage1_loss


@dataclass(frozen=True)
class Stage1Config:
    alignment: str = "chunk"  # or "trajectory"
    steps: int = 1500
    batch_size: int = 64
    hard_negatives: int = 4
    lr: float = 1e-3
    temperature: float = 0.07
    reconstruction_weight: float = 1.0
    holdout_fraction: float = 0.2
    seed: int = 0
    video_encoder: str = "temporal"  # "spatial" for the world model's latent_map features
    latent_channels: int = 16
    # Negatives that make the action space locally meaningful (issue 17): hard negatives from
    # other demos of the same skill *at the nearest chunk index* (same phase of the skill), and
    # perturbed copies of the positive chunk at the residual's scale, ranked against it for
    # the video (an extra InfoNCE term with weight ``local_weight``).
    same_index_negatives: bool = False
    perturbed_negatives: int = 0
    perturb_scale: float = 0.3
    local_weight: float = 1.0


def split_by_demo(chunks: ChunkSet, fraction: float, seed: int) -> tuple[ChunkSet, ChunkSet]:
    demos = np.unique(chunks.demo)
    rng = np.random.default_rng(seed)
    held = rng.choice(demos, size=max(1, round(len(demos) * fraction)), replace=False)
    mask = np.isin(chunks.demo, held)
    return chunks.subset(~mask), chunks.subset(mask)


def trajectory_pairs(chunks: ChunkSet) -> ChunkSet:
    """One pooled (video, action) pair per demo; its 'skill' is the demo's task."""
    demos = np.unique(chunks.demo)
    task_of = {}
    lat, act, skill = [], [], []
    for d in demos:
        m = chunks.demo == d
        lat.append(chunks.latents[m].mean(0))
        act.append(chunks.actions[m].mean(0))
        task = chunks.skill_names[chunks.skill[m][0]].split(":")[0]
        skill.append(task_of.setdefault(task, len(task_of)))
    return ChunkSet(np.stack(lat), np.stack(act), np.asarray(skill), demos, list(task_of), chunks.demo_names)


def chunk_positions(skill: np.ndarray, demo: np.ndarray) -> np.ndarray:
    """Index of each chunk within its (demo, skill) run, in order: 0 = the skill's first chunk."""
    position = np.zeros(len(skill), dtype=np.int64)
    seen: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(demo.tolist(), skill.tolist())):
        position[i] = seen.get(key, 0)
        seen[key] = position[i] + 1
    return position


def hard_negative_index(skill: np.ndarray, demo: np.ndarray, rows: np.ndarray, k: int,
                        rng: np.random.Generator, position: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """For each row: k indices of chunks with the same skill from *other* demos (mask pads).

    With ``position`` (``chunk_positions``), the k whose index within the skill is nearest the
    row's: the same phase of the same skill, where only the dynamics tell the chunks apart."""
    index = np.zeros((len(rows), k), dtype=np.int64)
    mask = np.zeros((len(rows), k), dtype=bool)
    for i, r in enumerate(rows):
        pool = np.flatnonzero((skill == skill[r]) & (demo != demo[r]))
        if len(pool) == 0:
            continue
        if position is not None:
            gap = np.abs(position[pool] - position[r]) + rng.random(len(pool)) * 0.5  # ties at random
            chosen = pool[np.argsort(gap)[:k]]
        else:
            chosen = rng.choice(pool, size=min(k, len(pool)), replace=False)
        index[i, : len(chosen)] = chosen
        mask[i, : len(chosen)] = True
    return index, mask


def local_scores(model: Stage1Adapters, z_video: torch.Tensor, z_action: torch.Tensor,
                 actions: torch.Tensor, k: int, scale: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, 1 + k] cosines of each video with its own chunk (column 0) and k noisy copies of it."""
    noisy = actions[:, None] + scale * torch.randn((len(actions), k, *tuple(actions.shape[1:])),
                                                   generator=generator)
    return local_scores_from(model, z_video, z_action, noisy)


def perturbed_negative_loss(model: Stage1Adapters, z_video: torch.Tensor, z_action: torch.Tensor,
                            actions: torch.Tensor, k: int, scale: float, temperature: float) -> torch.Tensor:
    """InfoNCE of each video against its own chunk and k noisy copies of it (no batch rows)."""
    logits = local_scores(model, z_video, z_action, actions, k, scale) / temperature
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(actions), dtype=torch.long))


@torch.no_grad()
def retrieval(model: Stage1Adapters, chunks: ChunkSet) -> dict:
    lat, act = torch.from_numpy(chunks.latents), torch.from_numpy(chunks.actions)
    zv = torch.nn.functional.normalize(model.video(lat), dim=-1)
    za = torch.nn.functional.normalize(model.action(act), dim=-1)
    recon = float(torch.mean((model.decoder(model.action(act)) - act) ** 2))
    sim = (zv @ za.T).numpy()
    same = chunks.skill[:, None] == chunks.skill[None, :]

    def ranks(s: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        s = np.where(allowed, s, -np.inf)
        diag = np.diag(s)
        return (s > diag[:, None]).sum(axis=1)  # 0 = the true partner ranks first

    out = {}
    for name, matrix in (("v2a", sim), ("a2v", sim.T)):
        r_all, r_same = ranks(matrix, np.ones_like(same)), ranks(matrix, same)
        out[f"{name}_top1_all"] = float(np.mean(r_all < 1))
        out[f"{name}_top5_all"] = float(np.mean(r_all < 5))
        out[f"{name}_top1_same_skill"] = float(np.mean(r_same < 1))
        out[f"{name}_top5_same_skill"] = float(np.mean(r_same < 5))
    # local: the true chunk against perturbed versions of itself (the residual's neighbourhood)
    k = 8
    local = local_scores(model, zv, za, act, k, 0.3, torch.Generator().manual_seed(0))
    out["v2a_top1_local"] = float((local.argmax(dim=1) == 0).float().mean())
    out["chance_top1_local"] = 1.0 / (k + 1)
    out["chance_top1_all"] = 1.0 / len(chunks)
    out["chance_top1_same_skill"] = float(np.mean(1.0 / same.sum(axis=1)))
    out["recon_mse"] = recon
    out["heldout_chunks"] = len(chunks)
    return out


class Stage1Objective(torch.nn.Module):
    """The Stage 1 loss of one global batch, computed from this rank's rows: every per-row output
    (embeddings, hard-negative embeddings, reconstructions, perturbed-negative scores) is gathered
    from all ranks, so the in-batch negatives are the whole global batch and the loss is the one a
    single process computes (``DistributedDataParallel`` wraps this module and averages the
    gradients; ``gather_rows`` hands each rank the gradient of its own rows)."""

    def __init__(self, model: Stage1Adapters, config: Stage1Config, ranks: Ranks) -> None:
        super().__init__()
        self.model, self.config, self.ranks = model, config, ranks
        self.loss_config = Stage1LossConfig(config.temperature, 1.0, config.reconstruction_weight)

    def forward(self, latents, actions, hard_latents, hard_actions, hard_mask, noise):
        """Local rows: latents [b, L, D], actions [b, M, A], hard_* [b, k, ...], noise [b, p, M, A]."""
        m, cfg, gather = self.model, self.config, lambda t: gather_rows(t, self.ranks)
        b, k = len(latents), cfg.hard_negatives
        zv, za = m.video(latents), m.action(actions)
        hv = m.video(hard_latents.flatten(0, 1)).view(b, k, -1)
        ha = m.action(hard_actions.flatten(0, 1)).view(b, k, -1)
        loss = stage1_loss(gather(zv), gather(za), gather(m.decoder(za)), gather(actions), self.loss_config,
                           gather(ha), gather(hv), gather(hard_mask.to(torch.uint8)).bool())
        total = loss.total
        if cfg.perturbed_negatives:
            scores = gather(local_scores_from(m, zv, za, actions[:, None] + cfg.perturb_scale * noise))
            total = total + cfg.local_weight * torch.nn.functional.cross_entropy(
                scores / cfg.temperature, torch.zeros(len(scores), dtype=torch.long))
        return total, loss.contrastive.detach(), loss.reconstruction.detach(), loss.total.detach()


def local_scores_from(model: Stage1Adapters, z_video: torch.Tensor, z_action: torch.Tensor,
                      noisy: torch.Tensor) -> torch.Tensor:
    """[B, 1 + k] cosines of each video with its own chunk and the k given noisy copies [B, k, M, A]."""
    zn = model.action(noisy.flatten(0, 1)).view(len(noisy), noisy.shape[1], -1)
    v = torch.nn.functional.normalize(z_video, dim=-1)
    pos = (v * torch.nn.functional.normalize(z_action, dim=-1)).sum(-1, keepdim=True)
    neg = torch.einsum("be,bke->bk", v, torch.nn.functional.normalize(zn, dim=-1))
    return torch.cat([pos, neg], dim=1)


def train_stage1(chunks: ChunkSet, out: str | Path, config: Stage1Config = Stage1Config(),
                 progress: bool = True, resume: bool = False, ranks: Ranks = Ranks()) -> dict:
    """Train the adapters (one process, or one rank of a ``torchrun`` job: each rank computes its
    shard of every global batch; hard negatives are drawn from the *whole* training set, with the
    same generator on every rank, so a rank's rows get the negatives a single process would give
    them; rank 0 alone writes the checkpoint, evaluation and charts)."""
    from services.jobs.plots import plot_curves

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    out = Path(out)
    if config.alignment not in ("chunk", "trajectory"):
        raise ValueError("alignment must be 'chunk' or 'trajectory'")
    train, held = split_by_demo(chunks, config.holdout_fraction, config.seed)
    pairs = trajectory_pairs(train) if config.alignment == "trajectory" else train
    adapter_cfg = AdapterConfig(token_dim=chunks.latents.shape[-1], action_dim=chunks.actions.shape[-1],
                                chunk_size=chunks.actions.shape[1], video_encoder=config.video_encoder,
                                latent_channels=config.latent_channels)
    model = Stage1Adapters(adapter_cfg)
    start_step = 0
    ckpt_dir = out / "checkpoint"
    if resume and (ckpt_dir / "manifest.json").exists():
        tensors, manifest = load_checkpoint(ckpt_dir)
        model.load_state_dict(tensors)
        start_step = int(manifest.config.get("step", 0))
    objective = Stage1Objective(model, config, ranks)
    if ranks.distributed:  # one replica per rank; gradients averaged over the global batch
        objective = torch.nn.parallel.DistributedDataParallel(objective)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    lat, act = torch.from_numpy(pairs.latents), torch.from_numpy(pairs.actions)
    batch = min(config.batch_size, len(pairs))
    batch -= batch % ranks.world  # the global batch splits evenly over the ranks
    position = chunk_positions(pairs.skill, pairs.demo) if config.same_index_negatives else None
    history = []
    bar = tqdm(range(start_step, config.steps), desc=f"stage1 {config.alignment}",
               disable=not progress or not ranks.main)
    k, p = config.hard_negatives, config.perturbed_negatives
    started = time.perf_counter()
    for step in bar:
        rows = rng.choice(len(pairs), size=batch, replace=False)  # the same draw on every rank
        hard, mask = hard_negative_index(pairs.skill, pairs.demo, rows, k, rng, position)
        noise = torch.randn((batch, p, *act.shape[1:])) if p else torch.zeros((batch, 0, *act.shape[1:]))
        mine = ranks.shard(np.arange(batch), batch)
        r, h = rows[mine], hard[mine]
        total, contrastive, reconstruction, stage1_total = objective(
            lat[r], act[r], lat[h.reshape(-1)].view(len(r), k, *lat.shape[1:]),
            act[h.reshape(-1)].view(len(r), k, *act.shape[1:]), torch.from_numpy(mask[mine]), noise[mine])
        opt.zero_grad()
        (total * ranks.world).backward()  # see distributed.gather_rows: the averaged gradient is dL/dθ
        opt.step()
        if step % 25 == 0 or step + 1 == config.steps:
            history.append({"step": step + 1, "total": stage1_total.item(), "contrastive": contrastive.item(),
                            "reconstruction": reconstruction.item()})
            bar.set_postfix(loss=f"{stage1_total.item():.3f}")
    train_seconds = time.perf_counter() - started  # the optimisation steps alone (w2a bench scale)
    model.eval()
    if not ranks.main:
        return {"alignment": config.alignment, "rank": ranks.rank, "history": history,
                "train_seconds": train_seconds}
    metrics = retrieval(model, held)
    result = {"alignment": config.alignment, **metrics, "train_pairs": len(pairs),
              "skills": len(chunks.skill_names), "config": asdict(config), "train_seconds": train_seconds}
    save_module(ckpt_dir, model, version=str(config.steps),
                config={"adapter": asdict(adapter_cfg), "step": config.steps, "alignment": config.alignment})
    (out / "stage1_eval.json").write_text(json.dumps(result, indent=1))
    (out / "stage1_history.json").write_text(json.dumps(history))
    if history:
        plot_curves(out / "stage1_loss.png",
                    {k: [(h["step"], h[k]) for h in history] for k in ("total", "contrastive", "reconstruction")},
                    f"Stage 1 ({config.alignment}-wise)")
    return result
