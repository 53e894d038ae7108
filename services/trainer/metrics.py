"""Prometheus metrics of the Stage 2 trainer, on their own registry and port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.consumed = Counter("w2a_trainer_entries_consumed_total",
                                "Stream entries read (steps, markers, duplicates)", ["kind"], registry=r)
        self.lag = Gauge("w2a_trainer_stream_lag", "Entries not yet delivered to the group "
                         "(capped at 1000 on Redis 6; refreshed every 5 s)", registry=r)
        self.updates = Counter("w2a_trainer_updates_total", "Residual updates", ["result"], registry=r)
        self.checkpoints = Counter("w2a_trainer_checkpoints_total", "Checkpoints written", registry=r)
        self.acked = Counter("w2a_trainer_entries_acked_total", "Entries acknowledged", registry=r)
        self.pushes = Counter("w2a_trainer_pushes_total", "Residual pushes", ["result"], registry=r)
        self.loss = Gauge("w2a_trainer_loss", "Stage 2 loss of the last update", ["term"], registry=r)
        self.policy_version = Gauge("w2a_trainer_policy_version", "Last residual version pushed",
                                    registry=r)
        self.dead_lettered = Gauge("w2a_trainer_dead_lettered", "Entries moved to the dead-letter stream",
                                   registry=r)
        self.backoffs = Counter("w2a_trainer_backoffs_total", "Waits after a dependency failed",
                                ["dependency"], registry=r)
        self.replica_version = Gauge("w2a_trainer_replica_version", "Residual version each policy replica "
                                     "serves (-1: unreachable), refreshed every fleet round", ["endpoint"],
                                     registry=r)
        self.wm_calls = Gauge("w2a_trainer_wm_calls", "World-model calls answered, by server and model",
                              ["endpoint", "model"], registry=r)
        self.episodes = Counter("w2a_trainer_episodes_total", "Episode-end markers seen",
                                ["policy_version", "success"], registry=r)

    def serve(self, port: int, host: str = "127.0.0.1"):
        return start_http_server(port, addr=host, registry=self.registry)
