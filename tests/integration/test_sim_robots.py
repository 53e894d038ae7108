"""Simulated robots: real Meta-World scenes in their own processes, acting through a real policy
server over gRPC, their steps and episode markers landing in a real Redis Stream."""

import pytest
import redis

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import STREAM_FIELD, RolloutLogger, unpack_record
from services.planner.rules import decompose
from services.policy.server import PolicyServer
from services.robot_sim.collect import instruction_for, rollout_expert
from services.robot_sim.metaworld_env import MetaWorldSim, ScriptedExpert, SimConfig
from services.robot_sim.robot import RobotConfig, SkillTracker, run_robots, split_seeds, summarise
from tests.policy_helpers import ROBOT, SIZE, ServerThread, settings, tiny_base

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
        logger = RolloutLogger(rds.url, "w2a:rollouts", tmp_path / "spool")
        with ServerThread(PolicyServer(settings(tmp_path / "p", log_rollouts=True), tiny_base(),
                                       logger)) as srv:
            configs = [RobotConfig(f"r{i}", task, srv.target, ROBOT, group, image_size=SIZE, max_steps=24,
                                   camera="corner")  # the test base reads a "corner" camera
                       for i, group in enumerate(split_seeds(seeds, 2))]
            results = run_robots(configs)
        records = [unpack_record(f[STREAM_FIELD.encode()])
                   for _, f in redis.Redis.from_url(rds.url).xrange("w2a:rollouts")]
    assert sorted(r.seed for r in results) == seeds
    assert all(r.steps == 24 and r.chunks == 6 and not r.success for r in results)  # untrained base
    summary = summarise(task, "w2a", results)
    assert summary["episodes"] == 3 and summary["success_rate"] == 0.0 and summary["ci95"][1] < 0.8
    steps = [r for r in records if r["kind"] == "step"]
    ends = [r for r in records if r["kind"] == "episode_end"]
    assert len(steps) == 18 and len(ends) == 3
    plan = {s.description for s in decompose(instruction_for(task), task)}
    assert {r["skill"] for r in steps} <= plan and all(r["instruction"] for r in steps)
    assert {r["robot_id"] for r in steps} == {"r0", "r1"}
    assert not any(r["evaluation"] for r in records)
