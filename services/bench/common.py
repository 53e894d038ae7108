"""What every benchmark shares: tokens, a tiny base, a real ``w2a serve policy`` process, a frame."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from services.common.redis_server import free_port

ROBOT, TRAINER = "bench-robot", "bench-trainer"
INSTRUCTION = "pick up the puck and place it at the goal"


def tiny_base(image_size: int):
    import torch

    from w2a_models.base_policy.tiny_vla import TinyVLA, TinyVLAConfig, TinyVLANet

    torch.manual_seed(0)
    return TinyVLA(TinyVLANet(TinyVLAConfig(image_size=image_size)))


@contextmanager
def policy_process(base_dir: Path, state_dir: Path, redis_url: str | None, **settings):
    """A real ``w2a serve policy`` process; yields its target address."""
    with policy_server_process(base_dir, state_dir, redis_url, **settings) as (target, _):
        yield target


@contextmanager
def policy_server_process(base_dir: Path, state_dir: Path, redis_url: str | None, **settings):
    port = free_port()
    env = {**os.environ, "W2A_POLICY_PORT": str(port), "W2A_POLICY_METRICS_PORT": "0",
           "W2A_POLICY_BASE__CHECKPOINT": str(base_dir), "W2A_POLICY_STATE_DIR": str(state_dir),
           "W2A_POLICY_ROBOT_TOKENS": f'["{ROBOT}"]', "W2A_POLICY_TRAINER_TOKEN": TRAINER,
           "W2A_POLICY_LOG_ROLLOUTS": "true" if redis_url else "false",
           **({"W2A_POLICY_REDIS_URL": redis_url} if redis_url else {}),
           **{f"W2A_POLICY_{k.upper()}": str(v) for k, v in settings.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "policy"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from w2a_client.client import PolicyClient

        with PolicyClient(f"127.0.0.1:{port}", ROBOT) as probe:
            probe.wait_ready(120)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def observation(size: int):
    rng = np.random.default_rng(0)
    return {"corner": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)}, rng.standard_normal(18)
