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


def load_base(settings: PolicySettings) -> BasePolicy:
    """The frozen base the settings name (each backend builds its own policy)."""
    return settings.base.build()


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
