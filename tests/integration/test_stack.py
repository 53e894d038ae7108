"""`w2a up`'s supervisor: services come up in order on free ports, a dead service is restarted on
the same address, status reports health and the served version, stop leaves nothing behind."""

import os
import signal
import time

import httpx

from services.stack import Stack, StackConfig, stack_status
from tests.policy_helpers import tiny_base


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_supervisor_restarts_a_dead_service_and_stops_everything(tmp_path):
    tiny_base().save(tmp_path / "base")
    stack = Stack(StackConfig(tmp_path / "stack", tmp_path / "base"))
    stack.start()
    try:
        status = stack_status(tmp_path / "stack")
        assert {n: s["ready"] for n, s in status["services"].items()} == \
            {"redis": True, "planner": True, "policy": True}
        assert status["services"]["policy"]["residual_version"] == 0
        planner = next(s for s in stack.services if s.name == "planner")
        old_pid = planner.process.pid
        os.kill(old_pid, signal.SIGKILL)
        planner.process.wait()
        assert stack.supervise() == ["planner"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{planner.address}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert planner.process.pid != old_pid
        assert stack_status(tmp_path / "stack")["services"]["planner"]["ready"]
        pids = [s.process.pid for s in stack.services if s.process is not None]
    finally:
        codes = stack.stop()
    assert codes["policy"] == 0 and codes["planner"] == 0
    assert not (tmp_path / "stack" / "stack.json").exists()
    time.sleep(0.3)
    assert not [p for p in pids if _alive(p)]
