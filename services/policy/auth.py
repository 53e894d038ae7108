"""Bearer-token auth from gRPC metadata: robot tokens act, the trainer token updates weights."""

from __future__ import annotations

import hmac
import logging
from enum import Enum

import grpc

log = logging.getLogger(__name__)


class Role(str, Enum):  # noqa: UP042 - str mixin kept: roles compare as plain strings
    ROBOT = "robot"
    TRAINER = "trainer"


class Authenticator:
    def __init__(self, enabled: bool, robot_tokens: list[str], trainer_token: str,
                 rejected=None) -> None:
        """``rejected``: a counter labelled by status code (``w2a_policy_rejected_total``)."""
        self.enabled = enabled
        self.rejected = rejected
        self.robot_tokens = [t.encode() for t in robot_tokens]
        self.trainer_token = trainer_token.encode()

    @staticmethod
    def _bearer(metadata) -> bytes | None:
        for key, value in metadata or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                if text.lower().startswith("bearer "):
                    return text[7:].strip().encode()
        return None

    def role_of(self, metadata) -> Role | None:
        token = self._bearer(metadata)
        if token is None:
            return None
        if self.trainer_token and hmac.compare_digest(token, self.trainer_token):
            return Role.TRAINER
        if any(hmac.compare_digest(token, t) for t in self.robot_tokens):
            return Role.ROBOT
        return None

    async def require(self, context: grpc.aio.ServicerContext, role: Role | None) -> None:
        """Abort with UNAUTHENTICATED (no/unknown token) or PERMISSION_DENIED (wrong role).

        ``role=None``: any valid token (read-only calls such as GetInfo).
        """
        if not self.enabled:
            return
        got = self.role_of(context.invocation_metadata())
        if got is None:
            await self.deny(context, grpc.StatusCode.UNAUTHENTICATED,
                            "missing or unknown bearer token (metadata 'authorization: Bearer …')")
        if role is not None and got != role:
            await self.deny(context, grpc.StatusCode.PERMISSION_DENIED,
                            f"a {got.value} token may not call this method; it needs a {role.value} token")

    async def deny(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        """Count, log (peer and reason, never the token) and abort: a brute force or a
        misconfigured robot shows up in metrics and logs."""
        if self.rejected is not None:
            self.rejected.labels(code.name).inc()
        log.warning("denied %s from %s: %s", code.name, context.peer(), message)
        await context.abort(code, message)
