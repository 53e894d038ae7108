import numpy as np
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
    for n in range(1, 201):  # every count brackets its rate exactly (50/50 once rounded below 1.0)
        for k in (0, 1, n - 1, n):
            lo, hi = wilson_ci95(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


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


def test_local_episodes_execute_what_chunk_returns_and_stop_at_max_steps():
    from types import SimpleNamespace

    from services.robot_sim.local_eval import run_local_episodes
    from w2a_models.base_policy import BaseOutput, CameraSpec, PolicySpec

    class Policy:
        spec = PolicySpec("fake", action_dim=2, chunk_size=3, state_dim=1, cameras=(CameraSpec("cam", 4, 4),),
                          feature_dim=1)

        def predict(self, batch):
            return BaseOutput(np.full((1, 3, 2), 0.5, np.float32), np.zeros((1, 1), np.float32))

    class Sim:
        instruction, state, executed = "reach", np.zeros(1, np.float32), []

        def reset(self, seed):
            pass

        def render(self):
            return np.zeros((4, 4, 3), np.uint8)

        def step(self, action):
            self.executed.append(action.copy())
            return SimpleNamespace(success=False, truncated=False)

    sim, calls = Sim(), []

    def chunk(seed, out):
        calls.append(seed)
        return out.actions[0] + 2.0  # clipped to [-1, 1] as a robot's actions are

    episodes = run_local_episodes(Policy(), sim, [7, 8], max_steps=4, chunk=chunk)
    assert [(e.seed, e.success, e.steps) for e in episodes] == [(7, False, 4), (8, False, 4)]
    assert calls == [7, 7, 8, 8]  # one chunk per observation, 4 steps = two chunks of 3
    assert np.array_equal(np.stack(sim.executed), np.ones((8, 2), np.float32))
    run_local_episodes(Policy(), sim, [9], max_steps=2)  # no chunk: the base's own actions
    assert np.array_equal(np.stack(sim.executed[-2:]), np.full((2, 2), 0.5, np.float32))
