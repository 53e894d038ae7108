import numpy as np
import pytest

from w2a_models.skills import (
    Segment,
    SegmenterConfig,
    align_skills,
    boundaries_in_sync,
    change_points,
    debounce,
    segment_by_gripper,
    segment_by_motion,
    segment_episode,
    sync_rate,
)


def test_debounce_removes_brief_flicks_only():
    raw = np.array([0] * 10 + [1] * 2 + [0] * 10 + [1] * 10 + [0] * 1 + [1] * 5, dtype=bool)
    clean = debounce(raw, 3)
    assert change_points(clean) == [22]  # the 2-step and 1-step flicks are gone
    assert change_points(debounce(raw, 1)) == change_points(raw)
    # a short first run joins the next one
    assert change_points(debounce(np.array([1, 0, 0, 0, 0], dtype=bool), 3)) == []


def test_gripper_segments_follow_debounced_changes():
    g = np.array([0] * 10 + [1] * 15 + [0] * 10, dtype=np.float32)
    g[4] = 1.0  # a flick that must not cut
    segs = segment_by_gripper(g, SegmenterConfig(debounce_steps=3))
    assert [(s.start, s.end, s.gripper_closed) for s in segs] == [(0, 10, False), (10, 25, True),
                                                                  (25, 35, False)]
    # LIBERO: the final opening is the last place's release
    segs = segment_by_gripper(g, SegmenterConfig(debounce_steps=3, release_ends_place=True))
    assert [(s.start, s.end, s.gripper_closed) for s in segs] == [(0, 10, False), (10, 35, True)]


def _piecewise_path(waypoints, steps_per_leg=25):
    """A proportional controller that decelerates into each waypoint, like scripted experts."""
    pos, path = np.array(waypoints[0], dtype=float), []
    for target in waypoints[1:]:
        for _ in range(steps_per_leg):
            pos = pos + 0.2 * (np.asarray(target) - pos)
            path.append(pos.copy())
    return np.array(path)


def test_motion_segmenter_cuts_at_pauses():
    path = _piecewise_path([[0, 0, 0], [1, 0, 0], [1, 0, -1], [2, 1, -1]])
    segs = segment_by_motion(path)
    assert len(segs) == 3
    for cut, expected in zip([s.start for s in segs[1:]], [25, 50]):
        assert abs(cut - expected) <= 3


def test_selection_prefers_gripper_only_for_real_grasps():
    T = 60
    ee = _piecewise_path([[0, 0, 0], [1, 0, 0], [1, 1, 0]], steps_per_leg=30)
    gripper = np.r_[np.zeros(30), np.ones(30)]
    lifted = np.zeros((T, 3))
    lifted[35:, 2] = 0.1
    resting = np.zeros((T, 3))
    assert segment_episode(gripper, ee, lifted).segmenter == "gripper"
    pushed = segment_episode(gripper, ee, resting)
    assert pushed.segmenter == "motion" and "lifts nothing" in pushed.reason
    assert segment_episode(np.zeros(T), ee).segmenter == "motion"
    assert segment_episode(gripper, ee, None).segmenter == "gripper"
    assert segment_episode(gripper, ee, resting, force="gripper").segmenter == "gripper"
    with pytest.raises(ValueError, match="gripper has 10 steps but ee_pos has"):
        segment_episode(gripper[:10], ee)


def test_alignment_and_sync_rate():
    segs = [Segment(0, 10), Segment(10, 30)]
    ok = align_skills(["grasp the puck", "place the puck"], segs)
    assert ok.in_sync and [i for i, _ in ok.pairs] == [0, 1]
    bad = align_skills(["reach", "grasp", "place"], segs)
    assert not bad.in_sync and "3 skills but 2 segments" in bad.reason
    assert boundaries_in_sync([10, 31], [11, 30], tolerance=2)
    assert not boundaries_in_sync([10], [10, 30])
    assert sync_rate([([10], [11]), ([10], [20]), ([5, 9], [5, 9]), ([], [])]) == 0.75
    with pytest.raises(ValueError, match="at least one episode"):
        sync_rate([])


def test_known_task_kind_overrides_the_lift_heuristic():
    T = 60
    ee = _piecewise_path([[0, 0, 0], [1, 0, 0], [1, 1, 0]], steps_per_leg=30)
    gripper = np.r_[np.zeros(30), np.ones(30)]
    resting = np.zeros((T, 3))  # a pick-place whose goal lies on the table lifts nothing
    assert segment_episode(gripper, ee, resting, grasp_task=True).segmenter == "gripper"
    lifted = np.zeros((T, 3))
    lifted[35:, 2] = 0.1
    pushed = segment_episode(gripper, ee, lifted, grasp_task=False)
    assert pushed.segmenter == "motion" and pushed.reason == "not a grasping task"


def test_segmenter_step_counts_scale_with_the_action_repeat():
    from w2a_models.skills import SegmenterConfig

    base = SegmenterConfig()
    assert base.for_action_repeat(1) == base
    scaled = base.for_action_repeat(3)
    assert (scaled.debounce_steps, scaled.speed_smoothing, scaled.min_segment_steps) == (1, 2, 3)
    assert scaled.pause_ratio == base.pause_ratio and scaled.lift_height == base.lift_height
