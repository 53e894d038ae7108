"""Segment episodes on disk into atomic skills and summarise the result (``w2a segment``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from w2a_models.episodes import Episode, find_episode_files, read_episode
from w2a_models.skills import Segmentation, SegmenterConfig, change_points, gripper_states, segment_episode
from w2a_models.tasks import TASKS


def segment_loaded(episode: Episode, config: SegmenterConfig = SegmenterConfig()) -> Segmentation:
    """Segment with the task catalogue's grasp/non-grasp knowledge where the task is known, with
    step counts scaled to the episode's action repeat."""
    spec = TASKS.get(episode.task)
    config = config.for_action_repeat(episode.action_repeat)
    if episode.task.startswith("libero"):  # "<suite>/<task>": LIBERO's experts let go at the end
        config = replace(config, release_ends_place=True)
    return segment_episode(episode.gripper, episode.ee_pos, episode.object_pos, config,
                           grasp_task=None if spec is None else spec.grasp)


def summarise(path: Path, episode: Episode, seg: Segmentation, config: SegmenterConfig) -> dict[str, Any]:
    return {
        "file": str(path),
        "task": episode.task,
        "instruction": episode.instruction,
        "length": episode.length,
        "success": episode.success,
        "segmenter": seg.segmenter,
        "reason": seg.reason,
        "num_segments": len(seg.segments),
        "boundaries": seg.boundaries,
        "segments": [
            {"start": s.start, "end": s.end, "gripper_closed": s.gripper_closed} for s in seg.segments
        ],
        "gripper_changes": change_points(gripper_states(episode.gripper, config)),
    }


def segment_directory(root: str | Path, config: SegmenterConfig = SegmenterConfig()) -> list[dict[str, Any]]:
    results = []
    for path in find_episode_files(root):
        episode = read_episode(path)
        results.append(summarise(path, episode, segment_loaded(episode, config), config))
    return results
