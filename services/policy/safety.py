"""Safety on every served action: bounds, residual norm, and a NaN/Inf guard.

Order: a non-finite residual is dropped (fallback to the base); the residual is scaled so each
step's vector has L2 norm <= ``residual_max_norm``; the sum is clipped to the action bounds. A
non-finite base action cannot be trusted either: that step holds still (zeros, clipped) and is
flagged too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SafetyConfig:
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    residual_max_norm: float = 0.5

    def __post_init__(self) -> None:
        if len(self.action_low) != len(self.action_high):
            raise ValueError("action_low and action_high differ in length")
        if any(lo > hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError("action_low must be <= action_high")
        if self.residual_max_norm < 0:
            raise ValueError("residual_max_norm must be >= 0")


@dataclass
class SafeActions:
    final: np.ndarray  # [B, M, A]
    base: np.ndarray  # [B, M, A], clipped to bounds
    residual: np.ndarray  # [B, M, A] as applied (after norm clamp, zeros where fallback)
    fallback: np.ndarray  # [B] bool
    reasons: list[str]


def apply_safety(base: np.ndarray, residual: np.ndarray, config: SafetyConfig) -> SafeActions:
    low = np.asarray(config.action_low, dtype=np.float32)
    high = np.asarray(config.action_high, dtype=np.float32)
    base = np.asarray(base, dtype=np.float32)
    residual = np.asarray(residual, dtype=np.float32).copy()
    batch = base.shape[0]
    reasons = [""] * batch
    fallback = np.zeros(batch, dtype=bool)

    base_bad = ~np.isfinite(base).reshape(batch, -1).all(axis=1)
    residual_bad = ~np.isfinite(residual).reshape(batch, -1).all(axis=1)
    for i in np.flatnonzero(residual_bad):
        fallback[i], reasons[i] = True, "residual non-finite"
    for i in np.flatnonzero(base_bad):
        fallback[i], reasons[i] = True, "base action non-finite"
    residual[residual_bad | base_bad] = 0.0
    safe_base = np.where(base_bad[:, None, None], 0.0, base).astype(np.float32)
    safe_base = np.clip(safe_base, low, high)

    norms = np.linalg.norm(residual, axis=-1, keepdims=True)
    limit = config.residual_max_norm
    scale = np.where(norms > limit, limit / np.maximum(norms, 1e-12), 1.0)
    residual = (residual * scale).astype(np.float32)

    final = np.clip(safe_base + residual, low, high).astype(np.float32)
    return SafeActions(final, safe_base, residual, fallback, reasons)
