"""A remote Cosmos Policy server as the frozen base, over real HTTP on loopback: a small server
that speaks its deploy.py protocol (POST /act, JSON nested-list images, "error" on failure)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest

from services.common.redis_server import free_port
from services.policy.backends.cosmos_policy_base import CosmosPolicyBase, CosmosPolicyBaseConfig
from services.policy.server import PolicyServer
from tests.policy_helpers import ROBOT, SIZE, ServerThread, settings
from w2a_client.client import PolicyClient
from w2a_models.base_policy import BaseUnavailable, CameraSpec, ObservationBatch


def toy_actions(payload, horizon=12, dim=4):
    proprio = np.asarray(payload["proprio"], np.float64)
    image = np.asarray(payload["primary_image"], np.float64).mean() / 255.0
    return np.tanh(proprio[:dim][None] * 0.1 + np.arange(horizon)[:, None] / horizon + image)


class CosmosPolicyTestServer:
    def __init__(self, port, delay_s=0.0):
        outer = self
        self.delay_s = delay_s

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(outer.delay_s)
                try:
                    for key in ("primary_image", "left_wrist_image", "right_wrist_image"):
                        np.asarray(body[key], np.uint8)
                    reply = {"actions": toy_actions(body).tolist(), "value_prediction": 0.0}
                except (KeyError, ValueError):
                    reply = "error"
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _base(port, **kw):
    return CosmosPolicyBase(CosmosPolicyBaseConfig(url=f"http://127.0.0.1:{port}",
                                                   cameras=(CameraSpec("corner", SIZE, SIZE),),
                                                   state_dim=18, action_dim=4, chunk_size=8, **kw))


def _batch(n=2):
    rng = np.random.default_rng(0)
    return ObservationBatch(images={"corner": rng.integers(0, 255, (n, SIZE, SIZE, 3), dtype=np.uint8)},
                            state=rng.standard_normal((n, 18)).astype(np.float32), instructions=["fold"] * n)


def test_actions_come_from_the_remote_policy():
    port = free_port()
    base, batch = _base(port), _batch()
    with CosmosPolicyTestServer(port):
        out = base.predict(batch)
    for i in range(2):
        want = toy_actions({"proprio": batch.state[i], "primary_image": batch.images["corner"][i]})
        np.testing.assert_allclose(out.actions[i], want[:8], atol=1e-5)
    base.close()


def test_server_error_slow_and_down_are_unavailable():
    port = free_port()
    with CosmosPolicyTestServer(port), pytest.raises(BaseUnavailable, match="server error"):
        _base(port, blank_image_keys=()).predict(_batch(1))  # the server needs the wrist keys
    with CosmosPolicyTestServer(port, delay_s=1.5), pytest.raises(BaseUnavailable, match="no answer within"):
        _base(port, call_timeout_s=0.5).predict(_batch(1))
    t0 = time.monotonic()
    with pytest.raises(BaseUnavailable):
        _base(port).predict(_batch(1))
    assert time.monotonic() - t0 < 3


def test_robots_get_unavailable_then_recover(tmp_path):
    port = free_port()
    base = _base(port, call_timeout_s=2.0)
    images, state = {"corner": np.zeros((SIZE, SIZE, 3), np.uint8)}, np.zeros(18, np.float32)
    with ServerThread(PolicyServer(settings(tmp_path), base)) as front, \
            PolicyClient(front.target, ROBOT, retries=0, timeout=10) as robot:
        with CosmosPolicyTestServer(port):
            assert robot.act("r", images, state, "fold").actions.shape == (8, 4)
        with pytest.raises(grpc.RpcError) as err:
            robot.act("r", images, state, "fold")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "Cosmos Policy" in err.value.details()
        with CosmosPolicyTestServer(port):
            assert robot.act("r", images, state, "fold").actions.shape == (8, 4)
    base.close()
