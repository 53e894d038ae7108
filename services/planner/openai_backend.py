"""Any OpenAI-compatible chat API as a planner (DeepSeek by default; vLLM, Ollama by URL).

The model is asked for JSON (``response_format`` json_object or json_schema, per settings); the
answer is validated with pydantic. Invalid answers, timeouts, connection errors and 5xx are
retried with exponential backoff; after the last attempt the caller gets a ``BackendBadOutput``
(502) or ``BackendTimeout`` (504) carrying what went wrong.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from pydantic import BaseModel, Field, ValidationError

from services.planner.backends import BackendBadOutput, BackendTimeout, BackendUnavailable
from services.planner.schemas import Skill, SkillKind
from services.planner.settings import PlannerSettings

SYSTEM_PROMPT = (
    "You decompose a robot manipulation instruction into an ordered list of atomic skills. "
    "An atomic skill is one motion primitive between two gripper state changes or two pauses "
    "of the arm (e.g. reach and grasp an object; carry it and place it; push an object). "
    "Answer with JSON only: {\"skills\": [{\"description\": str, \"kind\": one of "
    + ", ".join(k.value for k in SkillKind) + "}]}. Use at most {max_skills} skills."
)


class LLMSkill(BaseModel):
    description: str = Field(min_length=1, max_length=500)
    kind: SkillKind = SkillKind.other


class LLMPlan(BaseModel):
    skills: list[LLMSkill] = Field(min_length=1)


def plan_json_schema() -> dict:
    return {"name": "skill_plan", "strict": True, "schema": LLMPlan.model_json_schema()}


class OpenAIBackend:
    name = "openai"

    def __init__(self, settings: PlannerSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.model = settings.openai_model
        self.base_url = settings.openai_base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=settings.openai_timeout_s)

    def _headers(self) -> dict[str, str]:
        key = self.settings.openai_api_key.get_secret_value()
        if not key:
            raise BackendUnavailable("openai backend: no API key configured; set W2A_PLANNER_OPENAI_API_KEY")
        return {"Authorization": f"Bearer {key}"}

    def request_body(self, instruction: str, task: str | None, max_skills: int) -> dict:
        user = f"Instruction: {instruction}" + (f"\nTask: {task}" if task else "")
        if self.settings.openai_response_format == "json_schema":
            response_format = {"type": "json_schema", "json_schema": plan_json_schema()}
        else:
            response_format = {"type": "json_object"}
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT.replace("{max_skills}", str(max_skills))},
                         {"role": "user", "content": user}],
            "response_format": response_format,
            "temperature": 0,
        }

    @staticmethod
    def parse(payload: dict, max_skills: int) -> list[Skill]:
        try:
            content = payload["choices"][0]["message"]["content"]
            plan = LLMPlan.model_validate(json.loads(content))
        except (KeyError, IndexError, TypeError, json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if len(plan.skills) > max_skills:
            raise ValueError(f"{len(plan.skills)} skills, more than max_skills={max_skills}")
        return [Skill(index=i, description=s.description.strip(), kind=s.kind)
                for i, s in enumerate(plan.skills)]

    async def plan(self, instruction: str, task: str | None, max_skills: int) -> list[Skill]:
        headers = self._headers()
        body = self.request_body(instruction, task, max_skills)
        attempts = self.settings.openai_retries + 1
        last_problem, timed_out = "", False
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.settings.openai_backoff_s * 2 ** (attempt - 1))
            try:
                response = await self._client.post(f"{self.base_url}/chat/completions",
                                                   json=body, headers=headers)
            except httpx.TimeoutException:
                last_problem, timed_out = f"no answer within {self.settings.openai_timeout_s}s", True
                continue
            except httpx.HTTPError as exc:
                last_problem, timed_out = f"cannot reach {self.base_url}: {type(exc).__name__}", False
                continue
            if response.status_code in (401, 403):
                raise BackendBadOutput(f"openai backend: the API rejected the key (HTTP {response.status_code})")
            if response.status_code >= 400:
                last_problem, timed_out = f"HTTP {response.status_code} from the API", False
                if response.status_code < 500 and response.status_code != 429:
                    break  # a client error will not fix itself
                continue
            try:
                return self.parse(response.json(), max_skills)
            except (ValueError, json.JSONDecodeError) as exc:
                last_problem, timed_out = f"invalid plan from the model ({exc})", False
        message = f"openai backend ({self.model}) failed after {attempts} attempt(s): {last_problem}"
        raise BackendTimeout(message) if timed_out else BackendBadOutput(message)

    async def ready(self) -> tuple[bool, str]:
        try:
            headers = self._headers()
        except BackendUnavailable as exc:
            return False, str(exc)
        try:
            response = await self._client.get(f"{self.base_url}/models", headers=headers, timeout=3.0)
        except httpx.HTTPError as exc:
            return False, f"cannot reach {self.base_url}: {type(exc).__name__}"
        return response.status_code < 500, f"HTTP {response.status_code}"

    async def aclose(self) -> None:
        await self._client.aclose()
