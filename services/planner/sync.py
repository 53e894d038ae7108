"""Sync rate of planned skills against demo segments (``w2a skill-sync``).

For every episode: plan its instruction (task name given), segment the demo with
``w2a_models.skills``, and count it in sync when skills and segments align one to one.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from w2a_models.episodes import find_episode_files, read_episode
from w2a_models.segmentation import segment_loaded
from w2a_models.skills import align_skills


def _planner(url: str | None):
    if url is None:
        from w2a_models.plan_rules import decompose

        return lambda instruction, task: [s.description for s in decompose(instruction, task, 16)]
    import httpx

    client = httpx.Client(base_url=url.rstrip("/"), timeout=60)

    def plan(instruction: str, task: str) -> list[str]:
        response = client.post("/v1/skill-plans", json={"instruction": instruction, "task": task,
                                                        "max_skills": 16})
        if response.status_code != 200:
            raise ValueError(f"planner answered {response.status_code}: {response.text[:200]}")
        return [s["description"] for s in response.json()["skills"]]

    return plan


def measure_sync(data: str | Path, url: str | None = None) -> dict:
    plan = _planner(url)
    paths = find_episode_files(data)
    if not paths:
        raise ValueError(f"no episodes under {data}")
    by_task: dict[str, dict] = defaultdict(lambda: {"episodes": 0, "in_sync": 0, "mismatches": []})
    cache: dict[tuple[str, str], list[str]] = {}
    for path in paths:
        episode = read_episode(path)
        key = (episode.instruction, episode.task)
        if key not in cache:
            cache[key] = plan(*key)
        seg = segment_loaded(episode)
        result = align_skills(cache[key], seg.segments)
        row = by_task[episode.task]
        row["episodes"] += 1
        row["in_sync"] += int(result.in_sync)
        if not result.in_sync:
            row["mismatches"].append({"file": path.name, "reason": result.reason,
                                      "segmenter": seg.segmenter})
    for row in by_task.values():
        row["sync_rate"] = row["in_sync"] / row["episodes"]
    total = sum(r["episodes"] for r in by_task.values())
    in_sync = sum(r["in_sync"] for r in by_task.values())
    return {"episodes": total, "sync_rate": in_sync / total, "by_task": dict(by_task)}
