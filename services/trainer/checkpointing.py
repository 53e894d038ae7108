"""What the Stage 2 trainer persists, and in which order: the update history, then one checkpoint
holding the residual, its optimizer state and the ids it applied (``AppliedLedger``).

The history is written before the checkpoint and trimmed back to the checkpoint's line count on
restore, so ``stage2_history.jsonl`` lists exactly the checkpointed updates (and the ids each one
applied); entries are acked only after the checkpoint that holds their update (the trainer's job).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from services.trainer.rollout_stream import AppliedLedger
from w2a_models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from w2a_models.residual import ResidualConfig, ResidualPolicy

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
HISTORY_FILE = "stage2_history.jsonl"


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = opt.state_dict()
    tensors = {f"optim.{index}.{key}": value for index, slots in state["state"].items()
               for key, value in slots.items() if torch.is_tensor(value)}
    return tensors, state["param_groups"]


def optimizer_state(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups}


class UpdateHistory:
    """``stage2_history.jsonl``: one JSON line per update, committed with the checkpoint."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / HISTORY_FILE
        self.pending: list[str] = []  # updates since the last checkpoint
        self.lines = 0  # lines committed

    def record(self, stats: dict) -> None:
        self.pending.append(json.dumps({**stats, "time": time.time()}))

    def commit(self) -> int:
        """Append the pending updates (fsynced); returns the file's committed line count."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            for line in self.pending:
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.lines += len(self.pending)
        self.pending = []
        return self.lines

    def trim(self, lines: int) -> None:
        """Drop lines of updates that never reached a checkpoint."""
        if not self.path.exists():
            return
        kept = self.path.read_text().splitlines()[:lines]
        self.path.write_text("".join(line + "\n" for line in kept))
        self.lines = len(kept)


@dataclass
class Restored:
    residual: ResidualPolicy
    optimizer_state: dict
    updates: int
    ledger: AppliedLedger


class TrainerCheckpoint:
    """The checkpoint directory of a Stage 2 run and its history file."""

    def __init__(self, out: str | Path, ledger_capacity: int) -> None:
        self.out = Path(out)
        self.dir = self.out / CHECKPOINT_DIR
        self.ledger_capacity = ledger_capacity
        self.history = UpdateHistory(self.out)

    def restore(self) -> Restored | None:
        """The last checkpoint (and the history trimmed to it), or None for a fresh run."""
        if not (self.dir / "manifest.json").exists():
            self.history.trim(0)
            return None
        tensors, manifest = load_checkpoint(self.dir)
        meta = manifest.config
        residual = ResidualPolicy(ResidualConfig(**meta["residual"]))
        model = {k.removeprefix("residual."): v for k, v in tensors.items() if k.startswith("residual.")}
        try:
            residual.load_state_dict(model, strict=True)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.dir}: does not restore ({exc})") from exc
        optim = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        self.history.trim(int(meta.get("history_lines", 0)))
        return Restored(residual, optimizer_state(optim, meta["param_groups"]), int(meta["updates"]),
                        AppliedLedger.from_list(meta["applied_ids"], self.ledger_capacity))

    def commit(self, residual: ResidualPolicy, optimizer: torch.optim.Optimizer, updates: int,
               unacked_ids: list[str], loss_config) -> None:
        """History first, then one atomic checkpoint with the ids that may still come back."""
        optim, groups = optimizer_tensors(optimizer)
        tensors = {**{f"residual.{k}": v for k, v in residual.state_dict().items()}, **optim}
        meta = {"residual": asdict(residual.config), "updates": updates, "history_lines": self.history.commit(),
                "param_groups": groups, "applied_ids": unacked_ids, "loss": asdict(loss_config)}
        save_checkpoint(self.dir, tensors, str(updates), config=meta)
