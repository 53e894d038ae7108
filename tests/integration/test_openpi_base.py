"""A remote openpi server as the frozen base: the remote here is a w2a policy server's openpi
endpoint (it speaks openpi's wire protocol), reached through the real openpi-client package."""

import time

import grpc
import numpy as np
import pytest

pytest.importorskip("openpi_client")

import contextlib

from services.common.redis_server import free_port
from services.policy.backends.openpi_base import OpenpiBase, OpenpiBaseConfig
from services.policy.server import PolicyServer
from tests.policy_helpers import ROBOT, SIZE, ServerThread, observation, settings, tiny_base
from w2a_client.client import PolicyClient
from w2a_models.base_policy import BaseUnavailable, CameraSpec, ObservationBatch


def _remote(tmp_path, port):
    return ServerThread(PolicyServer(settings(tmp_path / f"remote-{time.monotonic_ns()}", openpi_port=port),
                                     tiny_base()))


def _openpi_base(port, **kw):
    return OpenpiBase(OpenpiBaseConfig(port=port, api_key=ROBOT, cameras=(CameraSpec("corner", SIZE, SIZE),),
                                       state_dim=18, action_dim=4, chunk_size=4, call_timeout_s=2.0, **kw))


def _batch(n=3):
    rows = [observation(i) for i in range(n)]
    return ObservationBatch(images={"corner": np.stack([r[0]["corner"] for r in rows])},
                            state=np.stack([r[1] for r in rows]), instructions=["push the puck"] * n)


def test_remote_actions_match_the_model_behind_the_openpi_server(tmp_path):
    port = free_port()
    base = _openpi_base(port)
    batch = _batch()
    with _remote(tmp_path, port):
        out = base.predict(batch)
    expected = tiny_base().predict(batch)
    np.testing.assert_allclose(out.actions, expected.actions, atol=1e-5)
    assert out.features.shape == (3, base.spec.feature_dim) and np.isfinite(out.features).all()
    base.close()


def test_robots_get_unavailable_when_the_remote_base_is_down_and_recover_after(tmp_path):
    port = free_port()
    base = _openpi_base(port)
    images, state = observation()
    with ServerThread(PolicyServer(settings(tmp_path / "front"), base)) as front, \
            PolicyClient(front.target, ROBOT, retries=0, timeout=10) as robot:
        with _remote(tmp_path, port):
            first = robot.act("r", images, state, "push the puck")
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            robot.act("r", images, state, "push the puck")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "base policy unavailable" in err.value.details()
        assert time.monotonic() - t0 < 8  # connect timeout bounds it: never a hang
        with _remote(tmp_path, port):  # the remote comes back: the next call reconnects
            again = robot.act("r", images, state, "push the puck")
        np.testing.assert_allclose(again.base, first.base, atol=1e-5)
    base.close()


def test_a_slow_remote_hits_the_call_deadline():
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept_and_stall():  # accepts TCP, never completes the websocket handshake
        conns = []
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conns.append(listener.accept()[0])
        for c in conns:
            c.close()

    thread = threading.Thread(target=accept_and_stall, daemon=True)
    thread.start()
    base = _openpi_base(port, connect_timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(BaseUnavailable, match="took longer than"):
        base.predict(_batch(1))
    assert time.monotonic() - t0 < 3
    stop.set()
    thread.join(2)
    listener.close()
    base.close()
