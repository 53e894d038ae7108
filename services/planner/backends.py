"""Planner backends behind one interface, and the errors they raise (mapped to HTTP codes)."""

from __future__ import annotations

from typing import Protocol

from services.planner.schemas import Skill


class PlannerError(RuntimeError):
    status_code = 500


class BackendUnavailable(PlannerError):
    """Not configured or not reachable (HTTP 503)."""

    status_code = 503


class BackendBadOutput(PlannerError):
    """The backend answered, but not with a valid plan, even after retries (HTTP 502)."""

    status_code = 502


class BackendTimeout(PlannerError):
    """The backend did not answer in time, even after retries (HTTP 504)."""

    status_code = 504


class PlannerBackend(Protocol):
    name: str
    model: str

    async def plan(self, instruction: str, task: str | None, max_skills: int) -> list[Skill]:
        ...

    async def ready(self) -> tuple[bool, str]:
        """(reachable, detail) for /readyz."""
        ...
