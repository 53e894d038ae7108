"""What every remote base shares: its spec, fitting the server's actions to the served chunk, and
observation features (remote bases expose no internal activations).

The residual needs an observation vector; a remote VLA only returns actions. We give it the state
plus an 8x8 grayscale thumbnail of every camera (scaled to [0, 1]): cheap, deterministic, and
enough to tell scenes apart. Its width is ``state_dim + 64 * cameras``.
"""

from __future__ import annotations

import numpy as np

from w2a_models.base_policy import BaseOutput, BaseUnavailable, ObservationBatch, PolicySpec

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


def remote_spec(name: str, config) -> PolicySpec:
    """The spec of a remote base from its config (action_dim, chunk_size, state_dim, cameras)."""
    return PolicySpec(name=name, action_dim=config.action_dim, chunk_size=config.chunk_size,
                      state_dim=config.state_dim, cameras=tuple(config.cameras),
                      feature_dim=feature_dim(config.state_dim, len(config.cameras)))


def fit_chunk(actions, chunk_size: int, action_dim: int, source: str) -> np.ndarray:
    """The server's [H, >=A] actions -> the served [M, A] chunk; a shorter horizon holds its last
    action. Anything else (wrong rank or width, NaN/Inf) is the server failing: BaseUnavailable."""
    actions = np.asarray(actions, np.float32)
    if actions.ndim != 2 or actions.shape[1] < action_dim or not np.all(np.isfinite(actions)):
        raise BaseUnavailable(f"{source} returned actions of shape {actions.shape}; expected "
                              f"[H, >={action_dim}] finite values")
    actions = actions[:chunk_size, :action_dim]
    if len(actions) < chunk_size:
        actions = np.concatenate([actions, np.repeat(actions[-1:], chunk_size - len(actions), 0)])
    return actions


def remote_output(rows: list[np.ndarray], batch: ObservationBatch, cameras) -> BaseOutput:
    """Per-observation chunks of a remote base -> the batch's BaseOutput with thumbnail features."""
    return BaseOutput(np.stack(rows), thumbnail_features(batch.images, batch.state, [c.name for c in cameras]))
