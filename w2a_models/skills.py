"""Atomic-skill segmentation of demos, and skill<->segment alignment with a sync-rate metric.

Two segmenters:

* **gripper** (the paper's): cut where the gripper changes state (open<->closed). Scripted experts
  and teleoperators flick the gripper for a step or two, so states shorter than
  ``debounce_steps`` are absorbed into their neighbours before cutting.
* **motion** (fallback for non-grasp tasks such as push, slide, door-open): cut at *pauses of the
  end effector*, i.e. local minima of its smoothed speed that fall well below the episode's typical
  speed. Why this signal: every arm reports its end-effector pose, while contact sensing and object
  poses are often missing on real robots; and a manipulator (scripted, teleoperated or learned)
  slows down where one motion primitive hands over to the next (reach -> descend -> push), which is
  exactly a skill boundary. Velocity direction changes were noisier on the same demos.

Which one runs: when the caller knows whether the task is a grasping task (``grasp_task``, e.g.
from the task catalogue), that decides: grasp tasks use the gripper segmenter (if the gripper
changes state at all), non-grasp tasks the fallback. Pushers close the gripper too (Meta-World's
push expert grips the puck and drags it), and a pick-place demo whose goal lies on the table lifts
its object no higher than a push does, so no signal in one demo separates the two reliably. When
the task is unknown, the data decide: the gripper segmenter runs when the gripper changes state
and (where object positions are known) a closure lifts the object ``lift_height``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

SegmenterName = Literal["gripper", "motion"]


@dataclass(frozen=True)
class SegmenterConfig:
    gripper_threshold: float = 0.5  # gripper value >= threshold means "closed"
    debounce_steps: int = 3  # a gripper state must last this many steps to count
    lift_height: float = 0.03  # metres an object must rise while held to call it a grasp
    speed_smoothing: int = 5  # moving-average window (steps) for the end-effector speed
    pause_ratio: float = 0.5  # a pause is a speed minimum below pause_ratio * typical speed
    min_segment_steps: int = 8  # shortest segment the motion segmenter may produce
    # An opening at the very end of an episode is the release of the last place, not a skill
    # of its own (LIBERO's goals need the object let go; its plans end in "... and place it").
    release_ends_place: bool = False

    def __post_init__(self) -> None:
        if self.debounce_steps < 1 or self.speed_smoothing < 1 or self.min_segment_steps < 1:
            raise ValueError(f"SegmenterConfig step counts must be >= 1: {self}")
        if not 0 < self.pause_ratio < 1:
            raise ValueError(f"pause_ratio must be in (0, 1), got {self.pause_ratio}")

    def for_action_repeat(self, repeat: int) -> SegmenterConfig:
        """The step counts above are env steps; an episode recorded at ``repeat`` env steps per
        step has the same motion in 1/repeat as many steps, so they shrink with it."""
        if repeat <= 1:
            return self
        return replace(self, debounce_steps=max(1, round(self.debounce_steps / repeat)),
                       speed_smoothing=max(1, round(self.speed_smoothing / repeat)),
                       min_segment_steps=max(2, round(self.min_segment_steps / repeat)))


@dataclass(frozen=True)
class Segment:
    start: int  # first step (inclusive)
    end: int  # last step (exclusive)
    gripper_closed: bool | None = None  # state during the segment (gripper segmenter only)

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Segmentation:
    segmenter: SegmenterName
    segments: list[Segment]
    reason: str

    @property
    def boundaries(self) -> list[int]:
        """Step indices where a new segment starts (excluding 0)."""
        return [s.start for s in self.segments[1:]]


def debounce(states: np.ndarray, min_run: int) -> np.ndarray:
    """Absorb runs shorter than ``min_run`` into the preceding run (the first into the next)."""
    states = np.asarray(states, dtype=bool).copy()
    if states.size == 0 or min_run <= 1:
        return states
    changed = True
    while changed:
        changed = False
        starts = np.flatnonzero(np.r_[True, states[1:] != states[:-1]])
        ends = np.r_[starts[1:], states.size]
        if len(starts) == 1:
            break
        for start, end in zip(starts, ends):
            if end - start < min_run:
                fill = states[start - 1] if start > 0 else states[end]
                states[start:end] = fill
                changed = True
                break  # re-encode runs after each merge; neighbours may have joined
    return states


def gripper_states(gripper: np.ndarray, config: SegmenterConfig = SegmenterConfig()) -> np.ndarray:
    """Debounced closed/open state per step."""
    closed = np.asarray(gripper, dtype=np.float64) >= config.gripper_threshold
    return debounce(closed, config.debounce_steps)


def change_points(states: np.ndarray) -> list[int]:
    """Indices t with states[t] != states[t-1]."""
    states = np.asarray(states)
    return [int(i) + 1 for i in np.flatnonzero(states[1:] != states[:-1])]


def _segments_from_boundaries(
    boundaries: Sequence[int], num_steps: int, states: np.ndarray | None = None
) -> list[Segment]:
    edges = [0, *boundaries, num_steps]
    return [
        Segment(a, b, None if states is None else bool(states[a]))
        for a, b in itertools.pairwise(edges)
    ]


def segment_by_gripper(gripper: np.ndarray, config: SegmenterConfig = SegmenterConfig()) -> list[Segment]:
    """One segment per gripper state (see ``SegmenterConfig.release_ends_place``)."""
    states = gripper_states(gripper, config)
    changes = change_points(states)
    if config.release_ends_place and len(changes) >= 2 and not states[-1]:
        changes = changes[:-1]
    return _segments_from_boundaries(changes, len(states), states)


def closure_lifts_object(
    gripper: np.ndarray, object_pos: np.ndarray, config: SegmenterConfig = SegmenterConfig()
) -> bool:
    """True when, during some closed run, the object rises ``lift_height`` above its start."""
    states = gripper_states(gripper, config)
    z = np.asarray(object_pos, dtype=np.float64)[:, 2]
    edges = [0, *change_points(states), len(states)]
    return any(states[a] and z[a:b].max() - z[a] >= config.lift_height for a, b in itertools.pairwise(edges))


def end_effector_speed(ee_pos: np.ndarray, smoothing: int) -> np.ndarray:
    """Per-step speed (same length as ``ee_pos``), moving-average smoothed."""
    ee_pos = np.asarray(ee_pos, dtype=np.float64)
    speed = np.linalg.norm(np.diff(ee_pos, axis=0), axis=1)
    speed = np.r_[speed[:1], speed] if speed.size else np.zeros(len(ee_pos))
    if smoothing > 1 and speed.size >= smoothing:
        kernel = np.ones(smoothing) / smoothing
        padded = np.pad(speed, (smoothing // 2, smoothing - 1 - smoothing // 2), mode="edge")
        speed = np.convolve(padded, kernel, mode="valid")
    return speed


def segment_by_motion(ee_pos: np.ndarray, config: SegmenterConfig = SegmenterConfig()) -> list[Segment]:
    """Cut at end-effector pauses: local speed minima below ``pause_ratio`` x typical speed."""
    speed = end_effector_speed(ee_pos, config.speed_smoothing)
    n = len(speed)
    if n < 2 * config.min_segment_steps:
        return _segments_from_boundaries([], n)
    typical = float(np.percentile(speed, 90))
    threshold = config.pause_ratio * typical
    boundaries: list[int] = []
    for t in range(1, n - 1):
        is_min = speed[t] <= speed[t - 1] and speed[t] < speed[t + 1]
        if not is_min or speed[t] >= threshold:
            continue
        if t < config.min_segment_steps or n - t < config.min_segment_steps:
            continue
        if boundaries and t - boundaries[-1] < config.min_segment_steps:
            if speed[t] < speed[boundaries[-1]]:  # keep the deeper of two close pauses
                boundaries[-1] = t
            continue
        boundaries.append(t)
    return _segments_from_boundaries(boundaries, n)


def segment_episode(
    gripper: np.ndarray,
    ee_pos: np.ndarray,
    object_pos: np.ndarray | None = None,
    config: SegmenterConfig = SegmenterConfig(),
    force: SegmenterName | None = None,
    grasp_task: bool | None = None,
) -> Segmentation:
    """Segment one demo, choosing the segmenter as the module docstring explains."""
    if len(gripper) != len(ee_pos):
        raise ValueError(f"gripper has {len(gripper)} steps but ee_pos has {len(ee_pos)}")
    if force == "gripper":
        return Segmentation("gripper", segment_by_gripper(gripper, config), "forced")
    if force == "motion":
        return Segmentation("motion", segment_by_motion(ee_pos, config), "forced")
    changes = change_points(gripper_states(gripper, config))
    if not changes:
        reason = "gripper never changes state"
    elif grasp_task is False:
        reason = "not a grasping task"
    elif grasp_task is None and object_pos is not None and not closure_lifts_object(
            gripper, object_pos, config):
        reason = f"gripper closes but lifts nothing (< {config.lift_height} m): not a grasp"
    else:
        return Segmentation(
            "gripper", segment_by_gripper(gripper, config), f"{len(changes)} gripper change(s)"
        )
    return Segmentation("motion", segment_by_motion(ee_pos, config), reason)


# ----------------------------------------------------------------------------- alignment


@dataclass
class SkillAlignment:
    pairs: list[tuple[int, Segment]] = field(default_factory=list)  # (skill index, segment)
    in_sync: bool = False
    reason: str = ""


def align_skills(skills: Sequence[str], segments: Sequence[Segment]) -> SkillAlignment:
    """One-to-one, in order. In sync only when the counts match (the paper's criterion)."""
    pairs = [(i, seg) for i, seg in enumerate(segments[: len(skills)])]
    if len(skills) == len(segments):
        return SkillAlignment(pairs, True, "one segment per skill")
    more = "skills" if len(skills) > len(segments) else "segments"
    return SkillAlignment(
        pairs, False, f"{len(skills)} skills but {len(segments)} segments (too many {more})"
    )


def boundaries_in_sync(predicted: Sequence[int], truth: Sequence[int], tolerance: int = 2) -> bool:
    """Same number of cuts, each within ``tolerance`` steps of its ground-truth cut."""
    if len(predicted) != len(truth):
        return False
    return all(abs(p - t) <= tolerance for p, t in zip(sorted(predicted), sorted(truth)))


def sync_rate(
    episodes: Iterable[tuple[Sequence[int], Sequence[int]]], tolerance: int = 2
) -> float:
    """Fraction of episodes whose predicted boundaries agree with the ground truth."""
    results = [boundaries_in_sync(p, t, tolerance) for p, t in episodes]
    if not results:
        raise ValueError("sync_rate needs at least one episode")
    return float(np.mean(results))
