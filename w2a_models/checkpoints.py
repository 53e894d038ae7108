"""Checkpoints: a safetensors blob plus a JSON manifest with sha256, version and config.

Never pickle: safetensors holds only tensors, the manifest only JSON. Loading recomputes the blob's
sha256 and refuses a mismatch, so a truncated copy or a tampered file is never loaded. Writes go to
a temporary file and are renamed into place, so a crash mid-write leaves the old checkpoint intact.
The same blob/manifest pair is what the trainer streams to the policy server.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

MANIFEST_NAME = "manifest.json"
BLOB_NAME = "model.safetensors"
FORMAT = "w2a-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or does not match its manifest."""


@dataclass
class Manifest:
    version: str
    sha256: str
    byte_length: int
    tensors: dict[str, list[int]]
    parent_version: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    format: str = FORMAT
    blob: str = BLOB_NAME  # file name of the blob in a checkpoint directory

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{source}: manifest is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: manifest must be a JSON object")
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: unknown manifest format {data.get('format')!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise CheckpointError(f"{source}: manifest fields are wrong ({exc})") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_tensors(
    tensors: dict[str, torch.Tensor],
    version: str,
    parent_version: str | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[bytes, Manifest]:
    """Serialise tensors to a safetensors blob and describe it in a manifest."""
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    blob = st_save(contiguous)
    manifest = Manifest(
        version=str(version),
        parent_version=None if parent_version is None else str(parent_version),
        sha256=sha256_hex(blob),
        byte_length=len(blob),
        tensors={name: list(t.shape) for name, t in contiguous.items()},
        config=dict(config or {}),
    )
    return blob, manifest


def unpack_tensors(blob: bytes, manifest: Manifest, source: str = "blob") -> dict[str, torch.Tensor]:
    """Verify a blob against its manifest (length, sha256, tensor shapes) and deserialise it."""
    if len(blob) != manifest.byte_length:
        raise CheckpointError(
            f"{source}: {len(blob)} bytes but the manifest says {manifest.byte_length}"
        )
    digest = sha256_hex(blob)
    if digest != manifest.sha256:
        raise CheckpointError(
            f"{source}: sha256 mismatch (file {digest[:12]}…, manifest {manifest.sha256[:12]}…); "
            "refusing to load a corrupted or tampered checkpoint"
        )
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a valid safetensors blob ({exc})") from exc
    shapes = {name: list(t.shape) for name, t in tensors.items()}
    if shapes != manifest.tensors:
        raise CheckpointError(f"{source}: tensor shapes differ from the manifest")
    return tensors


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    directory: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    version: str,
    parent_version: str | None = None,
    config: dict[str, Any] | None = None,
) -> Manifest:
    """Write the blob, then ``manifest.json`` naming it (the manifest last: it commits the pair).

    Overwriting a checkpoint writes the new blob under a new name (``model-<sha>.safetensors``),
    so a crash between the two writes leaves the old manifest with its own, untouched blob —
    never a manifest paired with someone else's bytes. Unreferenced blobs go after the commit.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob, manifest = pack_tensors(tensors, version, parent_version, config)
    if (directory / MANIFEST_NAME).exists():
        manifest.blob = f"model-{manifest.sha256[:16]}.safetensors"
    _atomic_write(directory / manifest.blob, blob)
    _atomic_write(directory / MANIFEST_NAME, manifest.to_json().encode())
    for stale in directory.glob("model*.safetensors"):
        if stale.name != manifest.blob:
            stale.unlink(missing_ok=True)
    return manifest


def read_manifest(directory: str | os.PathLike) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no manifest (not a w2a checkpoint directory)")
    return Manifest.from_json(path.read_text(), source=str(path))


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Manifest]:
    """Load and verify a checkpoint directory written by :func:`save_checkpoint`."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if Path(manifest.blob).name != manifest.blob:
        raise CheckpointError(f"{directory}: manifest names a blob outside the directory")
    blob_path = directory / manifest.blob
    if not blob_path.is_file():
        raise CheckpointError(f"{blob_path}: blob missing")
    return unpack_tensors(blob_path.read_bytes(), manifest, source=str(blob_path)), manifest


def save_module(
    directory: str | os.PathLike,
    module: torch.nn.Module,
    version: str,
    parent_version: str | None = None,
    config: dict[str, Any] | None = None,
) -> Manifest:
    return save_checkpoint(directory, module.state_dict(), version, parent_version, config)


def load_module(directory: str | os.PathLike, module: torch.nn.Module) -> Manifest:
    """Load verified weights into ``module`` (strict: every key must match)."""
    tensors, manifest = load_checkpoint(directory)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{directory}: weights do not fit {type(module).__name__}: {exc}") from exc
    return manifest
