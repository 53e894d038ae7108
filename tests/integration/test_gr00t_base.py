"""A remote GR00T inference server as the frozen base, over real ZeroMQ on loopback."""

import time

import grpc
import numpy as np
import pytest

from services.common.redis_server import free_port
from services.policy.backends.gr00t_base import Gr00tBase, Gr00tBaseConfig
from services.policy.server import PolicyServer
from tests.gr00t_helpers import Gr00tTestServer, toy_actions
from tests.policy_helpers import ROBOT, SIZE, ServerThread, settings
from w2a_client.client import PolicyClient
from w2a_models.base_policy import BaseUnavailable, CameraSpec, ObservationBatch

STATE = 8  # single_arm 7 + gripper 1


def _base(port, **kw):
    return Gr00tBase(Gr00tBaseConfig(port=port, api_token="tok", cameras=(CameraSpec("corner", SIZE, SIZE),),
                                     chunk_size=8, timeout_ms=kw.pop("timeout_ms", 1000), **kw))


def _batch(n=2, text="grasp the cube"):
    rng = np.random.default_rng(0)
    return ObservationBatch(images={"corner": rng.integers(0, 255, (n, SIZE, SIZE, 3), dtype=np.uint8)},
                            state=rng.standard_normal((n, STATE)).astype(np.float32), instructions=[text] * n)


def test_actions_come_from_the_remote_policy():
    port = free_port()
    base, batch = _base(port), _batch()
    with Gr00tTestServer(port, api_token="tok"):
        assert base.ping()
        out = base.predict(batch)
    assert out.actions.shape == (2, 8, 7)
    for i in range(2):
        obs = {"state.single_arm": batch.state[i, :7][None], "video.ego_view": batch.images["corner"][i][None],
               "annotation.human.task_description": [batch.instructions[i]]}
        want = toy_actions(obs)
        np.testing.assert_allclose(out.actions[i, :, :6], want["action.single_arm"][:8], atol=1e-6)
        np.testing.assert_allclose(out.actions[i, :, 6], 0.5)
    base.close()


def test_wrong_token_and_dead_or_slow_server_are_unavailable_never_a_hang():
    port = free_port()
    with Gr00tTestServer(port, api_token="other"), pytest.raises(BaseUnavailable, match="Unauthorized"):
        _base(port).predict(_batch(1))
    base = _base(port, timeout_ms=300)
    t0 = time.monotonic()
    with pytest.raises(BaseUnavailable, match="no reply within"):
        base.predict(_batch(1))  # nobody listens
    assert time.monotonic() - t0 < 2
    with Gr00tTestServer(port, api_token="tok", delay_s=1.0), pytest.raises(BaseUnavailable, match="no reply within"):
        base.predict(_batch(1))
    with Gr00tTestServer(port, api_token="tok"):  # back: a fresh socket, a good answer
        assert base.predict(_batch(1)).actions.shape == (1, 8, 7)
    base.close()


def test_robots_through_the_policy_server_get_unavailable_then_recover(tmp_path):
    port = free_port()
    base = _base(port, timeout_ms=500)
    images = {"corner": np.zeros((SIZE, SIZE, 3), np.uint8)}
    state = np.zeros(STATE, np.float32)
    server = PolicyServer(settings(tmp_path, action_low=[-1.0] * 7, action_high=[1.0] * 7), base)
    with ServerThread(server) as front, PolicyClient(front.target, ROBOT, retries=0, timeout=10) as robot:
        with Gr00tTestServer(port, api_token="tok"):
            assert robot.act("r", images, state, "grasp the cube").actions.shape == (8, 7)
        with pytest.raises(grpc.RpcError) as err:
            robot.act("r", images, state, "grasp the cube")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "GR00T" in err.value.details()
        with Gr00tTestServer(port, api_token="tok"):
            assert robot.act("r", images, state, "grasp the cube").actions.shape == (8, 7)
    base.close()
