"""Acting without a transport: check a robot's step, run base + residual, smooth, log the record.

``PolicyService.act`` is what the gRPC servicer (``server.PolicyServicer``) and the openpi
websocket endpoint (``openpi_endpoint``) both call; each is a thin adapter that turns its wire
format into a ``RobotStep`` and this module's errors into its own status: ``InvalidRequest`` is
the robot's fault (gRPC INVALID_ARGUMENT, an openpi text frame), ``BaseUnavailable`` a remote base
that is down or slow (gRPC UNAVAILABLE) — never a made-up action.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from services.common.rollout_log import RolloutLogger, logged_image_entry
from services.common.rollout_record import EpisodeEnd, StepRecord
from services.policy.engine import PolicyEngine, StepInput, StepOutput
from services.policy.metrics import PolicyMetrics
from services.policy.sessions import SessionTable
from services.policy.settings import PolicySettings
from w2a_models.base_policy import BasePolicy, BaseUnavailable

__all__ = ["BaseUnavailable", "InvalidRequest", "PolicyService", "RobotStep"]


class InvalidRequest(ValueError):
    """A request the robot must fix; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class RobotStep:
    """One step as a robot shows it, decoded from whatever transport carried it."""

    robot_id: str
    episode_id: str
    step: int
    instruction: str
    images: dict[str, np.ndarray]  # camera -> uint8 [H, W, 3]
    state: np.ndarray  # [S]
    skill: str = ""  # the planner's current skill (logged for the trainer; the base sees the instruction)
    session_id: str = ""
    base_only: bool = False  # A/B evaluation: the frozen base alone
    evaluation: bool = False  # logged, never trained on
    client_time: float = 0.0
    sent: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # camera -> (encoding, bytes) as sent
    oracle: dict[str, np.ndarray] = field(default_factory=dict)  # simulation only: StepRecord oracle fields
    received: float = field(default_factory=time.perf_counter)  # when the transport had the request


class PolicyService:
    """The acting core: validation, the micro-batching engine, per-robot smoothing, logging."""

    def __init__(self, settings: PolicySettings, base: BasePolicy, engine: PolicyEngine,
                 metrics: PolicyMetrics, rollouts: RolloutLogger | None = None) -> None:
        self.settings, self.base, self.engine = settings, base, engine
        self.metrics, self.rollouts = metrics, rollouts
        self.sessions = SessionTable(settings.smooth_steps)

    async def act(self, step: RobotStep, method: str) -> StepOutput:
        """Answer one step; ``method`` labels the latency metric (Act, StreamAct, openpi)."""
        try:
            engine_input = self._check(step)
        except InvalidRequest:
            self.metrics.rejected.labels("INVALID_ARGUMENT").inc()
            raise
        try:
            out = await self.engine.act(engine_input)
        except BaseUnavailable:
            self.metrics.rejected.labels("UNAVAILABLE").inc()
            raise
        out.final = self.sessions.apply(step.robot_id, step.episode_id, out.final)
        out.server_ms = (time.perf_counter() - step.received) * 1e3
        self.metrics.latency.labels(method).observe(out.server_ms / 1e3)
        self._log_step(step, out, out.server_ms)
        return out

    def end_episode(self, robot_id: str, episode_id: str, step: int, success: bool, session_id: str = "",
                    evaluation: bool = False) -> None:
        if not robot_id:
            self.metrics.rejected.labels("INVALID_ARGUMENT").inc()
            raise InvalidRequest("robot_id", "must not be empty")
        if self.rollouts is not None:
            self.rollouts.log(EpisodeEnd(robot_id=robot_id, episode_id=episode_id, step=step, success=success,
                                         session_id=session_id, evaluation=evaluation,
                                         server_time=time.time()).to_wire())
        self.sessions.end(robot_id)

    def _check(self, step: RobotStep) -> StepInput:
        spec, s = self.base.spec, self.settings
        if not step.robot_id:
            raise InvalidRequest("robot_id", "must not be empty")
        instruction = step.instruction.strip()
        if not instruction:
            raise InvalidRequest("instruction", "must not be empty")
        if len(step.instruction) > s.max_instruction_chars:
            raise InvalidRequest("instruction", f"longer than {s.max_instruction_chars} characters")
        if len(step.skill) > s.max_instruction_chars:
            raise InvalidRequest("skill", f"longer than {s.max_instruction_chars} characters")
        state = np.asarray(step.state, dtype=np.float32).ravel()
        if state.shape != (spec.state_dim,):
            raise InvalidRequest("observation.state", f"has {state.size} values, expected {spec.state_dim}")
        if not np.all(np.isfinite(state)):
            raise InvalidRequest("observation.state", "contains NaN or Inf")
        for cam in spec.cameras:
            image = step.images.get(cam.name)
            if image is None:
                raise InvalidRequest("observation.images", f"missing camera {cam.name!r}")
            if image.shape != (cam.height, cam.width, 3) or image.dtype != np.uint8:
                raise InvalidRequest("observation.images", f"{cam.name!r} is {image.dtype} {image.shape}, "
                                                           f"expected uint8 ({cam.height}, {cam.width}, 3)")
        # The base sees the task instruction only (that is what it was trained on); the current
        # skill is logged with the step for the trainer.
        return StepInput(images={c.name: step.images[c.name] for c in spec.cameras}, state=state,
                         instruction=instruction, base_only=step.base_only, sent=step.sent)

    def _log_step(self, step: RobotStep, out: StepOutput, server_ms: float) -> None:
        if self.rollouts is None:
            return
        images = {}
        if self.settings.log_images:  # see services.common.rollout_log.logged_image
            images = {c.name: logged_image_entry(step.images[c.name], step.sent.get(c.name))
                      for c in self.base.spec.cameras}
        record = StepRecord(
            robot_id=step.robot_id, episode_id=step.episode_id, step=step.step, session_id=step.session_id,
            instruction=step.instruction, skill=step.skill, base_only=step.base_only, evaluation=step.evaluation,
            policy_version=out.version, fallback=out.fallback, state=np.asarray(step.state, np.float32).ravel(),
            base=out.base, residual=out.residual, final=out.final,
            # the trainer recomputes the residual from these with its current weights (Stage 2)
            features=out.features, images=images, client_time=step.client_time, server_time=time.time(),
            server_ms=server_ms,
            **step.oracle,  # simulation only; read by the trainer's oracle modes alone
        )
        self.rollouts.log(record.to_wire())
