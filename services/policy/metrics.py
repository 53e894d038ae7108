"""Prometheus metrics of the policy server, on their own registry and port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class PolicyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("w2a_policy_request_seconds", "Act latency, receive to reply",
                                 ["method"], registry=r,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1))
        self.batch_size = Histogram("w2a_policy_batch_size", "Requests per forward batch", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.fallbacks = Counter("w2a_policy_fallbacks_total", "Safety fallbacks to the base action",
                                 registry=r)
        self.rejected = Counter("w2a_policy_rejected_total", "Rejected requests", ["code"], registry=r)
        self.queue_depth = Gauge("w2a_policy_rollout_queue_depth", "Rollout records waiting", registry=r)
        self.spool_size = Gauge("w2a_policy_rollout_spool_records", "Rollout records spooled on disk",
                                registry=r)
        self.dropped = Gauge("w2a_policy_rollout_dropped", "Rollout records dropped (queue full)",
                             registry=r)
        self.version = Gauge("w2a_policy_residual_version", "Residual version being served", registry=r)

    def serve(self, port: int, host: str = "127.0.0.1"):
        return start_http_server(port, addr=host, registry=self.registry)

    def on_batch(self, size: int, fallbacks: int) -> None:
        self.batch_size.observe(size)
        if fallbacks:
            self.fallbacks.inc(fallbacks)

    def on_logger(self, logger) -> None:
        self.queue_depth.set(logger.queue_depth)
        self.spool_size.set(logger.spooled)
        self.dropped.set(logger.dropped)
