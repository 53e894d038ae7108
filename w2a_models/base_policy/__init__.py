"""The frozen base VLA behind one protocol, so the server and trainer never care which it is.

A base policy maps a batch of observations (camera images, state, instruction) to an action chunk
[B, M, A] and to a feature vector [B, F] that the residual conditions on. Built in: ``TinyVLA``
(trained here by behaviour cloning). Remote backends (openpi, GR00T, Cosmos Policy) and LeRobot
checkpoints implement the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class BaseUnavailable(RuntimeError):
    """A remote base could not answer in time (down, unreachable, too slow, malformed reply)."""


@dataclass(frozen=True)
class CameraSpec:
    name: str
    height: int
    width: int


@dataclass(frozen=True)
class PolicySpec:
    name: str
    action_dim: int
    chunk_size: int
    state_dim: int
    cameras: tuple[CameraSpec, ...]
    feature_dim: int  # width of BaseOutput.features (the residual's observation input)


@dataclass
class ObservationBatch:
    images: dict[str, np.ndarray]  # camera name -> uint8 [B, H, W, 3]
    state: np.ndarray  # float32 [B, S]
    instructions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.state.shape[0])


@dataclass
class BaseOutput:
    actions: np.ndarray  # float32 [B, M, A]
    features: np.ndarray  # float32 [B, F]


@runtime_checkable
class BasePolicy(Protocol):
    """``spec`` and ``predict``. A base whose ``predict`` goes over the network also sets a class
    attribute ``remote = True``: the server then never runs it on its event loop."""

    spec: PolicySpec

    def predict(self, batch: ObservationBatch) -> BaseOutput:
        """One forward for the whole batch."""
        ...
