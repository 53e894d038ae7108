"""Stage 1 adapters: map world-model video latents and action chunks into one shared space.

Shapes follow the paper: the video adapter is a 3-layer 1D temporal CNN over DiT token features
(4096-d for the real Cosmos-Predict2 model), the action adapter a 2-layer MLP (hidden 512) over
the M concatenated actions of a chunk; both end in a 256-d embedding. The action decoder maps an
action embedding back to the chunk for the reconstruction loss, which keeps the action space from
collapsing onto whatever is easiest to contrast.

``video_encoder="spatial"`` is for spatial features (the world model's ``latent_map``: each latent
frame a z x h x w map, flattened): two stride-2 convolutions with GroupNorm read each frame as
an image before the temporal CNN, and the frame is flattened, not pooled, so the adapter knows
where things are — the change of position is what an action chunk causes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AdapterConfig:
    """Sizes of the Stage 1 adapters."""

    token_dim: int = 4096  # width of the tapped DiT hidden states (per latent frame)
    embed_dim: int = 256  # shared video/action space
    video_hidden: int = 512  # channels of the temporal CNN
    video_kernel: int = 3  # temporal receptive field per conv layer
    action_dim: int = 4  # A: one action vector
    chunk_size: int = 8  # M: actions per chunk
    action_hidden: int = 512
    video_encoder: str = "temporal"  # "spatial": token_dim = latent_channels x h x w maps
    latent_channels: int = 16  # z of the VAE (spatial encoder only)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, int) and value <= 0:
                raise ValueError(f"AdapterConfig.{name} must be positive, got {value}")
        if self.video_kernel % 2 == 0:
            raise ValueError("AdapterConfig.video_kernel must be odd to keep the time length")
        if self.video_encoder not in ("temporal", "spatial"):
            raise ValueError(f"video_encoder must be 'temporal' or 'spatial', got {self.video_encoder!r}")
        if self.video_encoder == "spatial":
            side = math.isqrt(self.token_dim // self.latent_channels)
            if self.token_dim % self.latent_channels or side * side * self.latent_channels != self.token_dim:
                raise ValueError(f"spatial video features of width {self.token_dim} are not "
                                 f"{self.latent_channels} square maps (z x h x h)")

    @property
    def latent_side(self) -> int:
        return math.isqrt(self.token_dim // self.latent_channels)

    @property
    def action_chunk_dim(self) -> int:
        return self.action_dim * self.chunk_size


class VideoAdapter(nn.Module):
    """B_v: [B, L, token_dim] latent-frame features -> [B, embed_dim].

    Three Conv1d layers over time (L latent frames of one chunk), then mean over time, so a chunk of
    any length maps to one vector.
    """

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        pad = config.video_kernel // 2
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(config.token_dim, config.video_hidden, config.video_kernel, padding=pad),
                nn.Conv1d(config.video_hidden, config.video_hidden, config.video_kernel, padding=pad),
                nn.Conv1d(config.video_hidden, config.embed_dim, config.video_kernel, padding=pad),
            ]
        )
        self.act = nn.GELU()

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 3 or latents.shape[-1] != self.config.token_dim:
            raise ValueError(
                f"VideoAdapter expects [batch, frames, {self.config.token_dim}], "
                f"got {tuple(latents.shape)}"
            )
        x = latents.transpose(1, 2)  # [B, D, L]: Conv1d runs over the last (time) axis
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self.act(x)
        return x.mean(dim=-1)


class SpatialVideoAdapter(nn.Module):
    """B_v for spatial features: [B, L, z*h*w] -> [B, embed_dim].

    Per latent frame: unflatten to [z, h, w], two Conv2d (stride 2) + GroupNorm + GELU, flatten
    (position kept), linear to ``video_hidden``; then two Conv1d over the L frames and the mean
    over time, as the temporal adapter does."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        c, side = config.latent_channels, config.latent_side
        self.frame = nn.Sequential(
            nn.Conv2d(c, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.GELU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.GroupNorm(8, 128), nn.GELU(),
            nn.Flatten(), nn.Linear(128 * math.ceil(side / 4) ** 2, config.video_hidden), nn.GELU())
        pad = config.video_kernel // 2
        self.time = nn.ModuleList([
            nn.Conv1d(config.video_hidden, config.video_hidden, config.video_kernel, padding=pad),
            nn.Conv1d(config.video_hidden, config.embed_dim, config.video_kernel, padding=pad)])
        self.act = nn.GELU()

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if latents.ndim != 3 or latents.shape[-1] != cfg.token_dim:
            raise ValueError(f"SpatialVideoAdapter expects [batch, frames, {cfg.token_dim}], "
                             f"got {tuple(latents.shape)}")
        b, frames = latents.shape[:2]
        maps = latents.reshape(b * frames, cfg.latent_channels, cfg.latent_side, cfg.latent_side)
        x = self.frame(maps).view(b, frames, -1).transpose(1, 2)  # [B, hidden, L]
        x = self.act(self.time[0](x))
        return self.time[1](x).mean(dim=-1)


class ActionAdapter(nn.Module):
    """B_a: [B, M, A] action chunk -> [B, embed_dim] (2-layer MLP over the concatenated actions)."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(
            nn.Linear(config.action_chunk_dim, config.action_hidden),
            nn.GELU(),
            nn.Linear(config.action_hidden, config.embed_dim),
        )

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        expected = (self.config.chunk_size, self.config.action_dim)
        if actions.ndim != 3 or tuple(actions.shape[1:]) != expected:
            raise ValueError(f"ActionAdapter expects [batch, {expected[0]}, {expected[1]}], "
                             f"got {tuple(actions.shape)}")
        return self.mlp(actions.flatten(1))


class ActionDecoder(nn.Module):
    """Decodes an action embedding back to its [B, M, A] chunk (reconstruction loss)."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(
            nn.Linear(config.embed_dim, config.action_hidden),
            nn.GELU(),
            nn.Linear(config.action_hidden, config.action_chunk_dim),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        out = self.mlp(embedding)
        return out.view(-1, self.config.chunk_size, self.config.action_dim)


class Stage1Adapters(nn.Module):
    """The three Stage 1 modules kept together so they checkpoint as one state dict."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.video = SpatialVideoAdapter(config) if config.video_encoder == "spatial" else VideoAdapter(config)
        self.action = ActionAdapter(config)
        self.decoder = ActionDecoder(config)
