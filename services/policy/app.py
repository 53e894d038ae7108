"""Assemble a policy server from settings: base policy, rollout logger, embedded Redis."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from pathlib import Path

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import RolloutLogger
from services.common.settings import setup_process
from services.policy.server import PolicyServer
from services.policy.settings import PolicySettings
from w2a_models.base_policy import BasePolicy


def _remote_cameras(settings: PolicySettings):
    from w2a_models.base_policy import CameraSpec

    return tuple(CameraSpec(name, h, w) for name, (h, w) in settings.remote_cameras.items())


def load_base(settings: PolicySettings) -> BasePolicy:
    from w2a_models.base_policy.tiny_vla import TinyVLA

    if settings.base_backend == "cosmos-policy":
        from services.policy.backends.cosmos_policy_base import CosmosPolicyBase, CosmosPolicyBaseConfig
        s = settings
        return CosmosPolicyBase(CosmosPolicyBaseConfig(
            url=f"http://{s.remote_host}:{s.remote_port}",
            cameras=_remote_cameras(s),
            image_keys=dict(s.remote_image_keys), proprio_key=s.remote_state_key,
            task_key=s.remote_prompt_key, state_dim=s.remote_state_dim, action_dim=s.remote_action_dim,
            chunk_size=s.remote_chunk_size, connect_timeout_s=s.remote_connect_timeout_s,
            call_timeout_s=s.remote_call_timeout_s))
    if settings.base_backend == "gr00t":
        from services.policy.backends.gr00t_base import Gr00tBase, Gr00tBaseConfig
        s = settings
        return Gr00tBase(Gr00tBaseConfig(
            host=s.remote_host, port=s.remote_port, api_token=s.remote_api_key.get_secret_value() or None,
            cameras=_remote_cameras(s),
            video_keys=dict(s.remote_image_keys), state_parts=tuple(map(tuple, s.remote_state_parts)),
            language_key=s.remote_language_key, action_parts=tuple(map(tuple, s.remote_action_parts)),
            chunk_size=s.remote_chunk_size, timeout_ms=int(s.remote_call_timeout_s * 1000)))
    if settings.base_backend == "openpi":
        from services.policy.backends.openpi_base import OpenpiBase, OpenpiBaseConfig
        s = settings
        return OpenpiBase(OpenpiBaseConfig(
            host=s.remote_host, port=s.remote_port, api_key=s.remote_api_key.get_secret_value() or None,
            cameras=_remote_cameras(s),
            image_keys=dict(s.remote_image_keys), state_key=s.remote_state_key,
            prompt_key=s.remote_prompt_key, action_key=s.remote_action_key, state_dim=s.remote_state_dim,
            action_dim=s.remote_action_dim, chunk_size=s.remote_chunk_size,
            connect_timeout_s=s.remote_connect_timeout_s, call_timeout_s=s.remote_call_timeout_s))

    if settings.base_checkpoint is None:
        what = ("a LeRobot pretrained_model directory" if settings.base_backend == "lerobot" else
                "a TinyVLA checkpoint directory (train one with `w2a train-base`)")
        raise ValueError(f"set W2A_POLICY_BASE_CHECKPOINT to {what}")
    if settings.base_backend == "lerobot":
        from services.policy.backends.lerobot_base import LeRobotBase, LeRobotBaseConfig
        return LeRobotBase(LeRobotBaseConfig(
            checkpoint=settings.base_checkpoint, image_keys=dict(settings.lerobot_image_keys),
            chunk_size=settings.lerobot_chunk_size, device=settings.lerobot_device))
    return TinyVLA.load(settings.base_checkpoint)


def run_policy_server(settings: PolicySettings, base: BasePolicy | None = None) -> None:
    """Blocking entry point of ``w2a serve policy``; returns after SIGTERM/SIGINT."""
    shared = setup_process()
    base = base or load_base(settings)
    embedded = None
    rollouts = None
    if settings.log_rollouts:
        url = shared.redis_for(settings.redis_url)
        if not url:
            embedded = EmbeddedRedis(Path(settings.state_dir) / "redis").start()
            url = embedded.url
            logging.getLogger(__name__).info("embedded redis at %s", url)
        rollouts = RolloutLogger(url, settings.rollout_stream, Path(settings.state_dir) / "rollouts.spool",
                                 maxlen=settings.stream_maxlen, queue_size=settings.log_queue_size,
                                 linger=settings.log_linger_ms / 1000.0)
    server = PolicyServer(settings, base, rollouts)
    # Latency tails: move everything allocated so far (model, libraries) out of the cyclic GC's
    # view so collections stay short, and hand the GIL over more often than every 5 ms.
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    try:
        asyncio.run(server.serve_until_signal())
    finally:
        if embedded is not None:
            embedded.stop()
