"""Assemble the Stage 2 trainer from settings (``w2a train-residual``) and run it until SIGTERM.

Under ``torchrun`` the same command is one rank of a data-parallel trainer
(``services.trainer.residual_trainer``): rank 0 alone pushes weights, each node's local rank 0
serves metrics."""

from __future__ import annotations

import logging
import os
import signal
import threading

import redis

from services.common.distributed import Ranks, init_from_env, shutdown
from services.common.settings import setup_process
from services.trainer.fleet import FleetPusher, resolve_endpoints
from services.trainer.metrics import TrainerMetrics
from services.trainer.pusher import WeightPusher
from services.trainer.residual_trainer import ResidualTrainer
from services.trainer.rollout_stream import RolloutStream
from services.trainer.settings import TrainerSettings, gone_consumers
from services.trainer.targets import RealFutureTargets, TableTargets, WorldModelTargets
from w2a_client.client import PolicyClient
from w2a_models.adapters import AdapterConfig, Stage1Adapters
from w2a_models.checkpoints import load_module, read_manifest

log = logging.getLogger(__name__)


def load_adapters(directory) -> Stage1Adapters:
    """The frozen Stage 1 adapters from ``w2a train-adapters``' checkpoint directory."""
    if directory is None:
        raise ValueError("set W2A_TRAINER_ADAPTERS to a Stage 1 checkpoint directory "
                         "(`w2a train-adapters --out DIR` writes DIR/checkpoint)")
    manifest = read_manifest(directory)
    if "adapter" not in manifest.config:
        raise ValueError(f"{directory}: not a Stage 1 adapters checkpoint (no 'adapter' config)")
    adapters = Stage1Adapters(AdapterConfig(**manifest.config["adapter"]))
    load_module(directory, adapters)
    return adapters


def run_residual_trainer(settings: TrainerSettings, stop: threading.Event | None = None,
                         max_updates: int | None = None) -> ResidualTrainer:
    """Blocking: consume rollouts and train until SIGTERM/SIGINT (or ``stop``/``max_updates``)."""

    from services.world_model.client import WorldModelClient

    setup_process()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    adapters = load_adapters(settings.adapters)
    ranks = init_from_env()
    metrics = TrainerMetrics()
    # one endpoint per node (its local rank 0): probes see every pod, ports never clash on one host
    http = metrics.serve(settings.metrics_port, settings.metrics_host) \
        if settings.metrics_port and ranks.local_rank == 0 else None
    rds = redis.Redis.from_url(settings.resolved_redis_url(), socket_timeout=10, socket_connect_timeout=5)
    root_cert = settings.policy_root_cert.read_bytes() if settings.policy_root_cert else None
    def connect(endpoint: str) -> PolicyClient:
        return PolicyClient(endpoint, settings.policy_token.get_secret_value(), root_certificates=root_cert)

    wm = WorldModelClient(resolve_endpoints([], settings.wm_dns) if settings.wm_dns else settings.wm_url,
                          timeout=120, first=ranks.rank)
    for endpoint in wm.endpoints:  # which server answered what, read when Prometheus scrapes
        for model in ("wm_generate", "wm_encode"):
            metrics.wm_calls.labels(endpoint, model).set_function(lambda key=(endpoint, model): wm.served[key])
    single = None  # the one policy client opened here (a fleet opens and closes its own)
    if not ranks.main:
        pusher = None
    elif settings.policy_urls or settings.policy_dns:
        pusher = FleetPusher(lambda: resolve_endpoints(settings.policy_urls, settings.policy_dns), connect,
                             metrics, every_s=settings.fleet_every_s)
    else:
        single = connect(settings.policy_url)
        pusher = WeightPusher(single, metrics)
    if settings.mode == "real_future":  # upper bound: the real future through wm_encode
        targets = RealFutureTargets(wm, adapters.config.chunk_size, settings.wm_seed,
                                    settings.wm_concurrency)
    elif settings.targets == "table":  # no world model: fault tests and benchmarks, never real training
        log.warning("W2A_TRAINER_TARGETS=table: fixed per-skill targets, no world model")
        targets = TableTargets(adapters.config.chunk_size // 4, adapters.config.token_dim, settings.seed)
    else:
        targets = WorldModelTargets(wm, adapters.config.chunk_size, settings.wm_seed,
                                    settings.wm_concurrency)
    stream = RolloutStream(rds, settings.stream_config(ranks.rank, ranks.world))
    if ranks.distributed:
        _adopt_gone_ranks(stream, settings.consumer, ranks)
    trainer = ResidualTrainer(stream, targets, adapters, settings.out, settings.trainer_config(), pusher,
                              metrics, ranks)
    if settings.mode != "world_model":
        log.warning("W2A_TRAINER_MODE=%s: an UPPER BOUND taught by the simulator's oracle, not World2Act",
                    settings.mode)
    fleet = settings.policy_urls + ([settings.policy_dns] if settings.policy_dns else [])
    log.info("Stage 2 trainer %s (rank %d of %d, pid %d): stream %s group %s, pushing to %s every %d updates",
             stream.config.consumer, ranks.rank, ranks.world, os.getpid(), settings.stream, settings.group,
             ", ".join(fleet) or settings.policy_url if ranks.main else "nothing (rank 0 pushes)",
             settings.push_every)
    try:
        trainer.run(stop, max_updates=max_updates)
    finally:
        if pusher is not None:
            if not pusher.flush(15):
                log.warning("last residual not pushed (%s)", pusher.last_error or "server away")
            pusher.close(1)
        if single is not None:
            single.close()
        if hasattr(targets, "close"):
            targets.close()
        wm.close()
        rds.close()
        if http is not None:
            http[0].shutdown()
    shutdown(ranks)  # a clean stop only: after a crash torchrun tears the group down
    return trainer


def _adopt_gone_ranks(stream: RolloutStream, consumer: str, ranks: Ranks) -> None:
    """Rank 0 takes over what an earlier run left pending under names nobody reads now — the
    ranks of a larger world, or the single trainer's own name (XAUTOCLAIM is off between ranks);
    every rank waits for it before reading."""
    if ranks.main:
        gone = gone_consumers(stream.consumers(), consumer, ranks.world)
        if gone and (moved := stream.adopt(gone)):
            log.warning("took over %d pending entries of gone ranks %s", moved, ", ".join(gone))
    ranks.any(False)  # a barrier on the same process group

