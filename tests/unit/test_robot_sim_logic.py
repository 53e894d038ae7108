import pytest

from services.robot_sim.metaworld_env import SimConfig
from services.robot_sim.robot import split_seeds
from services.robot_sim.seeds import EVAL_SEEDS_START, ROLLOUT_SEEDS_START, check_eval_seed
from w2a_models.stats import wilson_ci95


def test_wilson_interval_brackets_the_rate_and_stays_in_range():
    lo, hi = wilson_ci95(7, 10)
    assert 0.39 < lo < 0.7 < hi < 0.92
    assert wilson_ci95(0, 20)[0] == 0.0 and wilson_ci95(0, 20)[1] < 0.2
    assert wilson_ci95(20, 20)[1] == 1.0 and wilson_ci95(20, 20)[0] > 0.8
    assert wilson_ci95(0, 0) == (0.0, 1.0)


def test_seeds_are_split_over_robots_exactly_once():
    groups = split_seeds(list(range(100, 107)), 3)
    assert sorted(s for g in groups for s in g) == list(range(100, 107))
    assert len(split_seeds([1], 4)) == 1


def test_evaluation_seeds_cannot_overlap_demo_or_rollout_seeds():
    check_eval_seed(EVAL_SEEDS_START)
    for seed in (0, 5, ROLLOUT_SEEDS_START, EVAL_SEEDS_START - 1):
        with pytest.raises(ValueError, match="evaluation seeds start"):
            check_eval_seed(seed)


def test_scene_settings_are_checked_with_a_message():
    with pytest.raises(ValueError, match=r"unknown camera 'cornr'.*front"):
        SimConfig(camera="cornr")
    with pytest.raises(ValueError, match="action_repeat"):
        SimConfig(action_repeat=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        SimConfig(image_size=60)
