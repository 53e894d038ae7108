"""What a plan is made of: atomic skills with a kind (the planner's output, the trainer's and the
segmenter's unit), and how instructions are normalised before anything compares them."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field


class SkillKind(str, Enum):  # noqa: UP042 - str mixin kept: values compare and serialise as plain strings
    reach = "reach"
    grasp = "grasp"
    carry = "carry"
    place = "place"
    release = "release"
    push = "push"
    pull = "pull"
    press = "press"
    turn = "turn"
    other = "other"


class Skill(BaseModel):
    index: int = Field(ge=0)
    description: str
    kind: SkillKind


def normalise(instruction: str) -> str:
    """Lower case, single spaces, no closing full stop or exclamation mark."""
    return " ".join(instruction.lower().split()).rstrip(".!")
