"""`w2a serve policy` as a real process: SIGTERM shutdown, TLS, metrics endpoint."""

import os
import shutil
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.redis_server import EmbeddedRedis, free_port
from tests.integration.test_rollout_logging import _records
from tests.policy_helpers import ROBOT, TRAINER, observation, tiny_base
from w2a_client.client import PolicyClient

INSTR = "open the door"


def _start(tmp_path, env_extra):
    ckpt = tmp_path / "base"
    tiny_base().save(ckpt)
    port, metrics = free_port(), free_port()
    env = {**os.environ, "W2A_POLICY_PORT": str(port), "W2A_POLICY_METRICS_PORT": str(metrics),
           "W2A_POLICY_BASE__CHECKPOINT": str(ckpt), "W2A_POLICY_STATE_DIR": str(tmp_path / "state"),
           "W2A_POLICY_ROBOT_TOKENS": f'["{ROBOT}"]', "W2A_POLICY_TRAINER_TOKEN": TRAINER,
           **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "policy"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, port, metrics


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


def test_sigterm_drains_and_flushes_rollouts(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        proc, port, metrics = _start(tmp_path, {"W2A_POLICY_REDIS_URL": rds.url})
        try:
            with PolicyClient(f"127.0.0.1:{port}", ROBOT, timeout=10) as client:
                client.wait_ready(60)
                health = health_pb2_grpc.HealthStub(client.channel).Check(
                    health_pb2.HealthCheckRequest(service="w2a.v1.PolicyService"), timeout=5)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                images, state = observation()
                for step in range(5):
                    client.act("r1", images, state, INSTR, episode_id="e", step=step)
            body = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
            assert "w2a_policy_request_seconds_count" in body and "w2a_policy_batch_size" in body
        finally:
            code, out = _stop(proc)
        assert code == 0, out
        assert "draining" in out
        assert [r["step"] for r in _records(rds.url)] == [0, 1, 2, 3, 4]


def test_bad_settings_fail_fast_with_a_clear_message(tmp_path):
    proc, _, _ = _start(tmp_path, {"W2A_POLICY_TRAINER_TOKEN": ""})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "W2A_POLICY_TRAINER_TOKEN" in out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a cert")
def test_tls(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    proc, port, _ = _start(tmp_path, {"W2A_POLICY_TLS_CERT": str(cert), "W2A_POLICY_TLS_KEY": str(key),
                                      "W2A_POLICY_LOG_ROLLOUTS": "false", "W2A_POLICY_METRICS_PORT": "0"})
    try:
        with PolicyClient(f"localhost:{port}", ROBOT, root_certificates=cert.read_bytes(),
                          timeout=10) as client:
            client.wait_ready(60)
            images, state = observation()
            assert client.act("r", images, state, INSTR).actions.shape == (4, 4)
        with PolicyClient(f"127.0.0.1:{port}", ROBOT, retries=0, timeout=3) as plain, pytest.raises(grpc.RpcError):
            plain.info()
    finally:
        code, out = _stop(proc)
    assert code == 0, out
