"""Request/response models of the planner API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

from services.planner.settings import BackendName
from w2a_models.plans import Skill, SkillKind

MAX_INSTRUCTION_CHARS = 1000
MAX_SKILLS = 16


def _clean_instruction(value: str) -> str:
    text = " ".join(value.split())
    if not text:
        raise ValueError("must not be empty or blank")
    return text


class PlanRequest(BaseModel):
    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS,
                             examples=["pick up the puck and place it at the goal"])
    task: str | None = Field(None, max_length=128, description="Simulator task name, e.g. pick-place-v3")
    max_skills: int = Field(8, ge=1, le=MAX_SKILLS)
    backend: BackendName | None = Field(None, description="Default: the server's default backend")

    _strip = field_validator("instruction")(classmethod(lambda cls, v: _clean_instruction(v)))


class PlanResponse(BaseModel):
    plan_id: str
    skills: list[Skill]
    backend: str
    model: str
    cached: bool
    truncated: bool = Field(False, description="True when the plan had more than max_skills skills")
    total_skills: int = Field(0, ge=0, description="Skills in the whole plan (before max_skills)")
    warnings: list[str] = Field(default_factory=list,
                                description="What the planner ignored, e.g. an unknown task name")


class SegmentIn(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> SegmentIn:
        if self.end <= self.start:
            raise ValueError("end must be greater than start")
        return self


class AlignmentRequest(BaseModel):
    instruction: str | None = Field(None, min_length=1, max_length=MAX_INSTRUCTION_CHARS)
    skills: list[str] | None = Field(None, min_length=1, max_length=MAX_SKILLS)
    task: str | None = Field(None, max_length=128)
    segments: list[SegmentIn] = Field(min_length=1, max_length=256)
    backend: BackendName | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AlignmentRequest:
        if (self.instruction is None) == (self.skills is None):
            raise ValueError("give exactly one of 'instruction' or 'skills'")
        if self.instruction is not None:
            self.instruction = _clean_instruction(self.instruction)
        if self.skills is not None and any(not s.strip() or len(s) > MAX_INSTRUCTION_CHARS for s in self.skills):
            raise ValueError("skills: every skill must be non-blank and at most "
                             f"{MAX_INSTRUCTION_CHARS} characters")
        for prev, seg in zip(self.segments, self.segments[1:]):
            if seg.start < prev.end:
                raise ValueError("segments must be ordered and must not overlap")
        return self


class AlignedPair(BaseModel):
    skill_index: int
    description: str
    kind: SkillKind
    start: int
    end: int


class AlignmentResponse(BaseModel):
    pairs: list[AlignedPair]
    in_sync: bool
    reason: str
    num_skills: int
    num_segments: int
    skills_source: str  # "request" or the backend that planned them


class ErrorResponse(BaseModel):
    detail: str
