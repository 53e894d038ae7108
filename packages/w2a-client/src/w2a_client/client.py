"""Client SDK for robot controllers and the trainer: ``PolicyClient`` (sync) and ``AsyncPolicyClient``.

Typed helpers build requests from numpy arrays; every call has a deadline; UNAVAILABLE is retried
with backoff (gRPC channels reconnect by themselves, so a server restart is survived).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from w2a_client.proto.w2a.v1 import policy_pb2 as pb
from w2a_client.proto.w2a.v1 import policy_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # a robot-side client needs no torch: the manifest is only a type here
    from w2a_models.checkpoints import Manifest

RETRYABLE = {grpc.StatusCode.UNAVAILABLE}
CHUNK_BYTES = 1 << 20


@dataclass
class ActionChunk:
    actions: np.ndarray  # [M, A] final
    base: np.ndarray
    residual: np.ndarray
    version: int
    fallback: bool
    fallback_reason: str
    timings: pb.Timings

    @classmethod
    def from_proto(cls, r: pb.ActResponse) -> ActionChunk:
        shape = (r.chunk_size, r.action_dim)
        as_array = lambda values: np.asarray(values, dtype=np.float32).reshape(shape)  # noqa: E731
        return cls(as_array(r.actions), as_array(r.base_actions), as_array(r.residual_actions),
                   r.policy_version, r.fallback, r.fallback_reason, r.timings)


def image_proto(image: np.ndarray, camera: str = "", encoding: str = "raw") -> pb.Image:
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if encoding == "raw":
        h, w, c = image.shape
        return pb.Image(camera=camera, encoding=pb.IMAGE_ENCODING_RAW, data=image.tobytes(),
                        height=h, width=w, channels=c)
    from PIL import Image as PILImage

    buf = io.BytesIO()
    fmt = {"jpeg": "JPEG", "png": "PNG"}[encoding]
    PILImage.fromarray(image).save(buf, format=fmt)
    kind = pb.IMAGE_ENCODING_JPEG if fmt == "JPEG" else pb.IMAGE_ENCODING_PNG
    return pb.Image(camera=camera, encoding=kind, data=buf.getvalue())


def act_request(robot_id: str, images: dict[str, np.ndarray], state: np.ndarray, instruction: str,
                episode_id: str = "", step: int = 0, skill: str = "", base_only: bool = False,
                session_id: str = "", encoding: str = "raw", evaluation: bool = False,
                oracle: pb.SimOracle | None = None) -> pb.ActRequest:
    return pb.ActRequest(
        robot_id=robot_id, session_id=session_id, episode_id=episode_id, step=step,
        observation=pb.Observation(
            images=[image_proto(img, cam, encoding) for cam, img in images.items()],
            state=np.asarray(state, dtype=np.float32).ravel().tolist()),
        instruction=instruction, skill=skill, client_time=time.time(), base_only=base_only,
        evaluation=evaluation, oracle=oracle)


def episode_end_request(robot_id: str, episode_id: str, step: int, success: bool,
                        session_id: str = "", evaluation: bool = False) -> pb.ActRequest:
    return pb.ActRequest(robot_id=robot_id, session_id=session_id, episode_id=episode_id,
                         step=step, episode_end=True, success=success, client_time=time.time(),
                         evaluation=evaluation)


def weight_chunks(blob: bytes, manifest: Manifest, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.WeightChunk]:
    yield pb.WeightChunk(manifest=pb.WeightManifest(
        version=int(manifest.version), parent_version=int(manifest.parent_version or 0),
        sha256=manifest.sha256, byte_length=manifest.byte_length,
        tensors=[pb.TensorSpec(name=n, shape=s, dtype="F32") for n, s in manifest.tensors.items()],
        config_json=json.dumps(manifest.config)))
    for start in range(0, len(blob), chunk_bytes):
        yield pb.WeightChunk(data=blob[start : start + chunk_bytes])


def _open_channel(grpc_module, target: str, root_certificates: bytes | None, max_message_bytes: int):
    """A channel from ``grpc`` or ``grpc.aio``: TLS when root certificates are given."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    if root_certificates is None:
        return grpc_module.insecure_channel(target, options=options)
    creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return grpc_module.secure_channel(target, creds, options=options)


def _auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class PolicyClient:
    """Blocking client. ``token`` is sent as ``authorization: Bearer <token>``."""

    def __init__(self, target: str, token: str = "", timeout: float = 5.0, retries: int = 3,
                 root_certificates: bytes | None = None, max_message_bytes: int = 8 << 20) -> None:
        self.timeout = timeout
        self.retries = retries
        self.metadata = _auth_metadata(token)
        self.channel = _open_channel(grpc, target, root_certificates, max_message_bytes)
        self.stub = pb_grpc.PolicyServiceStub(self.channel)

    def _call(self, fn, request, timeout: float | None = None):
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return fn(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def info(self) -> pb.PolicyInfo:
        return self._call(self.stub.GetInfo, pb.GetInfoRequest())

    def act(self, robot_id: str, images: dict[str, np.ndarray], state: np.ndarray,
            instruction: str, **kwargs) -> ActionChunk:
        return ActionChunk.from_proto(self._call(self.stub.Act, act_request(
            robot_id, images, state, instruction, **kwargs)))

    def end_episode(self, robot_id: str, episode_id: str, step: int, success: bool) -> None:
        self._call(self.stub.Act, episode_end_request(robot_id, episode_id, step, success))

    def stream(self, requests: Iterable[pb.ActRequest], timeout: float | None = None
               ) -> Iterator[pb.ActResponse]:
        """Bidirectional StreamAct (one robot session); not retried mid-stream."""
        return self.stub.StreamAct(iter(requests), timeout=timeout, metadata=self.metadata)

    def push_residual(self, blob: bytes, manifest: Manifest, timeout: float = 60.0) -> pb.UpdateResult:
        # a client stream cannot be replayed after partial consumption: no retry here
        return self.stub.UpdateResidual(weight_chunks(blob, manifest), timeout=timeout,
                                        metadata=self.metadata)

    def rollback(self, version: int = 0) -> pb.RollbackResult:
        return self._call(self.stub.Rollback, pb.RollbackRequest(version=version))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncPolicyClient:
    """asyncio client with the same helpers as :class:`PolicyClient`."""

    def __init__(self, target: str, token: str = "", timeout: float = 5.0, retries: int = 3,
                 root_certificates: bytes | None = None, max_message_bytes: int = 8 << 20) -> None:
        self.timeout = timeout
        self.retries = retries
        self.metadata = _auth_metadata(token)
        self.channel = _open_channel(grpc.aio, target, root_certificates, max_message_bytes)
        self.stub = pb_grpc.PolicyServiceStub(self.channel)

    async def _call(self, fn, request):
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return await fn(request, timeout=self.timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def info(self) -> pb.PolicyInfo:
        return await self._call(self.stub.GetInfo, pb.GetInfoRequest())

    async def act(self, robot_id: str, images: dict[str, np.ndarray], state: np.ndarray,
                  instruction: str, **kwargs) -> ActionChunk:
        return ActionChunk.from_proto(await self._call(self.stub.Act, act_request(
            robot_id, images, state, instruction, **kwargs)))

    async def act_request(self, request: pb.ActRequest) -> pb.ActResponse:
        return await self._call(self.stub.Act, request)

    def stream(self, requests=None) -> grpc.aio.StreamStreamCall:
        """One robot session on StreamAct: pass an (async) iterator of requests, or none and
        ``write()``/``read()`` the returned call step by step."""
        return self.stub.StreamAct(requests, metadata=self.metadata)

    async def push_residual(self, blob: bytes, manifest: Manifest, timeout: float = 60.0) -> pb.UpdateResult:
        return await self.stub.UpdateResidual(weight_chunks(blob, manifest), timeout=timeout,
                                              metadata=self.metadata)

    async def close(self) -> None:
        await self.channel.close()
