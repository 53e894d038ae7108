"""Behaviour cloning of the built-in TinyVLA base policy on collected demos (``w2a train-base``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from w2a_models.base_policy.tiny_vla import TinyVLA, TinyVLAConfig, TinyVLANet
from w2a_models.episodes import Episode, find_episode_files, read_episode, split_holdout
from w2a_models.text import shared_encoder


@dataclass(frozen=True)
class BCConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    holdout_fraction: float = 0.2
    seed: int = 0
    eval_every: int = 200
    state_std_floor: float = 0.0  # see TinyVLANet.set_normalisation; LIBERO needs ~0.05
    image_shift: int = 0  # random-shift augmentation: up to this many pixels each way (0: off)
    state_noise: float = 0.0  # Gaussian noise on the normalised state while training (0: off)
    # "expert": a perturbed demo's commanded actions (Episode.expert_actions, DART's labels) where
    # the demo has them; "executed": the actions that ran
    labels: str = "executed"

    def __post_init__(self) -> None:
        if self.labels not in ("executed", "expert"):
            raise ValueError(f"labels must be 'executed' or 'expert', got {self.labels!r}")


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """[B,H,W,C] uint8 -> the same images shifted by up to ``pad`` pixels (edge pixels repeat).

    The few demos a base clones show each scene from one camera pose; a shifted copy keeps the
    CNN from keying on exact pixel positions that a rollout's first drift changes."""
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(b, x.shape[1], h, x.shape[3])
    x = torch.gather(x, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(b, x.shape[1], h, w)
    x = torch.gather(x, 3, cols)
    return x.permute(0, 2, 3, 1).to(images.dtype)


@dataclass
class BCDataset:
    """Every step t of every episode: (frame t, instruction, state t) -> actions t..t+M-1.

    Chunks running past the episode end repeat the last action (the robot holds still).
    """

    frames: np.ndarray
    text: np.ndarray
    state: np.ndarray
    targets: np.ndarray

    @classmethod
    def from_episodes(cls, episodes: list[Episode], chunk_size: int, encoder, labels: str = "executed") -> BCDataset:
        frames, text, state, targets = [], [], [], []
        embeddings = encoder.encode(sorted({e.instruction for e in episodes}))
        by_text = dict(zip(sorted({e.instruction for e in episodes}), embeddings))
        for ep in episodes:
            actions = ep.expert_actions if labels == "expert" and ep.expert_actions is not None else ep.actions
            padded = np.concatenate([actions, np.repeat(actions[-1:], chunk_size, 0)])
            idx = np.arange(ep.length)[:, None] + np.arange(chunk_size)[None, :]
            frames.append(ep.frames)
            state.append(ep.state)
            targets.append(padded[idx])
            text.append(np.repeat(by_text[ep.instruction][None], ep.length, 0))
        return cls(np.concatenate(frames), np.concatenate(text), np.concatenate(state),
                   np.concatenate(targets).astype(np.float32))

    def __len__(self) -> int:
        return len(self.frames)

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(self.frames[index]), torch.from_numpy(self.text[index]),
                torch.from_numpy(self.state[index]), torch.from_numpy(self.targets[index]))


@torch.no_grad()
def _eval_loss(net: TinyVLANet, data: BCDataset, batch_size: int = 256) -> float:
    net.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        images, text, state, target = data.batch(index)
        pred, _ = net(images, text, state)
        target_n = (target - net.action_mean) / net.action_std
        total += torch.nn.functional.mse_loss(pred, target_n, reduction="sum").item()
        count += target.numel()
    net.train()
    return total / max(count, 1)


def train_base(data_dir: str | Path, out: str | Path, model: TinyVLAConfig = TinyVLAConfig(),
               config: BCConfig = BCConfig(), progress: bool = True) -> dict:
    """Train TinyVLA by BC; returns and saves a JSON report next to the checkpoint."""
    torch.manual_seed(config.seed)
    paths = find_episode_files(data_dir)
    if not paths:
        raise ValueError(f"no episodes under {data_dir}")
    train_paths, hold_paths = split_holdout(paths, config.holdout_fraction, config.seed)
    encoder = shared_encoder()
    train_eps = [read_episode(p) for p in train_paths]
    size, camera = train_eps[0].frames.shape[1], train_eps[0].camera
    if {e.camera for e in train_eps} != {camera}:
        raise ValueError(f"episodes under {data_dir} come from several cameras "
                         f"{sorted({e.camera for e in train_eps})}; train one base per camera")
    shapes = {(e.state.shape[1], e.actions.shape[1]) for e in train_eps}
    if len(shapes) != 1:
        raise ValueError(f"episodes under {data_dir} disagree on (state, action) sizes {sorted(shapes)}")
    (state_dim, action_dim), = shapes
    seen = {"image_size": size, "camera": camera, "state_dim": state_dim, "action_dim": action_dim}
    if any(getattr(model, k) != v for k, v in seen.items()):  # the base sees and acts as the demos did
        model = TinyVLAConfig(**{**asdict(model), **seen})
    train = BCDataset.from_episodes(train_eps, model.chunk_size, encoder, config.labels)
    hold = BCDataset.from_episodes([read_episode(p) for p in hold_paths], model.chunk_size,
                                   encoder, config.labels) if hold_paths else None
    net = TinyVLANet(model)
    net.set_normalisation(train.state, train.targets.reshape(-1, model.action_dim), config.state_std_floor)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    rng = np.random.default_rng(config.seed)
    augment = torch.Generator().manual_seed(config.seed)
    history = []
    bar = tqdm(range(config.steps), desc="train-base", disable=not progress)
    for step in bar:
        index = rng.integers(0, len(train), config.batch_size)
        images, text, state, target = train.batch(index)
        images = random_shift(images, config.image_shift, augment)
        if config.state_noise > 0:  # in normalised units: the net divides by state_std
            state = state + config.state_noise * net.state_std * torch.randn(state.shape, generator=augment)
        pred, _ = net(images, text, state)
        loss = torch.nn.functional.mse_loss(pred, (target - net.action_mean) / net.action_std)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            record = {"step": step + 1, "train_loss": float(loss.item())}
            if hold is not None:
                record["heldout_loss"] = _eval_loss(net, hold)
            history.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "step"})
    policy = TinyVLA(net, encoder)
    policy.save(out)
    report = {
        "episodes_train": len(train_paths), "episodes_heldout": len(hold_paths),
        "samples_train": len(train), "final_train_loss": history[-1]["train_loss"],
        "final_heldout_loss": history[-1].get("heldout_loss"), "history": history,
        "config": asdict(config), "model": asdict(model),
    }
    Path(out, "train_report.json").write_text(json.dumps(report, indent=1))
    return report
