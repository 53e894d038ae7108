"""LIBERO as a second simulator: names, placements vs official init states, expert demos."""

import numpy as np
import pytest

from services.robot_sim.libero_env import SUITE_MAX_STEPS, LiberoConfig, LiberoSim, official_init_states, resolve_task
from services.robot_sim.seeds import EVAL_SEEDS_START


def test_bad_names_fail_with_the_valid_ones_listed():
    with pytest.raises(ValueError, match="libero_spatial, libero_object, libero_goal, libero_10"):
        LiberoConfig(suite="libero_obj")
    with pytest.raises(ValueError, match="agentview, robot0_eye_in_hand"):
        LiberoConfig(camera="front")
    with pytest.raises(ValueError, match="9: pick_up_the_orange_juice"):
        resolve_task("libero_object", 10)
    with pytest.raises(ValueError, match="valid"):
        resolve_task("libero_object", "pick up the moon")
    assert resolve_task("libero_object", "pick up the milk and place it in the basket").index == 7
    assert resolve_task("libero_object", "7").name == "pick_up_the_milk_and_place_it_in_the_basket"
    assert LiberoConfig(suite="libero_10").step_limit == SUITE_MAX_STEPS["libero_10"] == 520


def _positions(sim):
    return np.concatenate([sim.object_pose(o)[0] for o in sim.objects])


def test_evaluation_seeds_load_the_official_init_states_and_demo_seeds_never_do():
    with LiberoSim(LiberoConfig(task=2, image_size=32)) as sim:
        inits = official_init_states(sim.task)
        assert len(inits) == 50
        sim.reset(EVAL_SEEDS_START + 3)
        again = LiberoSim(LiberoConfig(task=2, image_size=32))
        try:  # the same init state through a fresh scene: the same placement
            again.reset(EVAL_SEEDS_START + 3)
            np.testing.assert_allclose(_positions(again), _positions(sim), atol=1e-6)
        finally:
            again.close()
        evaluation = []
        for k in range(50):  # every official placement, before any settling step
            sim.env.reset()
            obs = sim.env.set_init_state(inits[k])
            evaluation.append(np.concatenate([obs[f"{o}_pos"] for o in sim.objects]))
        for seed in range(3):  # demo/rollout seeds: sampled placements, none of them an official one
            sim.reset(seed)
            gap = np.abs(np.stack(evaluation) - _positions(sim)).max(axis=1).min()
            assert gap > 1e-3
        with pytest.raises(ValueError, match="50 official init states"):
            sim.reset(EVAL_SEEDS_START + 50)
        frame = sim.render()
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8 and frame.std() > 0
        with pytest.raises(ValueError, match="7-d"):
            sim.step(np.zeros(4))


@pytest.mark.parametrize(("suite", "task", "skills"), [("libero_object", 5, 2), ("libero_10", 0, 4)])
def test_an_expert_demo_succeeds_and_splits_into_its_plans_skills(tmp_path, suite, task, skills):
    from services.robot_sim.libero_experts import collect_libero
    from w2a_models.episodes import find_episode_files, read_episode
    from w2a_models.plan_rules import decompose
    from w2a_models.segmentation import segment_loaded
    from w2a_models.skills import align_skills

    report = collect_libero(tmp_path, LiberoConfig(suite=suite, task=task, image_size=32), 1, seed=7,
                            progress=False)
    assert report["saved"] == 1 and report["failures"] == 0
    episode = read_episode(find_episode_files(tmp_path)[0])
    assert episode.success and episode.task.startswith(f"{suite}/")
    assert episode.frames.shape == (episode.length, 32, 32, 3) and episode.frames.dtype == np.uint8
    assert episode.actions.shape == (episode.length, 7) and np.all(np.abs(episode.actions) <= 1.0)
    plan = [s.description for s in decompose(episode.instruction, episode.task)]
    segments = segment_loaded(episode).segments
    assert len(plan) == skills and align_skills(plan, segments).in_sync, [(s.start, s.end) for s in segments]


def test_demo_seeds_must_stay_below_the_evaluation_range(tmp_path):
    from services.robot_sim.libero_experts import collect_libero

    with pytest.raises(ValueError, match="below"):
        collect_libero(tmp_path, LiberoConfig(), 2, seed=EVAL_SEEDS_START - 1, progress=False)


def test_libero_robots_act_through_the_policy_server_on_the_official_init_states(tmp_path):
    """Expert demos -> a TinyVLA base with LIBERO's 7-d actions and 36-d state -> a real gRPC
    policy server -> two robot processes on init states 0 and 1: the protocol end to end."""
    from policy_helpers import ROBOT, ServerThread, settings

    from services.jobs.base_bc import BCConfig, train_base
    from services.policy.server import PolicyServer
    from services.robot_sim.libero_experts import collect_libero
    from services.robot_sim.robot import RobotConfig, run_robots, split_seeds, summarise
    from w2a_models.base_policy.tiny_vla import TinyVLA

    collect_libero(tmp_path / "data", LiberoConfig(task=0, image_size=32), 1, seed=11, progress=False)
    train_base(tmp_path / "data", tmp_path / "base", config=BCConfig(steps=5, holdout_fraction=0.0),
               progress=False)
    base = TinyVLA.load(tmp_path / "base")
    assert (base.spec.action_dim, base.spec.state_dim, base.spec.cameras[0].name) == (7, 36, "agentview")
    seeds = [EVAL_SEEDS_START, EVAL_SEEDS_START + 1]
    with ServerThread(PolicyServer(settings(tmp_path / "p"), base)) as srv:
        configs = [RobotConfig(f"r{i}", "0", srv.target, ROBOT, group, image_size=32, max_steps=16,
                               camera="agentview", action_repeat=1, sim="libero", suite="libero_object",
                               evaluation=True)
                   for i, group in enumerate(split_seeds(seeds, 2))]
        results = run_robots(configs)
    assert sorted(r.seed for r in results) == seeds
    assert all(r.steps == 16 and r.chunks == 2 for r in results)
    summary = summarise("0", "w2a", results)
    assert summary["physics_ms_per_step"] > 0 and summary["render_ms_per_chunk"] > 0
    with pytest.raises(ValueError, match="Meta-World only"):
        RobotConfig("r", "0", "x", "y", (1,), sim="libero", oracle="expert")


def test_perturbed_expert_demos_still_succeed_and_record_what_was_executed():
    """ActionNoise: held xyz offsets on the coarse waypoints, none on grasp and release; the
    episode records the executed (perturbed) actions, the same for the same seed, and what the
    expert commanded (the BC labels)."""
    from services.robot_sim.libero_experts import ActionNoise, expert_episode

    noise = ActionNoise(std=0.3)
    with LiberoSim(LiberoConfig(suite="libero_object", task=5, image_size=32)) as sim:
        clean = expert_episode(sim, 7, render=False)
        noisy = expert_episode(sim, 7, render=False, noise=noise)
        again = expert_episode(sim, 7, render=False, noise=noise)
    assert clean.success and noisy.success
    np.testing.assert_array_equal(noisy.actions, again.actions)  # reproducible per seed
    n = min(clean.length, noisy.length)
    assert not np.allclose(clean.actions[:n, :3], noisy.actions[:n, :3])
    assert np.all(np.abs(noisy.actions) <= 1.0) and np.all(noisy.actions[:, 3:6] == 0)
    assert clean.expert_actions is None and noisy.expert_actions.shape == noisy.actions.shape
    executed_offset = noisy.actions[:, :3] - noisy.expert_actions[:, :3]
    assert np.abs(executed_offset).max() > 0.05  # the offsets are in actions, not in the labels
    np.testing.assert_array_equal(noisy.actions[:, 6], noisy.expert_actions[:, 6])  # the gripper is never perturbed


def test_the_local_pilot_loop_runs_a_base_on_libero():
    """scripts/pilot_base.py's in-process loop (local_eval) drives LIBERO like Meta-World."""
    import torch

    from services.robot_sim.local_eval import run_local_episodes
    from w2a_models.base_policy.tiny_vla import TinyVLA, TinyVLAConfig, TinyVLANet

    torch.manual_seed(0)
    base = TinyVLA(TinyVLANet(TinyVLAConfig(camera="agentview", image_size=32, state_dim=36, action_dim=7)))
    with LiberoSim(LiberoConfig(suite="libero_object", task=0, image_size=32)) as sim:
        (episode,) = run_local_episodes(base, sim, [90_000], max_steps=16)
    assert episode.seed == 90_000 and episode.steps == 16 and not episode.success


def test_multisampling_is_off_by_default_and_two_sims_in_one_process_render_their_own_scene():
    plain = LiberoSim(LiberoConfig(task=0, image_size=32))
    smooth = LiberoSim(LiberoConfig(task=0, image_size=32, antialias=True))
    try:
        plain.reset(5)
        smooth.reset(5)  # the same placement; its GL context is made last
        assert plain.env.sim.model.vis.quality.offsamples == 0
        assert smooth.env.sim.model.vis.quality.offsamples == 4
        a, b = plain.render(), smooth.render()
        assert a.shape == b.shape == (32, 32, 3) and a.std() > 10
        difference = np.abs(a.astype(np.int16) - b).mean()
        assert 0 < difference < 20  # the same scene, only its edges differ
        np.testing.assert_array_equal(plain.render(), a)  # back to the first context
    finally:
        plain.close()
        smooth.close()
