"""Data-parallel jobs under ``torchrun`` (gloo on CPU, NCCL on GPU), and the same code in one
process: ``init_from_env`` reads torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (absent:
one process, no process group), ``gather_rows`` concatenates every rank's rows so a contrastive
loss sees the whole global batch (the CLIP trick: the other ranks' rows enter as constants, this
rank's own rows keep their gradient)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, reports and charts."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, rows, batch: int):
        """This rank's contiguous slice of a global batch (``batch`` divisible by the world size)."""
        if batch % self.world:
            raise ValueError(f"the global batch {batch} must divide by the {self.world} ranks")
        per = batch // self.world
        return rows[self.rank * per:(self.rank + 1) * per]


def init_from_env(backend: str | None = None) -> Ranks:
    """The process group torchrun asks for (none for a plain process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ranks = Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if ranks.distributed and not torch.distributed.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(ranks.local_rank)
        torch.distributed.init_process_group(backend)
    return ranks


def gather_rows(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """[b, ...] on every rank -> [world * b, ...] in rank order; the gradient reaches this rank's
    own rows only. Every rank then computes the same global loss L, and its parameters get
    dL/dθ through its own rows: scale the loss by ``world`` before backward, and the gradients
    ``DistributedDataParallel`` averages are exactly dL/dθ (measured: 2e-7 relative to one
    process). A differentiable all_gather (torch.distributed.nn) gave a 5 % gradient error on the
    adapters here; its backward runs collectives during the backward pass, where two of equal
    shape may pair up across ranks in different orders (the likely cause, not proven).)"""
    if not ranks.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ranks.world)]
    torch.distributed.all_gather(parts, tensor.detach().contiguous())
    parts[ranks.rank] = tensor
    return torch.cat(parts, dim=0)


def shutdown(ranks: Ranks) -> None:
    if ranks.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
