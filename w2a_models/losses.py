"""World2Act contrastive objective: bidirectional InfoNCE with hard negatives, plus reconstruction.

For chunk i, the positive pair is (video_i, action_i). Candidates for the video->action direction
are every action chunk in the batch (easy negatives: other chunks, other skills, other demos) plus
the hard negatives given for row i (action chunks of *other demos of the same skill*, which share
the task context and so force the model to read the dynamics). The action->video direction is the
mirror image. Embeddings are L2-normalised; logits are cosine similarities divided by tau.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Stage1LossConfig:
    temperature: float = 0.07  # tau from the paper
    contrastive_weight: float = 1.0
    reconstruction_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.contrastive_weight < 0 or self.reconstruction_weight < 0:
            raise ValueError("loss weights must be >= 0")


@dataclass
class Stage1Loss:
    total: torch.Tensor
    contrastive: torch.Tensor
    reconstruction: torch.Tensor


def _one_direction(
    queries: torch.Tensor,
    keys: torch.Tensor,
    hard_negatives: torch.Tensor | None,
    hard_mask: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy of each query against all in-batch keys (+ its own hard negatives)."""
    q = F.normalize(queries, dim=-1)
    k = F.normalize(keys, dim=-1)
    logits = q @ k.T  # [B, B]; the diagonal holds the positives
    if hard_negatives is not None:
        if hard_negatives.ndim != 3 or hard_negatives.shape[0] != queries.shape[0]:
            raise ValueError(
                f"hard negatives must be [batch, K, dim], got {tuple(hard_negatives.shape)}"
            )
        h = F.normalize(hard_negatives, dim=-1)
        hard_logits = torch.einsum("bd,bkd->bk", q, h)
        if hard_mask is not None:
            hard_logits = hard_logits.masked_fill(~hard_mask.bool(), float("-inf"))
        logits = torch.cat([logits, hard_logits], dim=1)
    targets = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits / temperature, targets)


def info_nce(
    z_video: torch.Tensor,
    z_action: torch.Tensor,
    temperature: float = 0.07,
    hard_negative_actions: torch.Tensor | None = None,
    hard_negative_videos: torch.Tensor | None = None,
    hard_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the video->action and action->video losses.

    Args:
        z_video, z_action: [B, E] paired embeddings (row i of each is a positive pair).
        hard_negative_actions: [B, K, E] action embeddings competing with action_i for video_i.
        hard_negative_videos: [B, K, E] video embeddings competing with video_i for action_i.
        hard_mask: [B, K] bool, False where a hard-negative slot is padding.
    """
    if z_video.shape != z_action.shape or z_video.ndim != 2:
        raise ValueError(
            f"paired embeddings must both be [batch, dim]: {tuple(z_video.shape)} vs "
            f"{tuple(z_action.shape)}"
        )
    v2a = _one_direction(z_video, z_action, hard_negative_actions, hard_mask, temperature)
    a2v = _one_direction(z_action, z_video, hard_negative_videos, hard_mask, temperature)
    return 0.5 * (v2a + a2v)


def reconstruction_loss(predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """MSE between the decoded action chunk and the executed one."""
    if predicted.shape != actions.shape:
        raise ValueError(f"shape mismatch: {tuple(predicted.shape)} vs {tuple(actions.shape)}")
    return F.mse_loss(predicted, actions)


def stage1_loss(
    z_video: torch.Tensor,
    z_action: torch.Tensor,
    reconstructed: torch.Tensor,
    actions: torch.Tensor,
    config: Stage1LossConfig = Stage1LossConfig(),
    hard_negative_actions: torch.Tensor | None = None,
    hard_negative_videos: torch.Tensor | None = None,
    hard_mask: torch.Tensor | None = None,
) -> Stage1Loss:
    """The combined Stage 1 objective with the weights from ``config``."""
    contrastive = info_nce(
        z_video,
        z_action,
        config.temperature,
        hard_negative_actions,
        hard_negative_videos,
        hard_mask,
    )
    recon = reconstruction_loss(reconstructed, actions)
    total = config.contrastive_weight * contrastive + config.reconstruction_weight * recon
    return Stage1Loss(total=total, contrastive=contrastive, reconstruction=recon)
