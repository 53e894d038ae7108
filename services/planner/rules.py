"""The planner service's offline ``rules`` backend: ``w2a_models.plan_rules`` behind the backend
protocol (``services.planner.backends.PlannerBackend``)."""

from __future__ import annotations

from w2a_models.plan_rules import TASK_SKILLS, decompose, skill_kind
from w2a_models.plans import Skill

__all__ = ["TASK_SKILLS", "RulesBackend", "decompose", "skill_kind"]


class RulesBackend:
    name = "rules"
    model = "rules-v1"

    async def plan(self, instruction: str, task: str | None, max_skills: int) -> list[Skill]:
        return decompose(instruction, task, max_skills)

    async def ready(self) -> tuple[bool, str]:
        return True, "offline"
