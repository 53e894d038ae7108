"""PolicyService acts without any transport: plain calls, domain errors, the logged record."""

import asyncio

import numpy as np
import pytest

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import RolloutLogger, logged_image
from services.common.rollout_record import EpisodeEnd, StepRecord
from services.policy.engine import BatchConfig, PolicyEngine
from services.policy.metrics import PolicyMetrics
from services.policy.safety import SafetyConfig
from services.policy.service import InvalidRequest, PolicyService, RobotStep
from tests.policy_helpers import observation, settings, stream_records, tiny_base


def _service(tmp_path, rollouts=None) -> PolicyService:
    base = tiny_base()
    engine = PolicyEngine(base, SafetyConfig((-1.0,) * 4, (1.0,) * 4, 0.5), BatchConfig(4, 1.0))
    return PolicyService(settings(tmp_path), base, engine, PolicyMetrics(), rollouts)


def _step(**kw) -> RobotStep:
    images, state = observation()
    return RobotStep(**{"robot_id": "r1", "episode_id": "e1", "step": 0, "instruction": "push the puck",
                        "images": images, "state": state, "skill": "push", **kw})


async def _run(service: PolicyService, steps):
    await service.engine.start()
    try:
        return [await service.act(s, "test") for s in steps]
    finally:
        await service.engine.stop()


def test_act_answers_a_chunk_inside_the_bounds(tmp_path):
    (out,) = asyncio.run(_run(_service(tmp_path), [_step()]))
    assert out.final.shape == (4, 4) and out.version == 0 and not out.fallback
    assert np.all(np.abs(out.final) <= 1.0) and out.server_ms > 0


@pytest.mark.parametrize(("change", "field"), [
    ({"robot_id": ""}, "robot_id"),
    ({"instruction": "   "}, "instruction"),
    ({"state": np.zeros(3, np.float32)}, "observation.state"),
    ({"state": np.full(18, np.nan, np.float32)}, "observation.state"),
    ({"images": {}}, "observation.images"),
    ({"images": {"corner": np.zeros((8, 8, 3), np.uint8)}}, "observation.images"),
    ({"skill": "x" * 5000}, "skill"),
])
def test_bad_steps_raise_invalid_request_naming_the_field(tmp_path, change, field):
    service = _service(tmp_path)
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(_run(service, [_step(**change)]))
    assert err.value.field == field
    assert service.metrics.rejected.labels("INVALID_ARGUMENT")._value.get() == 1


def test_served_steps_and_the_episode_end_are_logged_as_typed_records(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, "w2a:test", tmp_path / "spool")
        logger.start()
        service = _service(tmp_path, logger)
        outs = asyncio.run(_run(service, [_step(step=0), _step(step=4, evaluation=True)]))
        service.end_episode("r1", "e1", 8, success=True)
        logger.stop()
        records = stream_records(rds.url, "w2a:test")
    steps, end = records[:2], records[2]
    assert all(isinstance(r, StepRecord) for r in steps) and isinstance(end, EpisodeEnd) and end.success
    np.testing.assert_allclose(steps[0].final, outs[0].final)
    assert steps[0].skill == "push" and steps[0].trainable and not steps[1].trainable
    np.testing.assert_array_equal(logged_image(steps[0].images["corner"]), observation()[0]["corner"])
    with pytest.raises(InvalidRequest):
        service.end_episode("", "e1", 8, success=False)
