"""Observation features for remote bases, which expose no internal activations.

The residual needs an observation vector; a remote VLA only returns actions. We give it the state
plus an 8x8 grayscale thumbnail of every camera (scaled to [0, 1]): cheap, deterministic, and
enough to tell scenes apart. Its width is ``state_dim + 64 * cameras``.
"""

from __future__ import annotations

import numpy as np

THUMB = 8


def thumbnail_features(images: dict[str, np.ndarray], state: np.ndarray, cameras: list[str]) -> np.ndarray:
    """images: camera -> uint8 [B, H, W, 3]; state [B, S] -> float32 [B, S + 64 * len(cameras)]."""
    parts = [np.asarray(state, np.float32)]
    for cam in cameras:
        img = np.asarray(images[cam], np.float32).mean(axis=-1) / 255.0  # [B, H, W]
        b, h, w = img.shape
        hs, ws = h // THUMB, w // THUMB
        pooled = img[:, : hs * THUMB, : ws * THUMB].reshape(b, THUMB, hs, THUMB, ws).mean(axis=(2, 4))
        parts.append(pooled.reshape(b, THUMB * THUMB))
    return np.concatenate(parts, axis=1).astype(np.float32)


def feature_dim(state_dim: int, cameras: int) -> int:
    return state_dim + THUMB * THUMB * cameras
