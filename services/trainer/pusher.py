"""Push the residual to the policy server in the background, newest snapshot first.

Training never waits on the policy server: ``offer()`` hands over a snapshot and returns. A
background thread pushes it with ``UpdateResidual`` (manifest: version above anything the server
has accepted, parent = the version it replaces, sha256 of the blob). While the server is away it
retries with backoff — with the newest snapshot, not a stale queue. Non-finite weights are refused
at ``offer()``, so they never leave the trainer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import grpc
import torch

from w2a_models.checkpoints import pack_tensors

log = logging.getLogger(__name__)

RETRY_LATER = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
               grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL}


class NonFiniteWeights(ValueError):
    """The residual has NaN/Inf weights; it is not pushed."""


@dataclass
class Snapshot:
    tensors: dict[str, torch.Tensor]
    config: dict
    update: int
    version: int | None = None  # fixed by a fleet (the same number on every replica); None: next free

    @classmethod
    def checked(cls, tensors: dict[str, torch.Tensor], config: dict, update: int,
                version: int | None = None) -> Snapshot:
        """A detached CPU copy of the weights; raises NonFiniteWeights so they never leave the trainer."""
        snapshot = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        check_finite(snapshot)
        return cls(snapshot, dict(config), update, version)


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteWeights(f"residual tensors with NaN/Inf: {', '.join(bad)}")


class WeightPusher:
    def __init__(self, client, metrics=None, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 push_timeout_s: float = 30.0) -> None:
        self.client = client  # w2a_client.client.PolicyClient with the trainer token
        self.metrics = metrics
        self.backoff_s, self.max_backoff_s, self.push_timeout_s = backoff_s, max_backoff_s, push_timeout_s
        self.pushed_version = 0  # last version the server accepted from us
        self.server_version: int | None = None  # what the server serves, learned lazily
        self.last_error = ""
        self._pending: Snapshot | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="weight-pusher", daemon=True)
        self._thread.start()

    # -- producer side ---------------------------------------------------------------------------

    def offer(self, tensors: dict[str, torch.Tensor], config: dict, update: int,
              version: int | None = None) -> None:
        """Queue a snapshot (replacing an older unpushed one). Raises NonFiniteWeights."""
        self.offer_snapshot(Snapshot.checked(tensors, config, update, version))

    def offer_snapshot(self, snapshot: Snapshot) -> None:
        """Queue an already checked snapshot (a fleet hands the same one to every replica)."""
        with self._cond:
            self._pending = snapshot
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """A snapshot is waiting or being pushed."""
        with self._cond:
            return self._pending is not None or self._busy

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is waiting to be pushed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- pushing thread --------------------------------------------------------------------------

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.pushes.labels(result).inc()

    def _refresh_server_version(self) -> int:
        self.server_version = int(self.client.info().residual_version)
        return self.server_version

    def _push(self, snap: Snapshot) -> int:
        server = self.server_version if self.server_version is not None else self._refresh_server_version()
        parent = max(server, self.pushed_version)
        version = parent + 1 if snap.version is None else snap.version
        if version <= server:  # a fleet version this replica already has (or passed): nothing to do
            return server
        blob, manifest = pack_tensors(snap.tensors, str(version), str(parent) if parent else None,
                                      snap.config)
        result = self.client.push_residual(blob, manifest, timeout=self.push_timeout_s)
        return int(result.version)

    def _run(self) -> None:
        delay = self.backoff_s
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop and self._pending is None:
                    return
                snap, self._pending, self._busy = self._pending, None, True
            retry = False
            try:
                version = self._push(snap)
                self.pushed_version = self.server_version = version
                self.last_error = ""
                delay = self.backoff_s
                self._count("accepted")
                if self.metrics is not None:
                    self.metrics.policy_version.set(version)
                log.info("pushed residual v%d (update %d)", version, snap.update)
            except grpc.RpcError as exc:
                code, detail = exc.code(), exc.details() or ""
                repeated = self.last_error == f"{code.name}: {detail}"
                self.last_error = f"{code.name}: {detail}"
                if code in RETRY_LATER:
                    self._count("retry")
                    retry = True
                    log.warning("policy server away (%s); retrying in %.1fs", code.name, delay)
                elif code == grpc.StatusCode.INVALID_ARGUMENT and "not newer" in detail:
                    self._count("retry")  # someone else pushed: learn the server's version, go again
                    self.server_version = None
                    retry = snap.version is None  # a fixed fleet version is re-numbered by the fleet
                    delay = 0.0
                else:
                    self._count("rejected")
                    report = log.debug if repeated else log.error
                    report("policy server rejected residual from update %d: %s", snap.update, self.last_error)
            with self._cond:
                self._busy = False
                if retry and self._pending is None:
                    self._pending = snap  # newer snapshots replace it; otherwise try this one again
                self._cond.notify_all()
                if retry and delay > 0:
                    self._cond.wait_for(lambda: self._stop, timeout=delay)
                    delay = min(max(delay, self.backoff_s) * 2, self.max_backoff_s)
                elif retry:
                    delay = self.backoff_s
                if self._stop and retry:
                    return
