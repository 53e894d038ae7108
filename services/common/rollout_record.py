"""The rollout record: what the policy server logs per step and per episode end, and the trainer,
the benchmarks and the tests read back.

One declared format instead of dicts read by string keys. On the wire (a msgpack map in the
``data`` field of a Redis Stream entry, see ``services.common.rollout_log``) every array is a
map ``{"dtype", "shape", "data"}``: raw little-endian bytes, because msgpack packs bytes far faster
than it calls back into Python for numpy arrays, and the logger packs on the request thread.
Records carry a format number ``v``; records written before it existed (``v`` absent, arrays as
bare float32 bytes, action shapes in ``chunk``) still decode.

Frames stay in the logged-image form of ``rollout_log.logged_image_entry`` (the bytes as the robot
sent them: raw, JPEG or PNG), decoded by ``rollout_log.logged_image`` only where a consumer needs
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.streams import DEAD_LETTER_STREAM, ROLLOUT_STREAM

__all__ = ["DEAD_LETTER_STREAM", "RECORD_FORMAT", "ROLLOUT_STREAM", "EpisodeEnd", "Record", "RecordError",
           "StepRecord",
           "decode_record", "read_array", "wire_array"]

RECORD_FORMAT = 2  # 1: arrays as bare float32 bytes (no ``v`` field); 2: typed arrays


class RecordError(ValueError):
    """A stream entry that is not a rollout record this code can read (the trainer dead-letters it)."""


def wire_array(array: np.ndarray) -> dict[str, Any]:
    """An array as the record carries it: dtype, shape and its raw bytes."""
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def read_array(value: Any, name: str, legacy_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A record's array back: a format-2 map, or (format 1) bare float32 bytes in ``legacy_shape``
    (flat when None). A copy, so the record's buffer can go."""
    if isinstance(value, dict):
        try:
            dtype, shape, data = np.dtype(value["dtype"]), tuple(value["shape"]), value["data"]
        except (KeyError, TypeError) as exc:
            raise RecordError(f"{name}: an array needs dtype, shape and data ({exc})") from exc
        if dtype.hasobject:
            raise RecordError(f"{name}: object arrays are refused")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        dtype, shape, data = np.dtype(np.float32), legacy_shape, value
    else:
        raise RecordError(f"{name}: expected an array, got {type(value).__name__}")
    flat = np.frombuffer(data, dtype)
    if shape is None:
        return flat.copy()
    if flat.size != int(np.prod(shape)):
        raise RecordError(f"{name}: {flat.size} values do not fill shape {list(shape)}")
    return flat.reshape(shape).copy()


def _optional(record: dict, key: str, legacy_shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    value = record.get(key)
    return None if value is None else read_array(value, key, legacy_shape)


@dataclass(frozen=True)
class StepRecord:
    """One answered act request: what the robot showed, what the base and the residual proposed."""

    robot_id: str
    episode_id: str
    step: int
    base: np.ndarray  # float32 [M, A] the frozen base's chunk
    features: np.ndarray | None  # float32 [F] the base's features (the residual's input); None: none
    images: dict[str, dict] = field(default_factory=dict)  # camera -> logged image entry
    instruction: str = ""
    skill: str = ""
    session_id: str = ""
    state: np.ndarray | None = None  # float32 [S]
    residual: np.ndarray | None = None  # float32 [M, A]
    final: np.ndarray | None = None  # float32 [M, A] what the robot was sent
    base_only: bool = False  # A/B evaluation of the base alone
    evaluation: bool = False  # evaluation episodes are never trained on
    fallback: bool = False  # the server answered with the base alone (residual unavailable)
    policy_version: int = 0  # the residual version that produced ``final``
    client_time: float = 0.0
    server_time: float = 0.0
    server_ms: float = 0.0
    # the simulator's oracle (upper bounds only; never used for acting)
    expert_actions: np.ndarray | None = None  # float32 [M, A]
    expert_future: np.ndarray | None = None  # uint8 [M + 1, H, W, 3]

    kind = "step"

    @property
    def id(self) -> str:
        return f"{self.robot_id}/{self.episode_id}/{self.step}"

    @property
    def episode(self) -> str:
        return f"{self.robot_id}/{self.episode_id}"

    @property
    def trainable(self) -> bool:
        """A step Stage 2 may learn from: the residual acted, outside evaluation, with features."""
        return not (self.base_only or self.evaluation or self.fallback) and self.features is not None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": RECORD_FORMAT, "kind": self.kind, "id": self.id, "robot_id": self.robot_id,
            "session_id": self.session_id, "episode_id": self.episode_id, "step": self.step,
            "instruction": self.instruction, "skill": self.skill, "base_only": self.base_only,
            "evaluation": self.evaluation, "policy_version": self.policy_version, "fallback": self.fallback,
            "client_time": self.client_time, "server_time": self.server_time, "server_ms": self.server_ms,
            "base": wire_array(self.base), "images": self.images,
            "features": None if self.features is None else wire_array(self.features),
        }
        for key in ("state", "residual", "final"):
            value = getattr(self, key)
            if value is not None:
                out[key] = wire_array(value)
        oracle = {}
        if self.expert_actions is not None:
            oracle["expert_actions"] = wire_array(self.expert_actions)
        if self.expert_future is not None:
            oracle["future"] = wire_array(self.expert_future)
        if oracle:
            out["oracle"] = oracle
        return out

    @classmethod
    def from_wire(cls, record: dict[str, Any], oracle: bool = False) -> StepRecord:
        """``oracle``: also read the simulator's oracle (the trainer's oracle modes only; the
        World2Act arm must never see it, so by default it is not even looked at)."""
        try:
            chunk = tuple(record["chunk"]) if "chunk" in record else None  # format 1's action shape
            oracle = (record.get("oracle") or {}) if oracle else {}
            future = oracle.get("future")
            if isinstance(future, dict) and "dtype" not in future:  # format 1: {"shape", "data"} of uint8
                future = {**future, "dtype": "|u1"}
            return cls(
                robot_id=str(record.get("robot_id", "")), episode_id=str(record.get("episode_id", "")),
                step=int(record.get("step") or 0), base=read_array(record["base"], "base", chunk),
                features=_optional(record, "features"), images=dict(record.get("images") or {}),
                instruction=record.get("instruction") or "", skill=record.get("skill") or "",
                session_id=record.get("session_id") or "", state=_optional(record, "state"),
                residual=_optional(record, "residual", chunk), final=_optional(record, "final", chunk),
                base_only=bool(record.get("base_only")), evaluation=bool(record.get("evaluation")),
                fallback=bool(record.get("fallback")), policy_version=int(record.get("policy_version") or 0),
                client_time=float(record.get("client_time") or 0.0),
                server_time=float(record.get("server_time") or 0.0),
                server_ms=float(record.get("server_ms") or 0.0),
                expert_actions=_optional(oracle, "expert_actions", chunk),
                expert_future=None if future is None else read_array(future, "oracle.future"),
            )
        except KeyError as exc:
            raise RecordError(f"step record without {exc}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, RecordError):
                raise
            raise RecordError(f"malformed step record: {exc}") from exc


@dataclass(frozen=True)
class EpisodeEnd:
    """The robot's end-of-episode marker (success as the robot's environment judged it)."""

    robot_id: str
    episode_id: str
    step: int = 0
    success: bool = False
    session_id: str = ""
    evaluation: bool = False
    server_time: float = 0.0

    kind = "episode_end"

    @property
    def id(self) -> str:
        return f"{self.robot_id}/{self.episode_id}/end"

    @property
    def episode(self) -> str:
        return f"{self.robot_id}/{self.episode_id}"

    def to_wire(self) -> dict[str, Any]:
        return {"v": RECORD_FORMAT, "kind": self.kind, "id": self.id, "robot_id": self.robot_id,
                "session_id": self.session_id, "episode_id": self.episode_id, "step": self.step,
                "success": self.success, "evaluation": self.evaluation, "server_time": self.server_time}

    @classmethod
    def from_wire(cls, record: dict[str, Any], oracle: bool = False) -> EpisodeEnd:
        return cls(robot_id=str(record.get("robot_id", "")), episode_id=str(record.get("episode_id", "")),
                   step=int(record.get("step") or 0), success=bool(record.get("success")),
                   session_id=record.get("session_id") or "", evaluation=bool(record.get("evaluation")),
                   server_time=float(record.get("server_time") or 0.0))


Record = StepRecord | EpisodeEnd
_KINDS = {"step": StepRecord, "episode_end": EpisodeEnd}


def decode_record(record: Any, oracle: bool = False) -> Record:
    """An unpacked stream entry -> its typed record; ``RecordError`` for anything else.
    ``oracle``: see ``StepRecord.from_wire``."""
    if not isinstance(record, dict):
        raise RecordError(f"a rollout record is a map, got {type(record).__name__}")
    version = record.get("v", 1)
    if not isinstance(version, int) or version > RECORD_FORMAT:
        raise RecordError(f"rollout record format {version!r} is newer than this reader ({RECORD_FORMAT})")
    kind = record.get("kind")
    if kind not in _KINDS:
        raise RecordError(f"unknown rollout record kind {kind!r}; known: {', '.join(_KINDS)}")
    return _KINDS[kind].from_wire(record, oracle)
