"""Simulated robots: real Meta-World scenes in their own processes, acting through a real policy
server over gRPC, their steps and episode markers landing in a real Redis Stream."""

import pytest

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import RolloutLogger, logged_image
from services.common.rollout_record import ROLLOUT_STREAM, EpisodeEnd, StepRecord
from services.policy.server import PolicyServer
from services.robot_sim.collect import instruction_for, rollout_expert
from services.robot_sim.metaworld_env import MetaWorldSim, ScriptedExpert, SimConfig
from services.robot_sim.robot import RobotConfig, SkillTracker, run_robots, split_seeds, summarise
from tests.policy_helpers import ROBOT, SIZE, ServerThread, settings, stream_records, tiny_base
from w2a_models.plan_rules import decompose

pytestmark = pytest.mark.sim


def test_skill_tracker_walks_the_plan_in_order_on_an_expert_episode():
    task = "pick-place-v3"
    with MetaWorldSim(SimConfig(task=task, image_size=32)) as sim:
        episode = rollout_expert(sim, ScriptedExpert(task), seed=3, settle_steps=5)
    texts = [s.description for s in decompose(episode.instruction, task)]
    tracker = SkillTracker(episode.instruction, task, episode.action_repeat)
    seen = [tracker.current()]
    for t in range(episode.length):
        tracker.observe(episode.state[t], 1.0 if episode.gripper[t] > 0.5 else -1.0)
        if t % 4 == 3:  # the robot asks once per action chunk
            seen.append(tracker.current())
    order = [texts.index(s) for s in seen]
    assert order == sorted(order), seen  # never goes back to an earlier skill
    assert seen[0] == texts[0] and seen[-1] == texts[-1]


def test_two_robot_processes_act_and_their_episodes_reach_the_stream(tmp_path):
    task, seeds = "push-v3", [100_000, 100_001, 100_002]
    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, ROLLOUT_STREAM, tmp_path / "spool")
        with ServerThread(PolicyServer(settings(tmp_path / "p", log_rollouts=True), tiny_base(),
                                       logger)) as srv:
            configs = [RobotConfig(f"r{i}", task, srv.target, ROBOT, group, image_size=SIZE, max_steps=24,
                                   camera="corner")  # the test base reads a "corner" camera
                       for i, group in enumerate(split_seeds(seeds, 2))]
            results = run_robots(configs)
        records = stream_records(rds.url)
    assert sorted(r.seed for r in results) == seeds
    assert all(r.steps == 24 and r.chunks == 6 and not r.success for r in results)  # untrained base
    summary = summarise(task, "w2a", results)
    assert summary["episodes"] == 3 and summary["success_rate"] == 0.0 and summary["ci95"][1] < 0.8
    steps = [r for r in records if isinstance(r, StepRecord)]
    ends = [r for r in records if isinstance(r, EpisodeEnd)]
    assert len(steps) == 18 and len(ends) == 3
    plan = {s.description for s in decompose(instruction_for(task), task)}
    assert {r.skill for r in steps} <= plan and all(r.instruction for r in steps)
    assert {r.robot_id for r in steps} == {"r0", "r1"}
    assert not any(r.evaluation for r in records)


def test_oracle_records_match_a_fresh_expert_rollout_from_the_same_state(tmp_path):
    """The logged teacher is what the scripted expert does from the robot's exact state: replay
    the executed actions in a fresh simulator, then run the expert one chunk."""
    import numpy as np

    task, seed, chunk = "push-v3", 10_123, 4  # the test base acts in chunks of 4
    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, ROLLOUT_STREAM, tmp_path / "spool")
        with ServerThread(PolicyServer(settings(tmp_path / "p", log_rollouts=True), tiny_base(),
                                       logger)) as srv:
            config = RobotConfig("r0", task, srv.target, ROBOT, (seed,), image_size=SIZE, max_steps=12,
                                 camera="corner", oracle="expert+future")
            (result,) = run_robots([config])
        records = stream_records(rds.url, oracle=True)
    steps = sorted((r for r in records if isinstance(r, StepRecord)), key=lambda r: r.step)
    assert result.steps == 12 and len(steps) == 3
    assert all(r.expert_actions is not None and r.expert_future is not None for r in steps)
    expert = ScriptedExpert(task)
    with MetaWorldSim(SimConfig(task=task, image_size=SIZE, camera="corner", max_steps=12)) as sim:
        sim.reset(seed)
        for record in steps:
            logged, future = record.expert_actions, record.expert_future
            assert logged.shape == (chunk, 4) and future.shape == (chunk + 1, SIZE, SIZE, 3)
            frame_now = logged_image(record.images["corner"])
            np.testing.assert_array_equal(future[0], frame_now)  # the future starts at this observation
            # a second simulator, brought to this state by replaying what was executed
            with MetaWorldSim(sim.config) as fresh:
                o = fresh.reset(seed)
                for prev in steps[:steps.index(record)]:
                    for a in prev.final:
                        o = fresh.step(np.clip(a, -1, 1)).obs
                rollout, frames = [], [fresh.render()]
                for _ in range(chunk):
                    rollout.append(expert(o))
                    o = fresh.step(rollout[-1]).obs
                    frames.append(fresh.render())
            np.testing.assert_allclose(logged, np.stack(rollout), atol=1e-6)
            np.testing.assert_array_equal(future, np.stack(frames))
            for a in record.final:
                sim.step(np.clip(a, -1, 1))
    # the robot acted on the policy's chunks, not the teacher's: the teacher is only logged
    assert not np.allclose(steps[0].final, steps[0].expert_actions)
