"""A remote GR00T inference server (Isaac-GR00T ``service.py`` protocol) as the frozen base.

Wire: ZeroMQ REQ/REP; each message is msgpack; numpy arrays travel as
``{"__ndarray_class__": True, "as_npy": <np.save bytes>}`` (decoded here with
``allow_pickle=False``); a request is ``{"endpoint": "get_action", "data": obs, "api_token": …}``;
a reply is the action dict or ``{"error": message}``. Observations use GR00T's flat keys:
``video.<camera>`` uint8 [1, H, W, 3], ``state.<part>`` float [1, D] (our state vector is split
into the configured parts, in order), the task text under the language key. The action chunk is
the configured ``action.<part>`` arrays [H, D] concatenated in order.

A REQ socket that timed out cannot be reused, so on any timeout or error it is closed and a new
one is made for the next call (the "lazy pirate" pattern); the robot meanwhile gets UNAVAILABLE.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field

import msgpack
import numpy as np

from services.policy.backends.common import fit_chunk, remote_output, remote_spec
from w2a_models.base_policy import BaseOutput, BaseUnavailable, CameraSpec, ObservationBatch


def _encode(obj):
    if isinstance(obj, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {"__ndarray_class__": True, "as_npy": buf.getvalue()}
    return obj


def _decode(obj):
    if "__ndarray_class__" in obj:
        return np.load(io.BytesIO(obj["as_npy"]), allow_pickle=False)
    return obj


def pack(message: dict) -> bytes:
    return msgpack.packb(message, default=_encode)


def unpack(data: bytes):
    return msgpack.unpackb(data, object_hook=_decode, strict_map_key=False)


@dataclass(frozen=True)
class Gr00tBaseConfig:
    host: str = "127.0.0.1"
    port: int = 5555
    api_token: str | None = None
    cameras: tuple[CameraSpec, ...] = (CameraSpec("corner", 224, 224),)
    video_keys: dict[str, str] = field(default_factory=lambda: {"corner": "video.ego_view"})  # camera -> key
    state_parts: tuple[tuple[str, int], ...] = (("state.single_arm", 7), ("state.gripper", 1))
    language_key: str = "annotation.human.task_description"
    action_parts: tuple[tuple[str, int], ...] = (("action.single_arm", 6), ("action.gripper", 1))
    chunk_size: int = 16
    timeout_ms: int = 2000

    @property
    def state_dim(self) -> int:
        return sum(d for _, d in self.state_parts)

    @property
    def action_dim(self) -> int:
        return sum(d for _, d in self.action_parts)


class Gr00tBase:
    remote = True  # predict() is a network call: the engine never runs it on its event loop

    def __init__(self, config: Gr00tBaseConfig, name: str = "gr00t") -> None:
        import zmq

        self.config = config
        self.spec = remote_spec(name, config)
        self._zmq = zmq
        self._context = zmq.Context.instance()
        self._socket = None
        self._lock = threading.Lock()

    def _open(self):
        zmq = self._zmq
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, self.config.timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self.config.timeout_ms)
        sock.connect(f"tcp://{self.config.host}:{self.config.port}")
        return sock

    def _drop(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def call(self, endpoint: str, data: dict | None = None) -> dict:
        cfg = self.config
        request: dict = {"endpoint": endpoint}
        if data is not None:
            request["data"] = data
        if cfg.api_token:
            request["api_token"] = cfg.api_token
        if self._socket is None:
            self._socket = self._open()
        try:
            self._socket.send(pack(request))
            reply = unpack(self._socket.recv())
        except self._zmq.Again:
            self._drop()
            raise BaseUnavailable(f"GR00T server {cfg.host}:{cfg.port}: no reply within "
                                  f"{cfg.timeout_ms} ms") from None
        except (self._zmq.ZMQError, ValueError, msgpack.UnpackException) as exc:
            self._drop()
            raise BaseUnavailable(f"GR00T server {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}") from None
        if not isinstance(reply, dict):
            raise BaseUnavailable("GR00T server reply is not a map")
        if "error" in reply:
            raise BaseUnavailable(f"GR00T server error: {reply['error']}")
        return reply

    def _observation(self, batch: ObservationBatch, i: int) -> dict:
        cfg = self.config
        obs = {key: batch.images[cam][i][None] for cam, key in cfg.video_keys.items()}
        start = 0
        for key, dim in cfg.state_parts:
            obs[key] = batch.state[i, start : start + dim][None].astype(np.float64)
            start += dim
        obs[cfg.language_key] = [batch.instructions[i]]
        return obs

    def _actions(self, reply: dict) -> np.ndarray:
        cfg = self.config
        parts = []
        for key, dim in cfg.action_parts:
            if key not in reply:
                raise BaseUnavailable(f"GR00T reply has no {key!r} (got {sorted(reply)[:8]})")
            part = np.asarray(reply[key], np.float32)
            part = part.reshape(part.shape[0], -1) if part.ndim != 1 else part[:, None]
            if part.shape[1] != dim or not np.all(np.isfinite(part)):
                raise BaseUnavailable(f"GR00T {key}: shape {part.shape}, expected [H, {dim}] finite")
            parts.append(part)
        return fit_chunk(np.concatenate(parts, axis=1), cfg.chunk_size, cfg.action_dim, "GR00T server")

    def predict(self, batch: ObservationBatch) -> BaseOutput:
        with self._lock:
            rows = [self._actions(self.call("get_action", self._observation(batch, i)))
                    for i in range(len(batch))]
        return remote_output(rows, batch, self.config.cameras)

    def ping(self) -> bool:
        with self._lock:
            return self.call("ping").get("status") == "ok"

    def close(self) -> None:
        self._drop()
