"""The trainable residual of Stage 2: a_final = a_base + a_residual.

A small MLP reads (observation features, base action chunk) and outputs a bounded correction
``scale * tanh(.)``. The last layer starts at zero, so a freshly deployed residual returns exactly
the base action: post-training can only move away from the base policy as fast as it learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResidualConfig:
    obs_dim: int  # width of the observation features fed to the residual
    action_dim: int = 4
    chunk_size: int = 8
    hidden: int = 256
    num_layers: int = 2  # hidden layers before the zero-initialised output layer
    scale: float = 0.2  # |a_residual| <= scale, element-wise
    # Action dimensions the residual may move; the others stay the base's. None = all. LIBERO's
    # demos never turn the hand, and a residual that did broke every base success (docs/libero.md).
    dims: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if min(self.obs_dim, self.action_dim, self.chunk_size, self.hidden, self.num_layers) <= 0:
            raise ValueError(f"ResidualConfig sizes must be positive: {self}")
        if self.scale <= 0:
            raise ValueError(f"ResidualConfig.scale must be > 0, got {self.scale}")
        if self.dims is not None:
            dims = tuple(int(d) for d in self.dims)  # a JSON round trip gives a list
            object.__setattr__(self, "dims", dims)
            if not dims or len(set(dims)) != len(dims) or not all(0 <= d < self.action_dim for d in dims):
                raise ValueError(f"ResidualConfig.dims must be distinct action dimensions in "
                                 f"[0, {self.action_dim}), got {self.dims}")


class ResidualPolicy(nn.Module):
    """f_theta(obs_features, base_chunk) -> residual chunk [B, M, A], bounded by ``scale``."""

    def __init__(self, config: ResidualConfig) -> None:
        super().__init__()
        self.config = config
        in_dim = config.obs_dim + config.chunk_size * config.action_dim
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]  # keeps huge inputs in tanh's range
        width = in_dim
        for _ in range(config.num_layers):
            layers += [nn.Linear(width, config.hidden), nn.GELU()]
            width = config.hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.chunk_size * config.action_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        mask = torch.ones(config.action_dim)
        if config.dims is not None:
            mask = torch.zeros(config.action_dim)
            mask[list(config.dims)] = 1.0
        # not a parameter and not in the state dict: it follows from the config, which travels
        self.register_buffer("dim_mask", mask, persistent=False)

    def forward(self, obs_features: torch.Tensor, base_actions: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if obs_features.ndim != 2 or obs_features.shape[1] != cfg.obs_dim:
            raise ValueError(f"obs_features must be [batch, {cfg.obs_dim}], "
                             f"got {tuple(obs_features.shape)}")
        if tuple(base_actions.shape[1:]) != (cfg.chunk_size, cfg.action_dim):
            raise ValueError(f"base_actions must be [batch, {cfg.chunk_size}, {cfg.action_dim}], "
                             f"got {tuple(base_actions.shape)}")
        x = torch.cat([obs_features, base_actions.flatten(1)], dim=1)
        out = cfg.scale * torch.tanh(self.head(self.body(x)))
        return out.view(-1, cfg.chunk_size, cfg.action_dim) * self.dim_mask

    def act(self, obs_features: torch.Tensor, base_actions: torch.Tensor) -> torch.Tensor:
        """a_final = a_base + a_residual."""
        return base_actions + self(obs_features, base_actions)
