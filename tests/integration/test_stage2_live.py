"""Stage 2 against live services on loopback: a robot acts through the real policy server, its
rollouts flow through a real redis-server, ``w2a train-residual`` (a real process) asks a real
Triton world model for targets and pushes residuals the server takes live."""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import numpy as np
import pytest
import redis

from services.common.redis_server import EmbeddedRedis, free_port
from services.common.rollout_log import RolloutLogger
from services.common.rollout_record import ROLLOUT_STREAM
from services.policy.server import PolicyServer
from services.world_model.client import WorldModelClient
from services.world_model.launcher import TritonPorts, TritonServer
from tests.policy_helpers import ROBOT, TRAINER, ServerThread, observation, settings, tiny_base
from w2a_client.client import PolicyClient
from w2a_models.adapters import AdapterConfig, Stage1Adapters
from w2a_models.checkpoints import load_checkpoint, save_module
from w2a_models.world_model.builder import build_tiny


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm")
    server = TritonServer(build_tiny(root / "tiny"), root / "triton",
                          TritonPorts(free_port(), free_port(), free_port()))
    server.start(timeout=180)
    try:
        yield f"127.0.0.1:{server.ports.grpc}"
    finally:
        server.stop()


def _adapters(directory, wm_url, chunk_size):
    with WorldModelClient(wm_url) as wm:
        dim = wm.generate(np.zeros((32, 32, 3), np.uint8), "reach", chunk_size + 1).features.shape[-1]
    config = AdapterConfig(token_dim=dim, action_dim=4, chunk_size=chunk_size)
    save_module(directory, Stage1Adapters(config), "1", config={"adapter": asdict(config)})
    return directory


def _robot(target, stop, versions, errors):
    images, state = observation(3)
    with PolicyClient(target, ROBOT) as client:
        episode = 0
        while not stop.is_set():
            try:
                for step in range(0, 16, 4):
                    chunk = client.act("r1", images, state, "push the puck to the goal",
                                       episode_id=f"ep{episode}", step=step, skill="push the puck")
                    versions.append(chunk.version)
                client.end_episode("r1", f"ep{episode}", 16, success=episode % 2 == 0)
            except Exception as exc:  # noqa: BLE001 - the test asserts there were none
                errors.append(exc)
            episode += 1


def test_the_policy_version_rises_while_a_robot_acts(world_model, tmp_path):
    base = tiny_base()
    adapters = _adapters(tmp_path / "adapters", world_model, base.spec.chunk_size)
    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, ROLLOUT_STREAM, tmp_path / "spool")
        server = PolicyServer(settings(tmp_path / "policy", log_rollouts=True), base, logger)
        with ServerThread(server) as srv:
            stop, versions, errors = threading.Event(), [], []
            robot = threading.Thread(target=_robot, args=(srv.target, stop, versions, errors))
            robot.start()
            env = {**os.environ, "W2A_TRAINER_REDIS_URL": rds.url, "W2A_TRAINER_WM_URL": world_model,
                   "W2A_TRAINER_POLICY_URL": srv.target, "W2A_TRAINER_POLICY_TOKEN": TRAINER,
                   "W2A_TRAINER_ADAPTERS": str(adapters), "W2A_TRAINER_OUT": str(tmp_path / "trainer"),
                   "W2A_TRAINER_BATCH_SIZE": "4", "W2A_TRAINER_PUSH_EVERY": "1",
                   "W2A_TRAINER_RESIDUAL_HIDDEN": "32", "W2A_TRAINER_LR": "0.01",
                   "W2A_TRAINER_METRICS_PORT": "0", "W2A_TRAINER_CONSUMER": "t0"}
            trainer = subprocess.Popen([sys.executable, "-m", "services.cli", "train-residual"],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                with PolicyClient(srv.target, ROBOT) as info:
                    deadline = time.monotonic() + 120
                    while info.info().residual_version < 3 and time.monotonic() < deadline \
                            and trainer.poll() is None:
                        time.sleep(0.2)
                    live_version = info.info().residual_version
            finally:
                trainer.send_signal(signal.SIGTERM)
                out, _ = trainer.communicate(timeout=60)
                stop.set()
                robot.join(30)
        assert trainer.returncode == 0, out
        assert live_version >= 3, out
        assert not errors, errors[:3]
        assert versions[0] == 0 and max(versions) >= 3  # the robot got the new residuals live
        assert versions == sorted(versions)  # one robot, one server: versions only go up
        _tensors, manifest = load_checkpoint(tmp_path / "trainer" / "checkpoint")
        assert manifest.config["updates"] >= 3 and manifest.config["applied_ids"]
        client = redis.Redis.from_url(rds.url)
        pending = client.xpending(ROLLOUT_STREAM, "trainer")["pending"]
        assert pending < 4  # at most the partial batch the trainer had not trained on yet
        client.close()


def test_pusher_waits_for_an_absent_server_and_steps_over_versions_pushed_by_others(tmp_path):
    from services.trainer.pusher import WeightPusher
    from tests.policy_helpers import residual_blob
    from w2a_models.checkpoints import unpack_tensors

    base = tiny_base()
    port = free_port()
    blob, manifest = residual_blob(base, 1)
    tensors = unpack_tensors(blob, manifest)
    client = PolicyClient(f"127.0.0.1:{port}", TRAINER, timeout=1.0, retries=0)
    pusher = WeightPusher(client, backoff_s=0.05, max_backoff_s=0.2)
    try:
        pusher.offer(tensors, manifest.config, update=1)
        time.sleep(0.5)
        assert pusher.pushed_version == 0 and "UNAVAILABLE" in pusher.last_error
        with ServerThread(PolicyServer(settings(tmp_path / "p", port=port), base)) as srv:
            assert pusher.flush(30) and pusher.pushed_version == 1
            other_blob, other_manifest = residual_blob(base, 5, parent=1)  # another trainer's push
            with PolicyClient(srv.target, TRAINER) as other:
                assert other.push_residual(other_blob, other_manifest).version == 5
            pusher.offer(tensors, manifest.config, update=2)
            assert pusher.flush(30) and pusher.pushed_version == 6
            with PolicyClient(srv.target, ROBOT) as robot:
                assert robot.info().residual_version == 6
    finally:
        pusher.close(1)
        client.close()
