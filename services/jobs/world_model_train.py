"""Train the tiny world model on collected demos (``w2a train-wm``), in two phases.

1. **VAE** (``AutoencoderKLWan``) on clips as long as the WM generates (13 frames), with the
   posterior mode as the code (deterministic: the pipeline encodes the conditioning frame) and a
   tiny KL weight; then the data's per-channel latent mean/std replace Wan 2.1's defaults in the
   VAE config, which is where the pipeline reads them.
2. **DiT** (``CosmosTransformer3DModel``) with the parameterisation the unmodified
   ``Cosmos2VideoToWorldPipeline`` samples with: sigma from the Karras rho=7 schedule over
   [0.002, 80], t = sigma/(1+sigma), input (1-t)*x0 + t*eps, latent frame 0 clean with timestep
   1e-4/(1+1e-4) and condition_mask 1 there, target eps - x0 (the pipeline's
   x0 = (1-t)*x_sigma - t*F), loss on the generated frames only. The skill text (sentence
   embedding of the segment's skill) is dropped with probability ``text_dropout`` so that
   classifier-free guidance can sharpen it at sampling time.

Each clip's text is the skill of the segment its first frame lies in (planner rules + the
segmenter), i.e. the skill Stage 2 will ask the WM to imagine from the robot's current frame.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from w2a_models.episodes import Episode, find_episode_files, read_episode, split_holdout
from w2a_models.plan_rules import decompose
from w2a_models.segmentation import segment_loaded
from w2a_models.skills import align_skills
from w2a_models.world_model.builder import W2A_CONFIG, TinyWMSpec, save_components, tiny_components

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
T_COND = 1e-4 / (1 + 1e-4)


@dataclass(frozen=True)
class WMTrainConfig:
    clip_frames: int = 13
    vae_steps: int = 300
    vae_batch: int = 4
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    latent_clips: int = 1500  # clips encoded once for DiT training
    dit_steps: int = 1500
    dit_batch: int = 32
    dit_lr: float = 3e-4
    text_dropout: float = 0.2
    holdout_fraction: float = 0.2
    seed: int = 0


@dataclass
class ClipSource:
    """Episodes plus, per episode, the skill text of every frame."""

    episodes: list[Episode]
    skills: list[list[str]]  # [episode][frame] -> skill text

    @classmethod
    def from_episodes(cls, episodes: list[Episode]) -> ClipSource:
        skills = []
        for ep in episodes:
            texts = [s.description for s in decompose(ep.instruction, ep.task)]
            seg = segment_loaded(ep)
            per_frame = [ep.instruction] * ep.length
            if align_skills(texts, seg.segments).in_sync:
                for text, segment in zip(texts, seg.segments):
                    per_frame[segment.start : segment.end] = [text] * segment.length
            skills.append(per_frame)
        return cls(episodes, skills)

    def sample(self, rng: np.random.Generator, frames: int) -> tuple[np.ndarray, str, int, int]:
        while True:
            e = int(rng.integers(len(self.episodes)))
            ep = self.episodes[e]
            if ep.length >= frames:
                s = int(rng.integers(ep.length - frames + 1))
                return ep.frames[s : s + frames], self.skills[e][s], e, s


def _to_tensor(clips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(clips).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)


def karras_sigmas(u: torch.Tensor) -> torch.Tensor:
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    return (hi + u * (lo - hi)) ** RHO


@torch.no_grad()
def make_encoder_deterministic(vae, log_std: float = -15.0) -> None:
    """Pin the posterior's log-variance channels to a tiny constant.

    The pipeline *samples* the posterior for its conditioning frame; the decoder was trained on
    the posterior mode, and a tiny KL weight lets the variance drift towards 1, which would make
    the conditioning latent pure noise. With logvar = 2*log_std the sample equals the mode.
    """
    z = vae.config.z_dim
    conv = vae.quant_conv
    conv.weight[z:] = 0.0
    conv.bias[z:] = 2.0 * log_std


def train_vae(vae, source: ClipSource, cfg: WMTrainConfig, rng, progress: bool, log: list) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    vae.train()
    bar = tqdm(range(cfg.vae_steps), desc="train-wm vae", disable=not progress)
    for step in bar:
        clips = np.stack([source.sample(rng, cfg.clip_frames)[0] for _ in range(cfg.vae_batch)])
        x = _to_tensor(clips)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.mode()).sample
        loss = F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 20 == 0 or step + 1 == cfg.vae_steps:
            log.append({"phase": "vae", "step": step + 1, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()


@torch.no_grad()
def encode_clips(vae, clips: np.ndarray, batch: int = 16) -> torch.Tensor:
    out = [vae.encode(_to_tensor(clips[i : i + batch])).latent_dist.mode() for i in range(0, len(clips), batch)]
    return torch.cat(out)


def train_dit(transformer, latents: torch.Tensor, text: torch.Tensor, cfg: WMTrainConfig,
              progress: bool, log: list) -> None:
    """latents: normalised [N, z, T, h, w]; text: [N, 1, text_dim]."""
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.dit_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / cfg.dit_steps)))
    transformer.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    n, _, frames, h, w = latents.shape
    cond = torch.zeros(1, 1, frames, 1, 1)
    cond[:, :, 0] = 1.0
    padding = torch.zeros(1, 1, h * 8, w * 8)
    bar = tqdm(range(cfg.dit_steps), desc="train-wm dit", disable=not progress)
    for step in bar:
        idx = torch.randint(0, n, (cfg.dit_batch,), generator=gen)
        x0 = latents[idx]
        eps = torch.randn(x0.shape, generator=gen)
        sigma = karras_sigmas(torch.rand(cfg.dit_batch, generator=gen)).view(-1, 1, 1, 1, 1)
        t = sigma / (1 + sigma)
        noisy = (1 - t) * x0 + t * eps
        hidden = cond * x0 + (1 - cond) * noisy
        timestep = cond * T_COND + (1 - cond) * t.expand(-1, 1, frames, 1, 1)
        emb = text[idx].clone()
        drop = torch.rand(cfg.dit_batch, generator=gen) < cfg.text_dropout
        emb[drop] = 0.0
        out = transformer(hidden_states=hidden, timestep=timestep, encoder_hidden_states=emb,
                          fps=16, condition_mask=cond.expand(cfg.dit_batch, 1, frames, h, w),
                          padding_mask=padding, return_dict=False)[0]
        target = eps - x0
        loss = F.mse_loss(out[:, :, 1:], target[:, :, 1:])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step + 1 == cfg.dit_steps:
            log.append({"phase": "dit", "step": step + 1, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
    transformer.eval()


def _load_previous(out: Path):
    """Components and metadata of an earlier run in ``out`` (for --resume), or None."""
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler

    if not (out / W2A_CONFIG).exists() or not (out / "transformer").is_dir():
        return None
    meta = json.loads((out / W2A_CONFIG).read_text())
    return (AutoencoderKLWan.from_pretrained(out / "vae"),
            CosmosTransformer3DModel.from_pretrained(out / "transformer"),
            FlowMatchEulerDiscreteScheduler.from_pretrained(out / "scheduler"), meta)


def train_world_model(data: str | Path, out: str | Path, cfg: WMTrainConfig = WMTrainConfig(),
                      spec: TinyWMSpec = TinyWMSpec(), progress: bool = True,
                      resume: bool = False) -> dict:
    """Train (or with ``resume``, continue training the DiT of) the world model in ``out``.

    Resuming keeps the trained VAE and its latent statistics (the DiT's input space) and runs
    ``dit_steps`` more DiT steps from the saved weights with a fresh warm-up/cosine schedule.
    """
    from w2a_models.text import shared_encoder

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    started = time.time()
    paths = find_episode_files(data)
    if len(paths) < 2:
        raise ValueError(f"need at least 2 episodes under {data}, found {len(paths)}")
    train_paths, hold_paths = split_holdout(paths, cfg.holdout_fraction, cfg.seed)
    episodes = [read_episode(p) for p in train_paths]
    size = episodes[0].frames.shape[1]
    if size % 16:
        raise ValueError(f"frames are {size}px; the tiny WM needs a multiple of 16")
    spec = TinyWMSpec(**{**asdict(spec), "image_size": size})
    source = ClipSource.from_episodes(episodes)
    previous = _load_previous(Path(out)) if resume else None
    log: list[dict] = []
    t0 = time.time()
    if previous is None:
        vae, transformer, scheduler = tiny_components(spec, cfg.seed)
        train_vae(vae, source, cfg, rng, progress, log)
        make_encoder_deterministic(vae)
        prior_dit_steps = 0
    else:
        vae, transformer, scheduler, old_meta = previous
        vae.eval()
        prior_dit_steps = int(old_meta.get("dit_steps_total", old_meta.get("train", {}).get("dit_steps", 0)))
    vae_minutes = (time.time() - t0) / 60

    samples = [source.sample(rng, cfg.clip_frames) for _ in range(cfg.latent_clips)]
    clips = np.stack([s[0] for s in samples])
    raw = encode_clips(vae, clips)
    if previous is None:
        mean = raw.mean(dim=(0, 2, 3, 4))
        std = raw.std(dim=(0, 2, 3, 4)) + 1e-4
        vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    else:  # the DiT was trained in this normalisation: keep it
        mean = torch.tensor(vae.config.latents_mean)
        std = torch.tensor(vae.config.latents_std)
    latents = (raw - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    encoder = shared_encoder()
    texts = [s[1] for s in samples]
    unique = sorted(set(texts))
    table = dict(zip(unique, encoder.encode(unique)))
    text = torch.from_numpy(np.stack([table[t] for t in texts]))[:, None, :]

    t0 = time.time()
    train_dit(transformer, latents, text, cfg, progress, log)
    dit_minutes = (time.time() - t0) / 60

    meta = {"spec": asdict(spec), "text": "minilm", "version": str(int(time.time())),
            "train": asdict(cfg), "dit_steps_total": prior_dit_steps + cfg.dit_steps,
            "episodes_train": [p.name for p in train_paths],
            "episodes_heldout": [str(p) for p in hold_paths], "skills": unique}
    save_components(out, vae, transformer, scheduler, meta)
    report = {"out": str(out), "resumed_from_dit_steps": prior_dit_steps,
              "episodes_train": len(train_paths), "episodes_heldout": len(hold_paths),
              "vae_minutes": vae_minutes, "dit_minutes": dit_minutes,
              "total_minutes": (time.time() - started) / 60,
              "final_vae_loss": next((r["loss"] for r in reversed(log) if r["phase"] == "vae"), None),
              "final_dit_loss": log[-1]["loss"], "log": log}
    Path(out, "train_log.json").write_text(json.dumps(report, indent=1))
    return report
