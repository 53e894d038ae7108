"""The planner's FastAPI app: /v1/skill-plans, /v1/skill-alignments, health, readiness, metrics."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from services.common.settings import SharedSettings
from services.planner.backends import PlannerBackend, PlannerError
from services.planner.cache import PlanCache, plan_key
from services.planner.openai_backend import OpenAIBackend
from services.planner.rules import TASK_SKILLS, RulesBackend, decompose, skill_kind
from services.planner.schemas import (
    AlignedPair,
    AlignmentRequest,
    AlignmentResponse,
    ErrorResponse,
    PlanRequest,
    PlanResponse,
    Skill,
)
from services.planner.settings import PlannerSettings
from w2a_models.skills import Segment, align_skills

log = logging.getLogger(__name__)
ERRORS = {422: {"model": ErrorResponse}, 502: {"model": ErrorResponse},
          503: {"model": ErrorResponse}, 504: {"model": ErrorResponse}}


class PlannerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("w2a_planner_requests_total", "Requests", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("w2a_planner_plan_seconds", "Plan latency", ["backend", "cached"],
                                 registry=self.registry)


def _field_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(settings: PlannerSettings | None = None, redis_url: str | None = None,
               backends: dict[str, PlannerBackend] | None = None) -> FastAPI:
    """Build the app. ``redis_url`` (or settings / W2A_REDIS_URL) enables the plan cache."""
    settings = settings or PlannerSettings()
    backends = backends or {"rules": RulesBackend(), "openai": OpenAIBackend(settings)}
    url = redis_url or SharedSettings().redis_for(settings.redis_url)
    cache = PlanCache(url, settings.cache_ttl_s) if (url and settings.cache_enabled) else None
    metrics = PlannerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for backend in backends.values():
            closer = getattr(backend, "aclose", None)
            if closer is not None:
                await closer()
        if cache is not None:
            await cache.aclose()

    app = FastAPI(title="w2a skill planner", version="1", lifespan=lifespan,
                  description="Decomposes instructions into atomic skills and aligns them to demo segments.")
    app.state.settings, app.state.cache, app.state.backends = settings, cache, backends

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        metrics.requests.labels(request.url.path, "422").inc()
        return JSONResponse(status_code=422, content={"detail": _field_message(exc)})

    @app.exception_handler(PlannerError)
    async def _planner_error(request: Request, exc: PlannerError):
        metrics.requests.labels(request.url.path, str(exc.status_code)).inc()
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)})

    def _validate_limits(instruction: str | None, max_skills: int) -> None:
        if instruction is not None and len(instruction) > settings.max_instruction_chars:
            raise RequestValidationError([{"loc": ("body", "instruction"), "type": "too_long",
                                           "msg": f"longer than {settings.max_instruction_chars} characters"}])
        if max_skills > settings.max_skills_limit:
            raise RequestValidationError([{"loc": ("body", "max_skills"), "type": "too_big",
                                           "msg": f"at most {settings.max_skills_limit}"}])

    async def plan_skills(instruction: str, task: str | None, max_skills: int,
                          backend_name: str | None) -> PlanResponse:
        """Plan up to the server's limit, then cut to ``max_skills`` and say so: a silently
        shortened plan would hand a robot the first skills of a task as if they were all."""
        full = await _plan_full(instruction, task, backend_name)
        skills = full.skills[:max_skills]
        warnings = [] if task is None or task in TASK_SKILLS else [
            f"unknown task {task!r} ignored (known: {', '.join(sorted(TASK_SKILLS))}); "
            "planned from the instruction"]
        return full.model_copy(update={"skills": skills, "truncated": len(full.skills) > max_skills,
                                       "total_skills": len(full.skills), "warnings": warnings})

    async def _plan_full(instruction: str, task: str | None, backend_name: str | None) -> PlanResponse:
        max_skills = settings.max_skills_limit
        name = backend_name or settings.default_backend
        backend = backends[name]
        key = plan_key(name, backend.model, instruction, task, max_skills)
        start = time.perf_counter()
        if cache is not None:
            try:
                hit = await cache.get(key)
            except Exception as exc:  # noqa: BLE001 - a cache outage must not take planning down
                log.warning("plan cache unavailable: %s", exc)
                hit = None
            if hit is not None:
                metrics.latency.labels(name, "true").observe(time.perf_counter() - start)
                return PlanResponse(plan_id=key.rsplit(":", 1)[-1][:16], skills=hit, backend=name,
                                    model=backend.model, cached=True)
        try:
            skills = await backend.plan(instruction, task, max_skills)
        except PlannerError as exc:
            if not settings.fallback_to_rules or name == "rules":
                raise
            log.warning("%s backend failed (%s); answering from rules", name, exc)
            name, skills = "rules", decompose(instruction, task, max_skills)
            backend = backends["rules"]
        if cache is not None and name == (backend_name or settings.default_backend):
            try:
                await cache.put(key, skills)
            except Exception as exc:  # noqa: BLE001 - the plan is served even if it is not cached
                log.warning("plan cache unavailable: %s", exc)
        metrics.latency.labels(name, "false").observe(time.perf_counter() - start)
        return PlanResponse(plan_id=key.rsplit(":", 1)[-1][:16], skills=skills, backend=name,
                            model=backend.model, cached=False)

    @app.post("/v1/skill-plans", response_model=PlanResponse, responses=ERRORS)
    async def skill_plans(request: PlanRequest) -> PlanResponse:
        """Split an instruction into ordered atomic skills."""
        _validate_limits(request.instruction, request.max_skills)
        response = await plan_skills(request.instruction, request.task, request.max_skills, request.backend)
        metrics.requests.labels("/v1/skill-plans", "200").inc()
        return response

    @app.post("/v1/skill-alignments", response_model=AlignmentResponse, responses=ERRORS)
    async def skill_alignments(request: AlignmentRequest) -> AlignmentResponse:
        """Align skills (given, or planned from the instruction) one-to-one with demo segments."""
        _validate_limits(request.instruction, 1)
        if request.skills is not None:
            skills = [Skill(index=i, description=text.strip(), kind=skill_kind(text))
                      for i, text in enumerate(request.skills)]
            source = "request"
        else:
            plan = await plan_skills(request.instruction, request.task, settings.max_skills_limit,
                                     request.backend)
            skills, source = plan.skills, plan.backend
        segments = [Segment(s.start, s.end) for s in request.segments]
        result = align_skills([s.description for s in skills], segments)
        pairs = [AlignedPair(skill_index=i, description=skills[i].description, kind=skills[i].kind,
                             start=seg.start, end=seg.end) for i, seg in result.pairs]
        metrics.requests.labels("/v1/skill-alignments", "200").inc()
        return AlignmentResponse(pairs=pairs, in_sync=result.in_sync, reason=result.reason,
                                 num_skills=len(skills), num_segments=len(segments),
                                 skills_source=source)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorResponse}})
    async def readyz():
        ok, detail = await backends[settings.default_backend].ready()
        checks = {"backend": {"name": settings.default_backend, "ok": ok, "detail": detail}}
        if cache is not None:
            try:
                checks["redis"] = {"ok": await cache.ping()}
            except Exception as exc:  # noqa: BLE001 - readiness reports any failure, never raises
                checks["redis"] = {"ok": False, "detail": type(exc).__name__}
        ready = all(c["ok"] for c in checks.values())
        return JSONResponse(status_code=200 if ready else 503,
                            content={"ready": ready, "checks": checks,
                                     **({} if ready else {"detail": "not ready: " + ", ".join(
                                         k for k, c in checks.items() if not c["ok"])})})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_endpoint():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


