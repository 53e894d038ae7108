"""Stage 2 update math: the reward-free residual objective on logged rollouts.

For each logged chunk: z^v = B_v(world-model latents of the chunk, imagined by ``wm_generate``
from the chunk's first frame and its skill), z^a = B_a(a_base + f_theta(features, a_base)) with
the residual recomputed under the current theta, so gradients reach the residual only (both
adapters stay frozen). Loss: bidirectional InfoNCE (in-batch negatives) plus a small L2 on the
residual. Deviation from the paper, and why: the L2 term (``residual_l2``) keeps the residual
near zero where the contrastive signal is weak, the same role the paper's bounded residual plays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from services.common.rollout_log import logged_image
from services.common.rollout_record import Record, StepRecord
from w2a_models.adapters import Stage1Adapters
from w2a_models.losses import info_nce
from w2a_models.residual import ResidualPolicy

# What the residual learns from. Only "world_model" is World2Act; the other two are upper bounds
# that read the simulator's oracle (never available on a real robot) and are reported as such.
TrainerMode = Literal["world_model", "expert_corrected", "real_future"]
ORACLE_MODES = ("expert_corrected", "real_future")


@dataclass(frozen=True)
class Stage2Config:
    temperature: float = 0.07
    residual_l2: float = 0.01
    lr: float = 1e-4
    # Local negatives (issue 17): with in-batch negatives alone, rows are consecutive chunks of
    # a few episodes and lowering the loss means making rows distinguishable, not moving a row
    # toward the right action. Local negatives compete with the row's own action: the base
    # action itself and the final action plus noise, so the softmax ranks *nearby* actions and
    # the gradient climbs the video/action similarity around a_final.
    local_negatives: int = 0  # noisy copies of a_final per row (detached)
    local_noise: float = 0.1  # their standard deviation (the residual's scale)
    base_negative: bool = False  # a_base as a negative of its own row


@dataclass
class StepSample:
    entry_id: str
    features: np.ndarray  # [F]
    base: np.ndarray  # [M, A]
    frame: np.ndarray  # uint8 [H, W, 3]: the chunk's first observation
    skill: str
    episode: str
    policy_version: int = 0  # the residual version that produced the logged chunk
    # the simulator's oracle, filled only in an oracle mode (upper bounds; see TrainerMode)
    expert: np.ndarray | None = None  # [M, A] the scripted expert's chunk from this state
    future: np.ndarray | None = None  # uint8 [M+1, H, W, 3] the expert's future, rendered


def decode_step(entry_id: str, record: Record, camera: str,
                mode: TrainerMode = "world_model") -> StepSample | None:
    """A decoded record -> training sample; None for markers, base-only, evaluation and fallback
    steps (``StepRecord.trainable``) and steps without the camera.

    ``camera`` names the image the world model sees; empty = the record's only image. The
    record's oracle is read in an oracle mode only (and a step without the part the mode needs
    is skipped); in ``world_model`` mode it is never looked at."""
    if not isinstance(record, StepRecord) or not record.trainable:
        return None
    images = record.images
    if not camera and len(images) == 1:  # no camera configured: the record's only one
        camera = next(iter(images))
    if camera not in images:
        return None
    expert = future = None
    if mode == "expert_corrected":
        if record.expert_actions is None:
            return None
        expert = record.expert_actions
    elif mode in ORACLE_MODES:
        if record.expert_future is None:
            return None
        future = record.expert_future
    return StepSample(
        entry_id=entry_id, features=record.features, base=record.base, frame=logged_image(images[camera]),
        skill=record.skill or record.instruction, episode=record.episode,
        policy_version=record.policy_version, expert=expert, future=future,
    )


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def stage2_loss(adapters: Stage1Adapters, residual: ResidualPolicy, features: torch.Tensor,
                base: torch.Tensor, video_latents: torch.Tensor, config: Stage2Config = Stage2Config()
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """features [B,F], base [B,M,A], video_latents [B,L,D] -> (loss, stats)."""
    if features.shape[0] < 2:
        raise ValueError("Stage 2 needs at least 2 chunks per batch (in-batch negatives)")
    with torch.no_grad():
        z_video = adapters.video(video_latents)
    res = residual(features, base)
    final = base + res
    z_action = adapters.action(final)
    hard = _local_negatives(adapters, base, final, config)
    contrastive = info_nce(z_video, z_action, config.temperature, hard_negative_actions=hard)
    l2 = (res ** 2).mean()
    loss = contrastive + config.residual_l2 * l2
    return loss, {"loss": loss.item(), "contrastive": contrastive.item(), "residual_l2": l2.item(),
                  "residual_abs_max": res.detach().abs().max().item()}


def _local_negatives(adapters: Stage1Adapters, base: torch.Tensor, final: torch.Tensor,
                     config: Stage2Config) -> torch.Tensor | None:
    """[B, K, E] embeddings of the row's local negatives (no gradient through them), or None."""
    chunks = []
    if config.base_negative:
        chunks.append(base)
    for _ in range(config.local_negatives):
        chunks.append(final.detach() + config.local_noise * torch.randn_like(final))
    if not chunks:
        return None
    stacked = torch.stack(chunks, dim=1)  # [B, K, M, A]
    with torch.no_grad():
        z = adapters.action(stacked.flatten(0, 1))
    return z.view(base.shape[0], len(chunks), -1)


def expert_residual_loss(residual: ResidualPolicy, features: torch.Tensor, base: torch.Tensor,
                         expert: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Upper bound, not World2Act: regress the residual onto a* - clip(a_base) (MSE).

    The same residual network and bound as Stage 2, taught by a perfect teacher: what a residual
    of this size can do at all. The target is left unclipped; the bound (tanh) saturates."""
    target = expert - base.clamp(-1.0, 1.0)
    res = residual(features, base)
    loss = torch.nn.functional.mse_loss(res, target)
    return loss, {"loss": loss.item(), "residual_l2": (res ** 2).mean().item(),
                  "residual_abs_max": res.detach().abs().max().item(),
                  "target_abs_median": target.abs().median().item()}
