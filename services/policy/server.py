"""The gRPC policy server (grpc.aio): Act, StreamAct, GetInfo, UpdateResidual, Rollback.

Also serves the standard gRPC health service and server reflection. Bad requests get
INVALID_ARGUMENT naming the field; nothing a client sends can crash the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.rollout_log import RolloutLogger
from services.policy.auth import Authenticator, Role
from services.policy.engine import BatchConfig, PolicyEngine
from services.policy.metrics import PolicyMetrics
from services.policy.observation import parse_request
from services.policy.reflection import enable_reflection
from services.policy.safety import SafetyConfig
from services.policy.service import InvalidRequest, PolicyService
from services.policy.settings import PolicySettings
from services.policy.weights import ResidualShape, ResidualStore, WeightRejected
from w2a_client.proto.w2a.v1 import policy_pb2 as pb
from w2a_client.proto.w2a.v1 import policy_pb2_grpc as pb_grpc
from w2a_models.base_policy import BasePolicy, BaseUnavailable
from w2a_models.checkpoints import Manifest

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
# What GetInfo tells a client that knows the service only by reflection (no proto comments there)
CONVENTIONS = (
    "Image RAW: uint8 bytes, row-major [height, width, channels], channels = 3 (RGB), base64 in "
    "JSON; JPEG/PNG: the encoded file bytes (height/width/channels may be left 0). "
    "observation.state: state_dim floats. ActResponse.actions (and base_actions, "
    "residual_actions): flat chunk_size x action_dim floats, row-major (step by step), each in "
    "[limits.action_low, limits.action_high]. Auth: metadata 'authorization: Bearer <token>' "
    "(robot token for Act/StreamAct).")


def _floats(array: np.ndarray) -> list[float]:
    return array.astype(np.float32).ravel().tolist()


class PolicyServicer(pb_grpc.PolicyServiceServicer):
    """gRPC adapter: acting goes to the shared ``PolicyService``; weights, info and rollback here."""

    def __init__(self, settings: PolicySettings, service: PolicyService, store: ResidualStore,
                 auth: Authenticator, swap_lock: asyncio.Lock, serves_acting: bool = True,
                 serves_weights: bool = True) -> None:
        self.settings = settings
        self.serves_acting, self.serves_weights = serves_acting, serves_weights
        self.service = service
        self.base, self.engine, self.metrics = service.base, service.engine, service.metrics
        self.store = store
        self.auth = auth
        self._swap_lock = swap_lock  # one for both ports: pushes and rollbacks never interleave

    # -- acting --------------------------------------------------------------------------------

    async def _act_one(self, request: pb.ActRequest, context, method: str) -> pb.ActResponse:
        """The gRPC adapter of ``PolicyService.act``: wire -> step, domain errors -> status codes."""
        received = time.perf_counter()
        size = request.ByteSize()
        try:
            if size > self.settings.max_message_bytes:
                self.metrics.rejected.labels("INVALID_ARGUMENT").inc()
                raise InvalidRequest("request", f"{size} bytes, over the {self.settings.max_message_bytes}"
                                                "-byte limit (W2A_POLICY_MAX_MESSAGE_BYTES)")
            if request.episode_end:
                self.service.end_episode(request.robot_id, request.episode_id, request.step, request.success,
                                         request.session_id, request.evaluation)
                return pb.ActResponse(step=request.step, episode_ended=True)
            try:
                step = parse_request(request, self.base.spec, received)
            except InvalidRequest:
                self.metrics.rejected.labels("INVALID_ARGUMENT").inc()
                raise
            out = await self.service.act(step, method)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BaseUnavailable as exc:  # a remote base is down or slow: say so, never make up an action
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"base policy unavailable: {exc}")
        spec = self.base.spec
        return pb.ActResponse(
            chunk_size=spec.chunk_size, action_dim=spec.action_dim,
            actions=_floats(out.final), base_actions=_floats(out.base),
            residual_actions=_floats(out.residual), policy_version=out.version,
            fallback=out.fallback, fallback_reason=out.fallback_reason,
            timings=pb.Timings(queue_ms=out.queue_ms, base_ms=out.base_ms,
                               residual_ms=out.residual_ms, server_ms=out.server_ms,
                               batch_size=out.batch_size),
            step=request.step, base_only=request.base_only,
        )

    async def _reject(self, context, message: str) -> None:
        self.metrics.rejected.labels("INVALID_ARGUMENT").inc()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    async def _require_port(self, context, weights: bool) -> None:
        if weights and not self.serves_weights:
            await self.auth.deny(context, grpc.StatusCode.PERMISSION_DENIED,
                                 "weights are accepted on the admin port only (W2A_POLICY_ADMIN_PORT)")
        if not weights and not self.serves_acting:
            await self.auth.deny(context, grpc.StatusCode.PERMISSION_DENIED,
                                 "this is the admin port: robots act on the main port")

    async def Act(self, request, context):
        await self._require_port(context, weights=False)
        await self.auth.require(context, Role.ROBOT)
        return await self._act_one(request, context, "Act")

    async def StreamAct(self, request_iterator, context):
        await self._require_port(context, weights=False)
        await self.auth.require(context, Role.ROBOT)
        async for request in request_iterator:
            yield await self._act_one(request, context, "StreamAct")

    async def GetInfo(self, request, context):
        await self.auth.require(context, None)  # read-only: robots and the trainer
        spec, s = self.base.spec, self.settings
        return pb.PolicyInfo(
            action_dim=spec.action_dim, chunk_size=spec.chunk_size, state_dim=spec.state_dim,
            cameras=[pb.CameraInfo(name=c.name, height=c.height, width=c.width) for c in spec.cameras],
            base_policy=spec.name, residual_version=self.engine.slot.version,
            kept_versions=self.store.versions(),
            limits=pb.Limits(max_message_bytes=s.max_message_bytes,
                             max_instruction_chars=s.max_instruction_chars,
                             action_low=s.action_low, action_high=s.action_high,
                             residual_max_norm=s.residual_max_norm, max_batch=s.max_batch,
                             max_wait_ms=s.max_wait_ms),
            conventions=CONVENTIONS,
        )

    # -- weights -------------------------------------------------------------------------------

    async def UpdateResidual(self, request_iterator, context):
        await self._require_port(context, weights=True)
        await self.auth.require(context, Role.TRAINER)
        started = time.perf_counter()
        manifest_pb, parts, size = None, [], 0
        async for chunk in request_iterator:
            kind = chunk.WhichOneof("payload")
            if manifest_pb is None:
                if kind != "manifest":
                    await self._reject(context, "first message must carry the manifest")
                manifest_pb = chunk.manifest
                if manifest_pb.byte_length > self.settings.max_weight_bytes:
                    await self._reject(context, f"manifest.byte_length exceeds "
                                                f"{self.settings.max_weight_bytes} bytes")
                continue
            if kind != "data":
                await self._reject(context, "only one manifest per push")
            size += len(chunk.data)
            if size > manifest_pb.byte_length:
                await self._reject(context, "more bytes than manifest.byte_length")
            parts.append(chunk.data)
        if manifest_pb is None:
            await self._reject(context, "empty push: no manifest")
        try:
            config = json.loads(manifest_pb.config_json or "{}")
        except json.JSONDecodeError as exc:
            await self._reject(context, f"manifest.config_json: not JSON ({exc})")
        manifest = Manifest(
            version=str(manifest_pb.version),
            parent_version=str(manifest_pb.parent_version) if manifest_pb.parent_version else None,
            sha256=manifest_pb.sha256, byte_length=manifest_pb.byte_length,
            tensors={t.name: list(t.shape) for t in manifest_pb.tensors}, config=config,
        )
        async with self._swap_lock:
            previous = self.engine.slot.version
            try:
                # verification and the disk write run off the event loop: acting continues
                slot = await asyncio.to_thread(self.store.accept, manifest, b"".join(parts))
            except WeightRejected as exc:
                self.metrics.rejected.labels("WEIGHT_REJECTED").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"residual rejected: {exc}")
            self.engine.swap(slot)
            self.metrics.version.set(slot.version)
        log.info("residual v%d live (was v%d)", slot.version, previous)
        return pb.UpdateResult(accepted=True, version=slot.version, previous_version=previous,
                               message="accepted", load_ms=(time.perf_counter() - started) * 1e3)

    async def Rollback(self, request, context):
        await self._require_port(context, weights=True)
        await self.auth.require(context, Role.TRAINER)
        async with self._swap_lock:
            previous = self.engine.slot.version
            try:
                slot = await asyncio.to_thread(self.store.rollback, request.version, previous)
            except WeightRejected as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            self.engine.swap(slot)
            self.metrics.version.set(slot.version)
        log.info("rolled back to residual v%d (was v%d)", slot.version, previous)
        return pb.RollbackResult(version=slot.version, previous_version=previous)


class PolicyServer:
    """Owns the grpc.aio server, the engine, the rollout logger and the metrics endpoint."""

    def __init__(self, settings: PolicySettings, base: BasePolicy, rollouts: RolloutLogger | None = None):
        self.settings = settings
        self.base = base
        spec = base.spec
        if settings.action_low is None:  # unset: [-1, 1] per element of this base's action
            settings = settings.model_copy(update={"action_low": [-1.0] * spec.action_dim,
                                                   "action_high": [1.0] * spec.action_dim})
            self.settings = settings
        if len(settings.action_low) != spec.action_dim:
            raise ValueError(f"action bounds have {len(settings.action_low)} entries but the base "
                             f"policy's action_dim is {spec.action_dim}")
        self.store = ResidualStore(Path(settings.state_dir) / "residuals",
                                   ResidualShape(spec.feature_dim, spec.action_dim, spec.chunk_size),
                                   keep=settings.keep_versions)
        self.metrics = PolicyMetrics()
        self.engine = PolicyEngine(
            base, SafetyConfig(tuple(settings.action_low), tuple(settings.action_high),
                               settings.residual_max_norm),
            BatchConfig(settings.max_batch, settings.max_wait_ms), self.store.restore())
        self.engine.on_batch = self.metrics.on_batch
        self.metrics.version.set(self.engine.slot.version)
        self.rollouts = rollouts
        if rollouts is not None:
            rollouts.on_change = self.metrics.on_logger
        self.service = PolicyService(settings, base, self.engine, self.metrics, rollouts)
        self._swap_lock = asyncio.Lock()
        self.auth = Authenticator(settings.auth_enabled, settings.robot_tokens, settings.trainer_token,
                                  rejected=self.metrics.rejected)
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.admin_server: grpc.aio.Server | None = None  # UpdateResidual/Rollback, when on their own port
        self.admin_port: int | None = None
        self.servicer: PolicyServicer | None = None
        self.openpi = None  # the openpi-compatible websocket endpoint, when W2A_POLICY_OPENPI_PORT is set
        self._metrics_http = None

    def _grpc_server(self, options, port: int, acting: bool, weights: bool) -> tuple[grpc.aio.Server, int]:
        s = self.settings
        server = grpc.aio.server(options=options)
        servicer = PolicyServicer(s, self.service, self.store, self.auth, self._swap_lock,
                                  serves_acting=acting, serves_weights=weights)
        pb_grpc.add_PolicyServiceServicer_to_server(servicer, server)
        if acting:
            self.servicer = servicer
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection(server, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
        address = f"{s.host}:{port}"
        if s.tls_cert is not None:
            creds = grpc.ssl_server_credentials([(Path(s.tls_key).read_bytes(),
                                                  Path(s.tls_cert).read_bytes())])
            return server, server.add_secure_port(address, creds)
        return server, server.add_insecure_port(address)

    async def start(self) -> int:
        s = self.settings
        # The transport admits up to twice the limit so that a moderately oversize request gets
        # INVALID_ARGUMENT with the numbers from us; beyond that gRPC answers RESOURCE_EXHAUSTED.
        options = [("grpc.max_receive_message_length", 2 * s.max_message_bytes),
                   ("grpc.max_send_message_length", s.max_message_bytes)]
        separate_admin = s.admin_port is not None
        self.server, self.port = self._grpc_server(options, s.port, acting=True, weights=not separate_admin)
        if separate_admin:
            self.admin_server, self.admin_port = self._grpc_server(options, s.admin_port, acting=False,
                                                                   weights=True)
        await self.engine.start()
        if self.rollouts is not None:
            self.rollouts.start()
        await self.server.start()
        if self.admin_server is not None:
            await self.admin_server.start()
        if s.openpi_port is not None:
            from services.policy.openpi_endpoint import OpenpiEndpoint

            self.openpi = OpenpiEndpoint(self.service, s)
            await self.openpi.start(s.host, s.openpi_port)
        for name in ("", SERVICE_NAME):
            await _maybe_await(self.health.set(name, health_pb2.HealthCheckResponse.SERVING))
        if s.metrics_port:
            self._metrics_http = self.metrics.serve(s.metrics_port, s.host)
        log.info("policy server on %s:%d%s%s (residual v%d)", s.host, self.port,
                 f", weights on admin port {self.admin_port}" if self.admin_server else "",
                 f", openpi websocket on {self.openpi.port}" if self.openpi else "",
                 self.engine.slot.version)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, drain in-flight requests, finish queued batches, flush rollouts."""
        for name in ("", SERVICE_NAME):
            await _maybe_await(self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING))
        if self.server is not None:
            await self.server.stop(grace)
        if self.admin_server is not None:
            await self.admin_server.stop(grace)
        if self.openpi is not None:
            await self.openpi.stop()
        await self.engine.stop()
        if self.rollouts is not None:
            await asyncio.to_thread(self.rollouts.stop)
        if self._metrics_http is not None:
            server, thread = self._metrics_http
            server.shutdown()
            thread.join(timeout=2)

    async def serve_until_signal(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: draining and shutting down")
        await self.stop()


async def _maybe_await(value):
    if asyncio.iscoroutine(value):
        await value
