"""Plan cache in Redis: key = backend, model, normalised instruction (+ task, max_skills)."""

from __future__ import annotations

import hashlib
import json

import redis.asyncio as aioredis

from w2a_models.plans import Skill, normalise

PREFIX = "w2a:plan:"


def plan_key(backend: str, model: str, instruction: str, task: str | None, max_skills: int) -> str:
    raw = json.dumps([backend, model, normalise(instruction), task or "", max_skills])
    return PREFIX + hashlib.sha256(raw.encode()).hexdigest()[:32]


class PlanCache:
    def __init__(self, url: str, ttl_s: int) -> None:
        self.client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self.ttl_s = ttl_s

    async def get(self, key: str) -> list[Skill] | None:
        raw = await self.client.get(key)
        if raw is None:
            return None
        return [Skill.model_validate(s) for s in json.loads(raw)]

    async def put(self, key: str, skills: list[Skill]) -> None:
        await self.client.set(key, json.dumps([s.model_dump(mode="json") for s in skills]), ex=self.ttl_s)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def aclose(self) -> None:
        await self.client.aclose()
