"""Residual versions on disk: verify, persist (last N kept), restore on restart, roll back.

Layout under ``root``: one checkpoint directory per accepted version (``v00000007/``, written to a
temporary name and renamed, so a crash mid-write never leaves a half version), and ``CURRENT``
naming the version being served. On restart the server serves ``CURRENT`` if it still verifies,
else the newest version that does. Versions only go up: a push must exceed every version ever
accepted here (``HIGHEST`` remembers it even after pruning or rollback).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from w2a_models.checkpoints import (
    CheckpointError,
    Manifest,
    load_checkpoint,
    save_checkpoint,
    unpack_tensors,
)
from w2a_models.residual import ResidualConfig, ResidualPolicy

log = logging.getLogger(__name__)


class WeightRejected(ValueError):
    """A pushed residual failed verification; the message says which check."""


@dataclass(frozen=True)
class ResidualSlot:
    """What the engine serves. Swapped as one reference, so a batch sees one whole version."""

    version: int
    module: ResidualPolicy | None  # None = no residual yet (a_final = a_base)


@dataclass(frozen=True)
class ResidualShape:
    feature_dim: int
    action_dim: int
    chunk_size: int


def build_residual(config_json: str | dict, shape: ResidualShape) -> ResidualPolicy:
    try:
        raw = json.loads(config_json) if isinstance(config_json, str) else dict(config_json)
        config = ResidualConfig(**raw)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise WeightRejected(f"config_json is not a valid residual config: {exc}") from exc
    expected = (shape.feature_dim, shape.action_dim, shape.chunk_size)
    got = (config.obs_dim, config.action_dim, config.chunk_size)
    if got != expected:
        raise WeightRejected(f"residual (obs_dim, action_dim, chunk_size) = {got} does not fit "
                             f"this server's base policy {expected}")
    return ResidualPolicy(config)


def module_from_tensors(tensors: dict[str, torch.Tensor], config: dict, shape: ResidualShape
                        ) -> ResidualPolicy:
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise WeightRejected(f"tensor {name!r} has dtype {tensor.dtype}; floating point expected")
        if not torch.isfinite(tensor).all():
            raise WeightRejected(f"tensor {name!r} contains NaN or Inf")
    module = build_residual(config, shape)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise WeightRejected(f"tensors do not fit the residual: {exc}") from exc
    return module.eval()


class ResidualStore:
    def __init__(self, root: str | os.PathLike, shape: ResidualShape, keep: int = 5) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shape = shape
        self.keep = max(1, keep)
        self._lock = threading.Lock()

    # -- disk ----------------------------------------------------------------------------------

    def _dir(self, version: int) -> Path:
        return self.root / f"v{version:08d}"

    def versions(self) -> list[int]:
        out = []
        for path in self.root.glob("v*"):
            if path.is_dir() and path.name[1:].isdigit():
                out.append(int(path.name[1:]))
        return sorted(out)

    def highest_accepted(self) -> int:
        path = self.root / "HIGHEST"
        recorded = int(path.read_text()) if path.exists() else 0
        return max([recorded, *self.versions()])

    def _write_pointer(self, name: str, version: int) -> None:
        tmp = self.root / f".{name}.tmp"
        tmp.write_text(str(version))
        os.replace(tmp, self.root / name)

    def load_version(self, version: int) -> ResidualSlot:
        tensors, manifest = load_checkpoint(self._dir(version))
        return ResidualSlot(version, module_from_tensors(tensors, manifest.config, self.shape))

    def restore(self) -> ResidualSlot:
        """The slot to serve after a restart (CURRENT if valid, else newest valid, else none)."""
        candidates = sorted(self.versions(), reverse=True)
        current = self.root / "CURRENT"
        if current.exists() and current.read_text().strip().isdigit():
            pointed = int(current.read_text())
            if pointed in candidates:
                candidates.remove(pointed)
                candidates.insert(0, pointed)
        for version in candidates:
            try:
                return self.load_version(version)
            except (CheckpointError, WeightRejected) as exc:
                log.warning("skipping residual v%d on restore: %s", version, exc)
        return ResidualSlot(0, None)

    # -- push / rollback -----------------------------------------------------------------------

    def accept(self, manifest: Manifest, blob: bytes) -> ResidualSlot:
        """Verify a pushed blob completely, persist it, and return the slot to swap in."""
        with self._lock:
            try:
                version = int(manifest.version)
            except ValueError:
                raise WeightRejected(f"version must be an integer, got {manifest.version!r}") from None
            highest = self.highest_accepted()
            if version <= highest:
                raise WeightRejected(f"version {version} is not newer than accepted version {highest}")
            try:
                tensors = unpack_tensors(blob, manifest, source=f"push v{version}")
            except CheckpointError as exc:
                raise WeightRejected(str(exc)) from exc
            module = module_from_tensors(tensors, manifest.config, self.shape)
            staging = self.root / f".staging-v{version:08d}"
            shutil.rmtree(staging, ignore_errors=True)
            save_checkpoint(staging, tensors, str(version), manifest.parent_version, manifest.config)
            os.replace(staging, self._dir(version))
            self._write_pointer("HIGHEST", version)
            self._write_pointer("CURRENT", version)
            self._prune()
            return ResidualSlot(version, module)

    def rollback(self, version: int, current: int) -> ResidualSlot:
        with self._lock:
            kept = self.versions()
            if version == 0:
                older = [v for v in kept if v < current]
                if not older:
                    raise WeightRejected(f"no kept version older than {current} to roll back to")
                version = older[-1]
            if version not in kept:
                raise WeightRejected(f"version {version} is not kept here (kept: {kept})")
            try:
                slot = self.load_version(version)
            except CheckpointError as exc:
                raise WeightRejected(f"kept version {version} no longer verifies: {exc}") from exc
            self._write_pointer("CURRENT", version)
            return slot

    def _prune(self) -> None:
        current = self.root / "CURRENT"
        serving = int(current.read_text()) if current.exists() else None
        versions = self.versions()
        for version in versions[: max(0, len(versions) - self.keep)]:
            if version != serving:
                shutil.rmtree(self._dir(version), ignore_errors=True)


