"""Faults with real processes on loopback, each counted: sent, acknowledged, trained on, lost."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import grpc
import numpy as np
import redis

from services.common.redis_server import EmbeddedRedis, free_port
from services.common.rollout_log import STREAM_FIELD, RolloutLogger, logged_image_entry, pack_record, unpack_record
from services.common.rollout_record import ROLLOUT_STREAM, StepRecord
from services.policy.server import PolicyServer
from services.trainer.residual_trainer import ResidualTrainer, ResidualTrainerConfig
from services.trainer.rollout_stream import RolloutStream, StreamConfig, group_lag
from services.trainer.targets import TableTargets
from tests.policy_helpers import ROBOT, TRAINER, ServerThread, observation, residual_blob, tiny_base
from tests.policy_helpers import settings as policy_settings
from tests.reliability.conftest import QUICK
from w2a_client.client import PolicyClient
from w2a_models.adapters import AdapterConfig, Stage1Adapters
from w2a_models.checkpoints import save_module

STREAM = ROLLOUT_STREAM


def _stream_records(url):
    client = redis.Redis.from_url(url)
    try:
        return [unpack_record(f[STREAM_FIELD.encode()]) for _, f in client.xrange(STREAM)]
    finally:
        client.close()


def _adapters(feature_dim=16, chunk=4):
    torch_cfg = AdapterConfig(token_dim=feature_dim, action_dim=4, chunk_size=chunk)
    return Stage1Adapters(torch_cfg)


class Robot(threading.Thread):
    """Acts in a closed loop through the policy server; counts answered and failed steps."""

    def __init__(self, target, name):
        super().__init__(daemon=True)
        self.target, self.name_, self.stop = target, name, threading.Event()
        self.answered, self.errors = [], 0

    def run(self):
        images, state = observation(1)
        with PolicyClient(self.target, ROBOT, retries=0, timeout=5) as client:
            step = 0
            while not self.stop.is_set():
                try:
                    client.act(self.name_, images, state, "push the puck", episode_id="e", step=step,
                               skill="push the puck")
                    self.answered.append(f"{self.name_}/e/{step}")
                except Exception:  # noqa: BLE001 - counted, asserted zero
                    self.errors += 1
                step += 1
                time.sleep(0.002)


def test_redis_kill_9_while_robots_act_and_the_trainer_consumes(tmp_path, report):
    port = free_port()
    rds = EmbeddedRedis(tmp_path / "redis", port=port).start()
    base = tiny_base()
    logger = RolloutLogger(rds.url, STREAM, tmp_path / "spool", retry_interval=0.1)
    server = PolicyServer(policy_settings(tmp_path / "policy", log_rollouts=True), base, logger)
    client = redis.Redis.from_url(rds.url, socket_timeout=2, socket_connect_timeout=1)
    stream = RolloutStream(client, StreamConfig(block_ms=50))
    stream.ensure_group()
    trainer = ResidualTrainer(stream, TableTargets(1, 16), _adapters(), tmp_path / "trainer",
                              ResidualTrainerConfig(batch_size=8, residual_hidden=32, max_wait_s=0.2))
    stop_trainer = threading.Event()
    trainer_thread = threading.Thread(target=trainer.run, args=(stop_trainer, 0.05, 0.5), daemon=True)
    down_for = 1.0 if QUICK else 3.0
    with ServerThread(server) as srv:
        robots = [Robot(srv.target, f"r{i}") for i in range(2)]
        for r in robots:
            r.start()
        trainer_thread.start()
        time.sleep(1.0)
        rds.kill()  # kill -9 the Redis server
        time.sleep(down_for)  # robots keep acting: records go to the spool
        answered_while_down = sum(len(r.answered) for r in robots)
        rds = EmbeddedRedis(tmp_path / "redis", port=port).start()  # AOF replays
        time.sleep(1.5)
        for r in robots:
            r.stop.set()
            r.join(10)
    # the server stopped: its logger flushed
    deadline = time.monotonic() + 60
    sent = {s for r in robots for s in r.answered}
    while time.monotonic() < deadline:
        steps = [r for r in _stream_records(rds.url) if r.get("kind") == "step"]
        if len(steps) >= len(sent) and group_lag(client, STREAM, "trainer") == 0 \
                and client.xpending(STREAM, "trainer")["pending"] <= 1:
            break
        time.sleep(0.2)
    stop_trainer.set()
    trainer_thread.join(30)
    steps = [r["id"] for r in _stream_records(rds.url) if r.get("kind") == "step"]
    history = [json.loads(x) for x in (tmp_path / "trainer" / "stage2_history.jsonl").read_text().splitlines()]
    trained_ids = [i for h in history for i in h["ids"]]
    by_entry = {}
    for entry_id, fields in client.xrange(STREAM):
        by_entry[entry_id.decode()] = unpack_record(fields[STREAM_FIELD.encode()])["id"]
    trained = [by_entry[i] for i in trained_ids]
    client.close()
    rds.stop()
    lost = len(sent - set(steps))
    duplicates = len(steps) - len(set(steps))
    report["faults"].append({
        "name": "redis kill -9 while robots act and the trainer consumes",
        "sent": len(sent), "acked": len(set(steps)), "trained_on": len(set(trained)),
        "lost": lost, "duplicates_in_stream": duplicates, "trained_twice": len(trained) - len(set(trained)),
        "act_errors": sum(r.errors for r in robots), "answered_while_redis_down": answered_while_down,
        "ok": lost == 0 and duplicates == 0 and len(trained) == len(set(trained))
        and sum(r.errors for r in robots) == 0})
    assert sum(r.errors for r in robots) == 0  # the policy server kept answering
    assert lost == 0 and duplicates == 0
    assert len(trained) == len(set(trained)) and len(set(steps) - set(trained)) <= 1


def _drained(client) -> bool:
    groups = [g["name"] for g in client.xinfo_groups(STREAM)]
    return b"trainer" in groups and group_lag(client, STREAM, "trainer") == 0 \
        and client.xpending(STREAM, "trainer")["pending"] <= 1


def _trainer_env(tmp_path, redis_url, adapters, **extra):
    return {**os.environ, "W2A_TRAINER_REDIS_URL": redis_url, "W2A_TRAINER_WM_URL": "127.0.0.1:1",
            "W2A_TRAINER_POLICY_URL": "127.0.0.1:1", "W2A_TRAINER_ADAPTERS": str(adapters),
            "W2A_TRAINER_OUT": str(tmp_path / "trainer"), "W2A_TRAINER_METRICS_PORT": "0",
            "W2A_TRAINER_BATCH_SIZE": "8", "W2A_TRAINER_RESIDUAL_HIDDEN": "32",
            "W2A_TRAINER_CONSUMER": "t0", "W2A_TRAINER_PUSH_EVERY": "1000000",
            "W2A_TRAINER_MAX_WAIT_S": "0.2", **extra}


def test_trainer_kill_9_at_random_points_applies_every_entry_exactly_once(tmp_path, report):
    """The trainer (a real `w2a train-residual` process whose WM targets come from a table:
    W2A_TRAINER_TARGETS=table) is killed -9 repeatedly; each restart resumes from its checkpoint."""
    n = 2000 if QUICK else 6000
    adapters_dir = tmp_path / "adapters"
    cfg = AdapterConfig(token_dim=16, action_dim=4, chunk_size=4)
    save_module(adapters_dir, Stage1Adapters(cfg), "1", config={"adapter": asdict(cfg)})
    rng = np.random.default_rng(0)
    with EmbeddedRedis(tmp_path / "redis") as rds:
        client = redis.Redis.from_url(rds.url)
        for i in range(n):
            client.xadd(STREAM, {STREAM_FIELD: pack_record(StepRecord(
                robot_id="r", episode_id="e", step=i, skill=f"skill {i % 3}",
                base=rng.standard_normal((4, 4)).astype(np.float32),
                features=rng.standard_normal(12).astype(np.float32),
                images={"corner": logged_image_entry(np.zeros((8, 8, 3), np.uint8))}).to_wire())})
        env = _trainer_env(tmp_path, rds.url, adapters_dir, W2A_TRAINER_TARGETS="table")
        kills = 0
        kill_rng = np.random.default_rng(1)
        deadline = time.monotonic() + (180 if QUICK else 600)

        def start_trainer():
            log = open(tmp_path / "trainer.log", "a+")  # noqa: SIM115 - read while it runs
            start = log.tell()
            proc = subprocess.Popen([sys.executable, "-m", "services.cli", "train-residual"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            while time.monotonic() < deadline:  # up: signal handlers installed, consuming
                log.seek(start)
                if "Stage 2 trainer" in log.read():
                    return proc
                assert proc.poll() is None, (tmp_path / "trainer.log").read_text()[-2000:]
                time.sleep(0.05)
            raise TimeoutError("trainer did not start")

        while kills < (4 if QUICK else 10) and not _drained(client) and time.monotonic() < deadline:
            proc = start_trainer()
            time.sleep(float(kill_rng.uniform(0.05, 1.5)))  # mid-read, mid-update, mid-checkpoint…
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        proc = start_trainer()  # last run: let it finish, then stop it cleanly
        while time.monotonic() < deadline and not _drained(client):
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        history = [json.loads(x) for x in (tmp_path / "trainer" / "stage2_history.jsonl").read_text().splitlines()]
        applied = [i for h in history for i in h["ids"]]
        all_ids = [e.decode() for e, _ in client.xrange(STREAM)]
        pending = client.xpending(STREAM, "trainer")["pending"]
        client.close()
    twice = len(applied) - len(set(applied))
    lost = len(set(all_ids) - set(applied)) - pending
    report["faults"].append({"name": "trainer kill -9 between read, checkpoint and ack", "kills": kills,
                             "sent": n, "acked": n - pending, "trained_on": len(set(applied)),
                             "trained_twice": twice, "lost": lost, "ok": twice == 0 and lost == 0})
    assert kills >= 1
    assert twice == 0 and lost == 0 and pending <= 1


def test_policy_server_kill_9_mid_push_serves_the_last_accepted_version(tmp_path, report):
    base = tiny_base()
    base_dir = tmp_path / "base"
    base.save(base_dir)
    state = tmp_path / "state"
    port = free_port()
    env = {**os.environ, "W2A_POLICY_PORT": str(port), "W2A_POLICY_METRICS_PORT": "0",
           "W2A_POLICY_BASE__CHECKPOINT": str(base_dir), "W2A_POLICY_STATE_DIR": str(state),
           "W2A_POLICY_ROBOT_TOKENS": json.dumps([ROBOT]), "W2A_POLICY_TRAINER_TOKEN": TRAINER,
           "W2A_POLICY_LOG_ROLLOUTS": "false"}

    log_path = tmp_path / "policy.log"

    def start():
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "policy"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        with PolicyClient(f"127.0.0.1:{port}", ROBOT, retries=0, timeout=2) as probe:
            while True:  # serving, not just listening
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    probe.info()
                    return proc
                except grpc.RpcError:
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.2)

    proc = start()
    accepted, interrupted = 0, 0
    rounds = 3 if QUICK else 8
    try:
        with PolicyClient(f"127.0.0.1:{port}", TRAINER, retries=0) as trainer:
            blob, manifest = residual_blob(base, 1)
            assert trainer.push_residual(blob, manifest).version == 1
            accepted = 1
        for k in range(rounds):
            blob, manifest = residual_blob(base, accepted + 1, parent=accepted, seed=k + 2)

            def slow_chunks(blob=blob, manifest=manifest):  # a push that never finishes: the server dies
                from w2a_client.client import weight_chunks

                chunks = list(weight_chunks(blob, manifest, chunk_bytes=max(1, len(blob) // 8)))
                yield from chunks[:4]
                time.sleep(30)

            with PolicyClient(f"127.0.0.1:{port}", TRAINER, retries=0) as trainer:
                call = trainer.stub.UpdateResidual.future(slow_chunks(), timeout=60, metadata=trainer.metadata)
                time.sleep(0.5)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                interrupted += 1
                call.cancel()
            proc = start()
            with PolicyClient(f"127.0.0.1:{port}", ROBOT) as robot:
                assert robot.info().residual_version == accepted  # the half push never landed
                images, st = observation()
                assert robot.act("r", images, st, "push").version == accepted
            # and a complete push after the restart is accepted
            with PolicyClient(f"127.0.0.1:{port}", TRAINER, retries=0) as trainer:
                assert trainer.push_residual(blob, manifest).version == accepted + 1
                accepted += 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    report["faults"].append({"name": "policy server kill -9 mid-push", "sent": interrupted + accepted,
                             "acked": accepted, "interrupted_pushes": interrupted, "lost": 0,
                             "half_written_loaded": 0, "ok": True})


def test_world_model_down_then_back_the_trainer_backs_off_and_resumes(tmp_path, report):
    """A real Triton world model stops and starts again under a live trainer."""
    from services.trainer.targets import WorldModelTargets
    from services.world_model.client import WorldModelClient
    from services.world_model.launcher import TritonPorts, TritonServer
    from w2a_models.world_model.builder import build_tiny

    model = build_tiny(tmp_path / "wm")
    ports = TritonPorts(free_port(), free_port(), free_port())
    triton = TritonServer(model, tmp_path / "triton", ports).start()
    with EmbeddedRedis(tmp_path / "redis") as rds:
        client = redis.Redis.from_url(rds.url)
        rng = np.random.default_rng(0)
        n = 24
        for i in range(n):
            client.xadd(STREAM, {STREAM_FIELD: pack_record(StepRecord(
                robot_id="r", episode_id="e", step=i, skill="push the puck",
                base=rng.standard_normal((4, 4)).astype(np.float32),
                features=rng.standard_normal(12).astype(np.float32),
                images={"corner": logged_image_entry(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))}
            ).to_wire())})
        wm = WorldModelClient(f"127.0.0.1:{ports.grpc}", timeout=20, retries=0)
        dim = wm.generate(np.zeros((32, 32, 3), np.uint8), "x", 5).features.shape[-1]
        stream = RolloutStream(redis.Redis.from_url(rds.url), StreamConfig(block_ms=50, batch=8))
        stream.ensure_group()
        targets = WorldModelTargets(wm, 4, concurrency=2)
        trainer = ResidualTrainer(stream, targets, _adapters(dim), tmp_path / "trainer",
                                  ResidualTrainerConfig(batch_size=8, residual_hidden=32, max_wait_s=0.1))
        triton.stop()  # the world model goes away before the trainer starts
        stop = threading.Event()
        thread = threading.Thread(target=trainer.run, args=(stop, 0.1, 0.5), daemon=True)
        thread.start()
        time.sleep(3)
        updates_while_down = trainer.updates
        buffered_while_down = len(trainer.buffer)
        triton = TritonServer(model, tmp_path / "triton", ports).start()
        deadline = time.monotonic() + 120
        while trainer.updates < n // 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join(30)
        pending = client.xpending(STREAM, "trainer")["pending"]
        client.close()
        wm.close()
        targets.close()
    triton.stop()
    report["faults"].append({"name": "world model down, then back", "sent": n, "acked": n - pending,
                             "trained_on": trainer.updates * 8, "updates_while_down": updates_while_down,
                             "lost": pending, "ok": updates_while_down == 0 and pending == 0})
    assert updates_while_down == 0 and buffered_while_down > 0  # waited, kept the batch
    assert trainer.updates == n // 8 and pending == 0


def test_llm_backend_down_slow_or_garbage_gives_clear_errors_within_the_deadline(report):
    from fastapi.testclient import TestClient

    from services.planner.app import create_app
    from services.planner.settings import PlannerSettings
    from tests.planner_helpers import FakeChatServer

    body = {"instruction": "pick up the puck and place it at the goal", "backend": "openai"}
    outcomes = {}

    def planner(url, **kw):
        return create_app(PlannerSettings(openai_base_url=url, openai_api_key="k", openai_timeout_s=1.0,
                                          openai_retries=1, openai_backoff_s=0.05,
                                          redis_url="redis://127.0.0.1:1/0", **kw))

    for name, script, expected in [("garbage", [("text", "not json at all")] * 4, 502),
                                   ("slow", [("sleep", 5)] * 4, 504)]:
        with FakeChatServer(script) as chat, TestClient(planner(chat.url)) as api:
            t0 = time.monotonic()
            r = api.post("/v1/skill-plans", json=body)
            outcomes[name] = {"status": r.status_code, "seconds": round(time.monotonic() - t0, 2)}
            assert r.status_code == expected and r.json()["detail"], r.text
            assert time.monotonic() - t0 < 6  # retries included, never hangs past the deadline
    with TestClient(planner(f"http://127.0.0.1:{free_port()}/v1")) as api:  # nothing listens
        r = api.post("/v1/skill-plans", json=body)
        outcomes["down"] = {"status": r.status_code}
        assert r.status_code in (502, 503, 504) and r.json()["detail"]
    with FakeChatServer([("sleep", 5)] * 4) as chat, \
            TestClient(planner(chat.url, fallback_to_rules=True)) as api:
        r = api.post("/v1/skill-plans", json=body)
        outcomes["slow, rules fallback"] = {"status": r.status_code}
        assert r.status_code == 200 and len(r.json()["skills"]) >= 2
    report["faults"].append({"name": "LLM backend down, slow, garbage", "sent": len(outcomes),
                             "acked": len(outcomes), "lost": 0, "outcomes": outcomes, "ok": True})
