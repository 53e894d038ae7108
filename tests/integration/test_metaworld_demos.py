"""Real Meta-World 3.1.1 expert episodes, rendered headless, collected and segmented."""

import json
import subprocess
import sys

import numpy as np
import pytest

from services.robot_sim.collect import CollectConfig, collect
from services.robot_sim.metaworld_env import MetaWorldSim, SimConfig
from w2a_models.episodes import EpisodeStore, read_episode
from w2a_models.segmentation import segment_directory
from w2a_models.skills import SegmenterConfig

pytestmark = pytest.mark.sim


def _collect(root, task, episodes, seed=0, size=32):
    report = collect(root / task, CollectConfig(sim=SimConfig(task=task, image_size=size),
                                                episodes=episodes, seed=seed), progress=False)
    assert report.saved == episodes, report
    return root / task


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    return {task: _collect(root, task, 2) for task in ("pick-place-v3", "push-v3")}


def _persistent_changes(effort: np.ndarray, hold: int = 3) -> list[int]:
    """Ground truth from the raw expert actions: steps where the commanded grip flips to a state
    that then holds for at least ``hold`` steps (an independent loop, not the library's debounce)."""
    closed = effort > 0
    changes, state = [], closed[0]
    for t in range(1, len(closed)):
        if closed[t] != state and np.all(closed[t : t + hold] == closed[t]):
            changes.append(t)
            state = closed[t]
    return changes


def test_episodes_are_valid_upright_and_successful(demos):
    for path in EpisodeStore(demos["pick-place-v3"]).paths():
        ep = read_episode(path)
        assert ep.success and ep.frames.shape[1:] == (32, 32, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (ep.length, 4) and ep.state.shape == (ep.length, 18)
        assert (ep.camera, ep.action_repeat) == ("front", 3)
        # the front camera looks at the robot across the table: its red arm is in the upper half
        r, g, b = (ep.frames[0, ..., c].astype(int) for c in range(3))
        arm = (r > 100) & (g < 60) & (b < 60)
        assert arm[:16].sum() > 3 * max(arm[16:].sum(), 1)


def test_corner_camera_frames_are_flipped_upright():
    with MetaWorldSim(SimConfig(task="pick-place-v3", image_size=32, camera="corner")) as sim:
        sim.reset(0)
        r, g, b = (sim.render()[..., c].astype(int) for c in range(3))
    wood = (r - g > 10) & (r - g < 45) & (g > b)  # the wooden table top lies in the lower half
    assert wood[16:].sum() > 5 * wood[:16].sum()


def test_action_repeat_holds_each_action_for_that_many_env_steps():
    moved = {}
    for repeat in (1, 3):
        with MetaWorldSim(SimConfig(task="reach-v3", image_size=16, action_repeat=repeat)) as sim:
            start = sim.reset(0)[:3].copy()
            for _ in range(4):
                sim.step(np.array([1.0, 0.0, 0.0, 0.0]))
            moved[repeat] = sim.obs[0] - start[0]
            assert sim.env.curr_path_length == 4 * repeat
    assert moved[3] > 2.0 * moved[1] > 0


def test_project_puts_the_hand_where_it_is_drawn():
    with MetaWorldSim(SimConfig(task="reach-v3", image_size=64)) as sim:
        obs = sim.reset(0)
        col, row = sim.project(obs[:3][None])[0]
        assert 0 <= col < 64 and 0 <= row < 64
        frame = sim.render().astype(int)
    # the gripper fingers (cyan-ish/white parts and the red arm) sit near the projected point:
    # the frame differs more from the table colour there than on average
    patch = frame[max(0, int(row) - 4):int(row) + 5, max(0, int(col) - 4):int(col) + 5]
    table = np.median(frame.reshape(-1, 3), axis=0)
    assert np.abs(patch - table).sum(-1).max() > np.abs(frame - table).sum(-1).mean() * 2


def test_pick_place_splits_where_the_expert_gripper_changes(demos):
    results = segment_directory(demos["pick-place-v3"])
    assert len(results) == 2
    for r in results:
        ep = read_episode(r["file"])
        truth = _persistent_changes(ep.actions[:, 3])
        assert truth, "the pick-place expert must close its gripper"
        assert r["segmenter"] == "gripper"
        assert r["boundaries"] == truth
        # the fingers physically close after the cut (measured opening drops)
        cut = truth[0]
        assert ep.state[min(cut + 8, ep.length - 1), 3] < ep.state[cut, 3] - 0.1


def test_push_goes_to_the_fallback_and_splits(demos):
    for r in segment_directory(demos["push-v3"]):
        assert r["segmenter"] == "motion"
        assert r["num_segments"] > 1
        shortest = SegmenterConfig().for_action_repeat(read_episode(r["file"]).action_repeat).min_segment_steps
        assert all(s["end"] - s["start"] >= shortest for s in r["segments"])


@pytest.mark.parametrize("task", ["assembly-v3", "shelf-place-v3", "door-open-v3"])
def test_other_grasp_and_non_grasp_tasks_collect_and_segment(tmp_path, task):
    directory = _collect(tmp_path, task, 1, size=16)
    (r,) = segment_directory(directory)
    assert r["num_segments"] >= 2
    assert r["segmenter"] == ("motion" if task == "door-open-v3" else "gripper")


def test_failures_are_dropped_unless_kept(tmp_path):
    cfg = SimConfig(task="pick-place-v3", image_size=16, max_steps=10)  # too short to succeed
    dropped = collect(tmp_path / "a", CollectConfig(sim=cfg, episodes=1, max_attempts_factor=1),
                      progress=False)
    assert dropped.saved == 0 and dropped.failures == 1
    kept = collect(tmp_path / "b", CollectConfig(sim=cfg, episodes=1, keep_failures=True),
                   progress=False)
    assert kept.saved == 1 and not read_episode(tmp_path / "b" / kept.files[0]).success


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown Meta-World task 'pick-plaice-v3'"):
        MetaWorldSim(SimConfig(task="pick-plaice-v3"))


def test_segment_cli_prints_json(demos):
    root = demos["push-v3"].parent
    out = subprocess.run([sys.executable, "-m", "services.cli", "segment", str(root), "--json"],
                         capture_output=True, text=True, check=True)
    results = json.loads(out.stdout)
    assert {r["task"] for r in results} == {"pick-place-v3", "push-v3"}
    assert {r["segmenter"] for r in results} == {"gripper", "motion"}
    bad = subprocess.run([sys.executable, "-m", "services.cli", "segment", str(root / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "no such directory" in bad.stderr


def test_skill_sync_on_real_demos(demos):
    root = demos["push-v3"].parent
    out = subprocess.run([sys.executable, "-m", "services.cli", "skill-sync", "--data", str(root), "--json"],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["episodes"] == 4 and set(report["by_task"]) == {"pick-place-v3", "push-v3"}
    assert report["sync_rate"] == 1.0, report
