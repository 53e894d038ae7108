"""Push every residual version to a fleet of policy replicas (issue 21).

Replicas come from a list of endpoints or a headless Service's DNS name, resolved every round
(``every_s``): a new or returning replica gets the current version, a replica whose served
version fell behind (restarted without its state) gets it again, and a replica that is down
is retried by its own ``WeightPusher`` with the newest snapshot. Every replica receives the same
version number for the same weights: one past the highest version any replica reported, so
``w2a status`` lines up across the fleet. A replica only ever serves versions the trainer pushed
and it accepted (the policy server checks the manifest; the trainer never sends anything else).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import torch

from services.trainer.pusher import Snapshot, WeightPusher

log = logging.getLogger(__name__)


def resolve_endpoints(urls: list[str], dns: str = "") -> list[str]:
    """The fleet now: the listed ``host:port`` endpoints, plus every address ``dns``
    (``name:port``, e.g. a headless Service) resolves to. Duplicates once, in order."""
    out = list(urls)
    if dns:
        host, _, port = dns.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"policy DNS name must be 'host:port', got {dns!r}")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            log.warning("policy fleet %s does not resolve (%s); keeping the listed endpoints", dns, exc)
            infos = []
        for *_, address in infos:
            ip = address[0]
            out.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    return list(dict.fromkeys(out))


class FleetPusher:
    """``offer`` / ``flush`` / ``close`` like a ``WeightPusher``, to every replica."""

    def __init__(self, resolve: Callable[[], list[str]], connect: Callable[[str], object], metrics=None,
                 every_s: float = 5.0, **pusher_options) -> None:
        self._resolve, self._connect, self.metrics = resolve, connect, metrics
        self.every_s, self._options = every_s, pusher_options
        self.replicas: dict[str, WeightPusher] = {}
        self.current: Snapshot | None = None  # the last version offered to the fleet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._watch, name="fleet-watch", daemon=True)
        self._thread.start()

    @property
    def last_error(self) -> str:
        return "; ".join(f"{e}: {p.last_error}" for e, p in self.replicas.items() if p.last_error)

    def served_versions(self) -> dict[str, int | None]:
        """What every replica serves, asked now (None: unreachable)."""
        out = {}
        for endpoint, pusher in list(self.replicas.items()):
            try:
                out[endpoint] = int(pusher.client.info().residual_version)
            except Exception:  # noqa: BLE001 - an unreachable replica is reported, not raised
                out[endpoint] = None
        return out

    def offer(self, tensors: dict[str, torch.Tensor], config: dict, update: int) -> None:
        """Number the weights one past every version any replica has, hand them to all (raises
        NonFiniteWeights: nothing leaves the trainer)."""
        with self._lock:
            known = [p.server_version or 0 for p in self.replicas.values()] + \
                    [p.pushed_version for p in self.replicas.values()]
            version = max([*known, self.current.version if self.current else 0]) + 1
            self.current = Snapshot.checked(tensors, config, update, version)
            for pusher in self.replicas.values():
                pusher.offer_snapshot(self.current)

    def refresh(self) -> None:
        """Re-resolve the fleet; hand the current version to replicas that lack it."""
        endpoints = self._resolve()
        with self._lock:
            for gone in set(self.replicas) - set(endpoints):
                log.info("policy replica %s left the fleet", gone)
                pusher = self.replicas.pop(gone)
                pusher.close(1)
                pusher.client.close()
            for endpoint in endpoints:
                if endpoint not in self.replicas:
                    log.info("policy replica %s joined the fleet", endpoint)
                    self.replicas[endpoint] = WeightPusher(self._connect(endpoint), self.metrics, **self._options)
                    if self.current is not None:
                        self.replicas[endpoint].offer_snapshot(self.current)
            current = self.current
        for endpoint, served in self.served_versions().items():
            if self.metrics is not None:
                self.metrics.replica_version.labels(endpoint).set(-1 if served is None else served)
            pusher = self.replicas.get(endpoint)
            if served is None or pusher is None or pusher.busy:
                continue  # unreachable (its pusher retries) or a push in flight
            pusher.server_version = served
            if current is not None and served < current.version:
                log.info("policy replica %s serves v%d, the fleet is at v%d: pushing it again",
                         endpoint, served, current.version)
                pusher.pushed_version = min(pusher.pushed_version, served)
                pusher.offer_snapshot(current)

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive any one bad round
                log.warning("fleet refresh failed: %s", exc)

    def flush(self, timeout: float = 30.0) -> bool:
        return all(p.flush(timeout) for p in list(self.replicas.values()))

    def close(self, timeout: float = 10.0) -> None:
        """Stop watching, finish the pushes, close the clients the fleet opened."""
        self._stop.set()
        self._thread.join(timeout)
        for pusher in self.replicas.values():
            pusher.close(timeout)
            pusher.client.close()
