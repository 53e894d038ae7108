"""The openpi-compatible endpoint, driven by the real `openpi-client` WebsocketClientPolicy as the
robot: several clients at once, rollouts logged like gRPC steps, clear errors, reconnect after a
server restart, /healthz, auth."""

import threading
import urllib.request

import numpy as np
import pytest

pytest.importorskip("openpi_client")
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from services.common.redis_server import EmbeddedRedis, free_port
from services.common.rollout_log import RolloutLogger, logged_image
from services.common.rollout_record import ROLLOUT_STREAM, EpisodeEnd, StepRecord
from services.policy.server import PolicyServer
from tests.policy_helpers import ROBOT, SIZE, ServerThread, settings, stream_records, tiny_base


def _obs(seed=0, size=224, chw=False):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return {"observation/image": np.transpose(image, (2, 0, 1)) if chw else image,
            "observation/state": rng.standard_normal(18).astype(np.float32),
            "prompt": "push the puck to the goal"}


def test_openpi_clients_act_concurrently_and_their_steps_are_logged(tmp_path):
    port = free_port()
    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, ROLLOUT_STREAM, tmp_path / "spool")
        server = PolicyServer(settings(tmp_path / "p", log_rollouts=True, openpi_port=port), tiny_base(), logger)
        with ServerThread(server):
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
            results, errors = {}, []

            def robot(i):
                try:
                    client = WebsocketClientPolicy("127.0.0.1", port, api_key=ROBOT)
                    meta = client.get_server_metadata()
                    assert meta["action_horizon"] == 4 and meta["action_dim"] == 4
                    outs = [client.infer({**_obs(i, chw=i % 2 == 1), "robot_id": f"pi-{i}",
                                          "episode_id": "e1", "step": 4 * k}) for k in range(5)]
                    client.infer({"robot_id": f"pi-{i}", "episode_id": "e1", "episode_end": True,
                                  "success": True})
                    results[i] = outs
                except Exception as exc:  # noqa: BLE001 - asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=robot, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        records = stream_records(rds.url)
    assert not errors, errors
    for outs in results.values():
        for out in outs:
            assert out["actions"].shape == (4, 4) and out["actions"].dtype == np.float32
            np.testing.assert_allclose(out["actions"], out["base_actions"] + out["residual_actions"], atol=1e-5)
            assert out["policy_version"] == 0 and "infer_ms" in out["server_timing"]
    steps = [r for r in records if isinstance(r, StepRecord)]
    assert len(steps) == 20 and {r.robot_id for r in steps} == {f"pi-{i}" for i in range(4)}
    assert logged_image(steps[0].images["corner"]).shape == (SIZE, SIZE, 3)
    assert sum(isinstance(r, EpisodeEnd) for r in records) == 4


def test_bad_observations_get_clear_errors_and_the_connection_survives(tmp_path):
    port = free_port()
    with ServerThread(PolicyServer(settings(tmp_path, openpi_port=port), tiny_base())):
        client = WebsocketClientPolicy("127.0.0.1", port, api_key=ROBOT)
        cases = {
            "missing image key": {k: v for k, v in _obs().items() if k != "observation/image"},
            "observation.state: has 5 values": {**_obs(), "observation/state": np.zeros(5, np.float32)},
            "instruction: must not be empty": {**_obs(), "prompt": ""},
            "3 dimensions": {**_obs(), "observation/image": np.zeros((8, 8), np.uint8)},
        }
        for needle, obs in cases.items():
            with pytest.raises(RuntimeError, match=needle):
                client.infer(obs)
        assert client.infer(_obs())["actions"].shape == (4, 4)  # still serving this connection
        with pytest.raises(Exception, match="401"):
            WebsocketClientPolicy("127.0.0.1", port, api_key="not-a-robot-token")


def test_a_client_reconnects_after_a_server_restart(tmp_path):
    port = free_port()
    with ServerThread(PolicyServer(settings(tmp_path, openpi_port=port), tiny_base())):
        first = WebsocketClientPolicy("127.0.0.1", port, api_key=ROBOT).infer(_obs())
    with ServerThread(PolicyServer(settings(tmp_path, openpi_port=port), tiny_base())):
        again = WebsocketClientPolicy("127.0.0.1", port, api_key=ROBOT).infer(_obs())
    np.testing.assert_allclose(first["actions"], again["actions"], atol=1e-5)  # same base, same obs
