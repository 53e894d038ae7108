"""Shared helpers for policy-server tests: a tiny untrained TinyVLA and an in-thread server."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import redis
import torch

from services.common.rollout_log import STREAM_FIELD, unpack_record
from services.common.rollout_record import ROLLOUT_STREAM, Record, decode_record
from services.policy.server import PolicyServer
from services.policy.settings import PolicySettings
from w2a_models.base_policy.tiny_vla import TinyVLA, TinyVLAConfig, TinyVLANet
from w2a_models.checkpoints import pack_tensors
from w2a_models.residual import ResidualConfig, ResidualPolicy

ROBOT, TRAINER = "robot-token", "trainer-token"
SIZE = 32


def tiny_base(seed: int = 0) -> TinyVLA:
    torch.manual_seed(seed)
    return TinyVLA(TinyVLANet(TinyVLAConfig(image_size=SIZE, chunk_size=4, hidden=64)))


def settings(state_dir: Path, **kw) -> PolicySettings:
    base = dict(host="127.0.0.1", port=0, metrics_port=0, state_dir=state_dir,
                robot_tokens=[ROBOT], trainer_token=TRAINER, max_wait_ms=2.0, log_rollouts=False)
    base.update(kw)
    return PolicySettings(**base)


def observation(seed: int = 0):
    rng = np.random.default_rng(seed)
    return ({"corner": rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)},
            rng.standard_normal(18).astype(np.float32))


def residual_blob(base: TinyVLA, version: int, parent: int = 0, seed: int = 1, scale: float = 0.2):
    torch.manual_seed(seed)
    spec = base.spec
    cfg = ResidualConfig(obs_dim=spec.feature_dim, action_dim=spec.action_dim,
                         chunk_size=spec.chunk_size, hidden=32, scale=scale)
    module = ResidualPolicy(cfg)
    torch.nn.init.normal_(module.head.weight, std=0.5)  # non-zero so the residual shows
    return pack_tensors(module.state_dict(), str(version), str(parent) if parent else None,
                        cfg.__dict__)


class ServerThread:
    """Runs a PolicyServer on its own event loop in a background thread."""

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.target = f"127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def stream_records(url: str, stream: str = ROLLOUT_STREAM, oracle: bool = False) -> list[Record]:
    """Every rollout record in a stream, typed (the way the trainer reads them)."""
    client = redis.Redis.from_url(url)
    try:
        return [decode_record(unpack_record(fields[STREAM_FIELD.encode()]), oracle)
                for _, fields in client.xrange(stream)]
    finally:
        client.close()


def wait_for(predicate, timeout: float = 15.0, poll_s: float = 0.05) -> bool:
    """True as soon as ``predicate()`` is, False after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False
