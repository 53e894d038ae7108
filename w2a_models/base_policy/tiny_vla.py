"""TinyVLA: a small vision-language-action model used as the built-in frozen base policy.

image (CNN) + instruction (frozen MiniLM sentence embedding, projected) + state -> action chunk
of M steps. Trained here by behaviour cloning on simulator demos (``w2a train-base``); in a real
deployment the base is a big VLA behind the same ``BasePolicy`` protocol. State and actions are
normalised with statistics stored in the checkpoint as buffers, so a checkpoint is self-contained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from w2a_models.base_policy import BaseOutput, CameraSpec, ObservationBatch, PolicySpec
from w2a_models.checkpoints import load_checkpoint, save_checkpoint
from w2a_models.text import TEXT_DIM


@dataclass(frozen=True)
class TinyVLAConfig:
    camera: str = "corner"
    image_size: int = 64
    state_dim: int = 18
    action_dim: int = 4
    chunk_size: int = 8
    image_features: int = 64
    text_features: int = 32
    hidden: int = 256

    @property
    def feature_dim(self) -> int:
        return self.image_features + self.text_features + self.state_dim


class TinyVLANet(nn.Module):
    def __init__(self, config: TinyVLAConfig) -> None:
        super().__init__()
        self.config = config
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, config.image_features), nn.GELU(),
        )
        self.text = nn.Sequential(nn.Linear(TEXT_DIM, config.text_features), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(config.feature_dim, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.chunk_size * config.action_dim),
        )
        self.register_buffer("state_mean", torch.zeros(config.state_dim))
        self.register_buffer("state_std", torch.ones(config.state_dim))
        self.register_buffer("action_mean", torch.zeros(config.action_dim))
        self.register_buffer("action_std", torch.ones(config.action_dim))

    def set_normalisation(self, states: np.ndarray, actions: np.ndarray, state_std_floor: float = 0.0) -> None:
        """``state_std_floor``: the smallest scale a state dimension is divided by. A dimension the
        demos barely vary (LIBERO's hand orientation: the experts never rotate) otherwise turns a
        1-2 cm or 0.02 quaternion drift into many standard deviations, and the cloned policy leaves
        its data one chunk into a rollout."""
        self.state_mean.copy_(torch.as_tensor(states.mean(0)))
        self.state_std.copy_(torch.as_tensor(np.maximum(states.std(0), state_std_floor) + 1e-3, dtype=torch.float32))
        self.action_mean.copy_(torch.as_tensor(actions.mean(0)))
        self.action_std.copy_(torch.as_tensor(actions.std(0) + 1e-3))

    def forward(self, images: torch.Tensor, text: torch.Tensor, state: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """images uint8/float [B,H,W,3], text [B,384], state [B,S] -> (normalised actions, features)."""
        x = images.float().permute(0, 3, 1, 2) / 127.5 - 1.0
        state_n = (state - self.state_mean) / self.state_std
        features = torch.cat([self.cnn(x), self.text(text), state_n], dim=1)
        out = self.head(features).view(-1, self.config.chunk_size, self.config.action_dim)
        return out, features

    def denormalise(self, actions_n: torch.Tensor) -> torch.Tensor:
        return actions_n * self.action_std + self.action_mean


class TinyVLA:
    """``BasePolicy`` implementation around ``TinyVLANet`` and the sentence encoder."""

    def __init__(self, net: TinyVLANet, encoder=None, name: str = "tiny-vla") -> None:
        from w2a_models.text import shared_encoder

        self.net = net.eval()
        self.encoder = encoder or shared_encoder()
        cfg = net.config
        self.spec = PolicySpec(
            name=name, action_dim=cfg.action_dim, chunk_size=cfg.chunk_size,
            state_dim=cfg.state_dim,
            cameras=(CameraSpec(cfg.camera, cfg.image_size, cfg.image_size),),
            feature_dim=cfg.feature_dim,
        )

    @torch.no_grad()
    def predict(self, batch: ObservationBatch) -> BaseOutput:
        cfg = self.net.config
        images = torch.from_numpy(np.ascontiguousarray(batch.images[cfg.camera]))
        text = torch.from_numpy(self.encoder.encode(list(batch.instructions)))
        state = torch.from_numpy(np.asarray(batch.state, dtype=np.float32))
        actions_n, features = self.net(images, text, state)
        actions = self.net.denormalise(actions_n)
        return BaseOutput(actions.numpy().astype(np.float32), features.numpy().astype(np.float32))

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, directory: str | Path, version: str = "1") -> None:
        save_checkpoint(directory, self.net.state_dict(), version=version,
                        config={"kind": "tiny-vla", **asdict(self.net.config)})

    @classmethod
    def load(cls, directory: str | Path, encoder=None) -> TinyVLA:
        tensors, manifest = load_checkpoint(directory)
        config = {k: v for k, v in manifest.config.items() if k != "kind"}
        net = TinyVLANet(TinyVLAConfig(**config))
        net.load_state_dict(tensors, strict=True)
        return cls(net, encoder)
