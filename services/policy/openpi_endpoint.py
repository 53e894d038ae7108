"""An openpi-compatible websocket endpoint on the policy server.

Robot controllers written against openpi (``openpi_client.WebsocketClientPolicy``) connect
unchanged: on connect the server sends its metadata as one msgpack-numpy frame; then every
binary frame from the client is an observation dict and every reply an action dict
(``{"actions": [M, A] float32, ...}``); a text frame is an error (the openpi client raises it).
``GET /healthz`` answers 200. Unlike openpi's own server, connections are served concurrently and
each step goes through the same path as gRPC: parsing, micro-batching with gRPC requests, the
residual, safety, sessions and rollout logging.

Observation keys are mapped by settings (``W2A_POLICY_OPENPI_*``): image keys → camera names,
the state key, the prompt key; optional ``robot_id`` / ``episode_id`` / ``step`` / ``skill`` /
``base_only`` / ``episode_end`` / ``success`` keys are honoured. Images may be HWC or CHW, uint8 or
float in [0, 1], of any size (resized to the served camera size). Auth: openpi's client sends
``Authorization: Api-Key <key>``; the key must be a robot token.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import time
from http import HTTPStatus

import msgpack
import numpy as np
from PIL import Image as PILImage

from services.policy.service import BaseUnavailable, InvalidRequest, PolicyService, RobotStep

log = logging.getLogger(__name__)
NUMERIC_KINDS = set("biuf")


class OpenpiRequestError(ValueError):
    """An observation the endpoint cannot turn into a request; sent back as a text frame."""


def _pack_array(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in NUMERIC_KINDS:
            raise TypeError(f"unsupported dtype {obj.dtype}")
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_array(obj):
    """msgpack-numpy, numeric dtypes only: a frame can never build object arrays or run code."""
    if b"__ndarray__" in obj or b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind not in NUMERIC_KINDS:
            raise OpenpiRequestError(f"array dtype {dtype} is not numeric")
        if b"__npgeneric__" in obj:
            return dtype.type(obj[b"data"])
        shape = tuple(int(d) for d in obj[b"shape"])
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(obj[b"data"]):
            raise OpenpiRequestError(f"array of shape {shape} and dtype {dtype} does not match its bytes")
        return np.frombuffer(obj[b"data"], dtype=dtype).reshape(shape)
    return obj


def packb(obj) -> bytes:
    return msgpack.packb(obj, default=_pack_array)


def unpackb(data: bytes):
    return msgpack.unpackb(data, object_hook=_unpack_array, strict_map_key=False)


def to_hwc_uint8(image: np.ndarray, size: tuple[int, int], key: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise OpenpiRequestError(f"{key}: image must have 3 dimensions, got shape {image.shape}")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = np.transpose(image, (1, 2, 0))  # CHW -> HWC
    if image.shape[-1] != 3:
        raise OpenpiRequestError(f"{key}: image must be HxWx3 or 3xHxW, got shape {image.shape}")
    if image.dtype.kind == "f":
        if not np.all(np.isfinite(image)):
            raise OpenpiRequestError(f"{key}: image contains NaN or Inf")
        image = np.clip(image * 255.0 if image.max() <= 1.0 else image, 0, 255)
    image = image.astype(np.uint8)
    h, w = size
    if image.shape[:2] != (h, w):
        image = np.asarray(PILImage.fromarray(image).resize((w, h), PILImage.BILINEAR))
    return image


class OpenpiEndpoint:
    """Websocket adapter of ``PolicyService``: msgpack-numpy frames in, action dicts out."""

    def __init__(self, service: PolicyService, settings) -> None:
        self.service = service
        self.settings = settings
        spec = service.base.spec
        self.cameras = {c.name: (c.height, c.width) for c in spec.cameras}
        self.server = None
        self.port: int | None = None
        self._ids = itertools.count(1)
        self.connections = 0

    # -- connection handling -------------------------------------------------------------------

    def metadata(self) -> dict:
        spec = self.service.base.spec
        return {"server": "w2a", "base_policy": spec.name, "action_dim": spec.action_dim,
                "action_horizon": spec.chunk_size, "state_dim": spec.state_dim,
                "cameras": {k: list(v) for k, v in self.cameras.items()},
                "image_keys": dict(self.settings.openpi_image_keys),
                "state_key": self.settings.openpi_state_key, "prompt_key": self.settings.openpi_prompt_key,
                "residual_version": self.service.engine.slot.version}

    def _authorised(self, headers) -> bool:
        if not self.settings.auth_enabled:
            return True
        value = headers.get("Authorization", "") or ""
        scheme, _, key = value.partition(" ")
        if scheme.lower() not in ("api-key", "bearer") or not key:
            return False
        return any(hmac.compare_digest(key.strip().encode(), t.encode()) for t in self.settings.robot_tokens)

    def _process_request(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if not self._authorised(request.headers):
            return connection.respond(HTTPStatus.UNAUTHORIZED,
                                      "a robot token is required: 'Authorization: Api-Key <token>'\n")
        return None

    async def _handler(self, websocket) -> None:
        conn_id = next(self._ids)
        self.connections += 1
        step = itertools.count()
        await websocket.send(packb(self.metadata()))
        try:
            async for frame in websocket:
                reply = await self.infer(frame, conn_id, step)
                await websocket.send(reply)
        except Exception as exc:  # noqa: BLE001 - a broken connection must not touch others
            if exc.__class__.__name__ not in ("ConnectionClosedOK", "ConnectionClosedError"):
                log.warning("openpi connection %d: %s", conn_id, exc)
        finally:
            self.connections -= 1

    async def infer(self, frame, conn_id: int, step) -> bytes | str:
        started = time.perf_counter()
        try:
            if isinstance(frame, str):
                raise OpenpiRequestError("observations are binary msgpack frames, got text")
            if len(frame) > self.settings.max_message_bytes:
                raise OpenpiRequestError(f"frame of {len(frame)} bytes is over the "
                                         f"{self.settings.max_message_bytes}-byte limit")
            try:
                obs = unpackb(frame)
            except OpenpiRequestError:
                raise
            except Exception as exc:  # noqa: BLE001 - any undecodable frame is the client's error
                raise OpenpiRequestError(f"frame is not msgpack-numpy ({type(exc).__name__})") from None
            if not isinstance(obs, dict):
                raise OpenpiRequestError("observation must be a map")
            robot_step = self.to_step(obs, conn_id, next(step), started)
            if robot_step is None:
                return packb({"episode_ended": True})
            out = await self.service.act(robot_step, "openpi")
        except OpenpiRequestError as exc:
            return f"invalid observation: {exc}"
        except InvalidRequest as exc:
            return f"INVALID_ARGUMENT: {exc}"
        except BaseUnavailable as exc:
            return f"UNAVAILABLE: base policy unavailable: {exc}"
        return packb({"actions": out.final.astype(np.float32), "base_actions": out.base.astype(np.float32),
                      "residual_actions": out.residual.astype(np.float32),
                      "policy_version": int(out.version), "fallback": bool(out.fallback),
                      "server_timing": {"infer_ms": (time.perf_counter() - started) * 1e3,
                                        "server_ms": out.server_ms}})

    def to_step(self, obs: dict, conn_id: int, step: int, received: float) -> RobotStep | None:
        """An openpi observation as a step; an ``episode_end`` frame ends the episode (None)."""
        s = self.settings

        def text(key: str, default: str = "") -> str:
            value = obs.get(key, default)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if not isinstance(value, str):
                raise OpenpiRequestError(f"{key}: must be a string")
            return value

        robot_id = text("robot_id", f"openpi-{conn_id}") or f"openpi-{conn_id}"
        episode_id = text("episode_id", f"conn-{conn_id}")
        if obs.get("episode_end"):
            self.service.end_episode(robot_id, episode_id, int(obs.get("step", step)),
                                     bool(obs.get("success", False)), evaluation=bool(obs.get("evaluation", False)))
            return None
        images = {}
        for key, camera in s.openpi_image_keys.items():
            if key not in obs:
                raise OpenpiRequestError(f"missing image key {key!r} (W2A_POLICY_OPENPI_IMAGE_KEYS)")
            if camera not in self.cameras:
                raise OpenpiRequestError(f"image key {key!r} maps to unknown camera {camera!r}")
            images[camera] = to_hwc_uint8(obs[key], self.cameras[camera], key)
        if s.openpi_state_key not in obs:
            raise OpenpiRequestError(f"missing state key {s.openpi_state_key!r} (W2A_POLICY_OPENPI_STATE_KEY)")
        state = np.asarray(obs[s.openpi_state_key])
        if state.dtype.kind not in NUMERIC_KINDS:
            raise OpenpiRequestError(f"{s.openpi_state_key}: must be numeric")
        return RobotStep(robot_id=robot_id, episode_id=episode_id, step=int(obs.get("step", step)),
                         instruction=text(s.openpi_prompt_key), images=images,
                         state=state.astype(np.float32).ravel(), skill=text("skill"), client_time=time.time(),
                         base_only=bool(obs.get("base_only", False)), evaluation=bool(obs.get("evaluation", False)),
                         received=received)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        from websockets.asyncio.server import serve

        self.server = await serve(self._handler, host, port, compression=None,
                                  max_size=self.settings.max_message_bytes * 2,
                                  process_request=self._process_request)
        self.port = next(iter(self.server.sockets)).getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), timeout=5)
