"""The trainer's pushes reach a fleet of real policy servers on loopback (issue 21)."""

import contextlib
import threading
import time

import torch

from services.common.redis_server import free_port
from services.policy.server import PolicyServer
from services.trainer.fleet import FleetPusher, resolve_endpoints
from tests.policy_helpers import TRAINER, ServerThread, settings, tiny_base, wait_for
from w2a_client import PolicyClient
from w2a_models.residual import ResidualConfig, ResidualPolicy


def _residual(base, seed):
    torch.manual_seed(seed)
    spec = base.spec
    cfg = ResidualConfig(obs_dim=spec.feature_dim, action_dim=spec.action_dim, chunk_size=spec.chunk_size,
                         hidden=16, scale=0.2)
    module = ResidualPolicy(cfg)
    return module.state_dict(), cfg.__dict__


class Watcher(threading.Thread):
    """Polls every replica's served version the whole time: what was ever served."""

    def __init__(self, endpoints):
        super().__init__(daemon=True)
        self.endpoints, self.seen, self.stop = endpoints, {e: set() for e in endpoints}, threading.Event()

    def run(self):
        clients = {e: PolicyClient(e, TRAINER, retries=0, timeout=1) for e in self.endpoints}
        while not self.stop.is_set():
            for e, c in clients.items():
                with contextlib.suppress(Exception):  # a stopped replica answers nothing
                    self.seen[e].add(int(c.info().residual_version))
            time.sleep(0.02)
        for c in clients.values():
            c.close()


def test_every_replica_ends_on_the_newest_version_and_serves_only_pushed_ones(tmp_path):
    base = tiny_base()
    ports = [free_port() for _ in range(3)]
    endpoints = [f"127.0.0.1:{p}" for p in ports]

    def server(i):
        return ServerThread(PolicyServer(settings(tmp_path / f"p{i}", port=ports[i]), base))

    replicas = [server(i).__enter__() for i in range(3)]
    watcher = Watcher(endpoints)
    watcher.start()
    fleet = FleetPusher(lambda: resolve_endpoints(endpoints), lambda e: PolicyClient(e, TRAINER, retries=0),
                        every_s=0.2, backoff_s=0.05, max_backoff_s=0.2)
    offered = set()
    try:
        for update in range(1, 4):
            fleet.offer(*_residual(base, update), update)
            offered.add(fleet.current.version)
            assert fleet.flush(20)
        assert set(fleet.served_versions().values()) == {3}
        replicas[1].__exit__(None, None, None)  # replica 1 goes away during pushes
        for update in range(4, 7):
            fleet.offer(*_residual(base, update), update)
            offered.add(fleet.current.version)
            time.sleep(0.1)
        assert wait_for(lambda: fleet.served_versions()[endpoints[0]] == 6, 30)
        replicas[1] = server(1).__enter__()  # back, with its state dir: it restored v3
        assert wait_for(lambda: set(fleet.served_versions().values()) == {6}, 30), fleet.served_versions()
        # a replica that comes back without its state (a new pod) is brought up to date too
        replicas[2].__exit__(None, None, None)
        replicas[2] = ServerThread(PolicyServer(settings(tmp_path / "p2-new", port=ports[2]), base)).__enter__()
        assert wait_for(lambda: set(fleet.served_versions().values()) == {6}, 30), fleet.served_versions()
    finally:
        watcher.stop.set()
        watcher.join(5)
        fleet.close(2)
        for r in replicas:
            r.__exit__(None, None, None)
    assert offered == {1, 2, 3, 4, 5, 6}
    for endpoint, seen in watcher.seen.items():
        assert seen <= {0} | offered, (endpoint, seen)  # never a version the trainer did not push
        assert 6 in seen


def test_endpoints_resolve_from_a_list_and_a_dns_name():
    assert resolve_endpoints(["a:1", "b:2", "a:1"]) == ["a:1", "b:2"]
    assert resolve_endpoints([], "localhost:50051")[0].endswith(":50051")
    assert resolve_endpoints(["a:1"], "no-such-host.invalid:1") == ["a:1"]  # keeps what it has
