"""The local stack (``w2a up`` / ``status`` / ``down``): every service as a supervised subprocess.

Order: Redis → world model (Triton) → planner → policy server → Stage 2 trainer (when Stage 1
adapters are given). Each is started on a free (or configured) port, and the next one starts only
after the previous answers its readiness check. Logs go to ``<run_dir>/logs/<service>.log``;
``<run_dir>/stack.json`` records pids, addresses and tokens (mode 0600) for ``status``/``down``.
Any service can be external instead: a Redis URL, a remote Triton address.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from services.common.redis_server import EmbeddedRedis, free_port
from services.common.settings import SharedSettings

log = logging.getLogger(__name__)
STATE_FILE = "stack.json"


@dataclass
class StackConfig:
    run_dir: Path
    base: Path  # TinyVLA checkpoint served as the frozen base
    world_model: Path | None = None  # WM directory served by a local Triton...
    wm_url: str | None = None  # ...or an external Triton gRPC address
    adapters: Path | None = None  # Stage 1 checkpoint: when set, the Stage 2 trainer runs too
    redis_url: str | None = None  # external Redis; None = an embedded redis-server
    policy_port: int = 0  # 0 = a free port
    planner_port: int = 0
    robot_token: str = field(default_factory=lambda: "robot-" + secrets.token_hex(12))
    trainer_token: str = field(default_factory=lambda: "trainer-" + secrets.token_hex(12))
    trainer_env: dict[str, str] = field(default_factory=dict)  # extra W2A_TRAINER_* settings
    policy_env: dict[str, str] = field(default_factory=dict)  # extra W2A_POLICY_* settings
    world_model_env: dict[str, str] = field(default_factory=dict)  # e.g. W2A_WM_FEATURES
    ready_timeout_s: float = 180.0


@dataclass
class Service:
    name: str
    process: subprocess.Popen | None
    address: str
    log_file: Path | None = None
    args: list[str] = field(default_factory=list)  # how to start it again
    env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def _wait(check, what: str, process: subprocess.Popen | None, log_file: Path | None,
          timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_file.read_text()[-2000:] if log_file and log_file.exists() else ""
            raise RuntimeError(f"{what} exited with {process.returncode} while starting:\n{tail}")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - not ready yet, whatever the reason
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s ({last}); log: {log_file}")


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.services: list[Service] = []
        self._redis: EmbeddedRedis | None = None
        self.redis_url = SharedSettings().redis_for(config.redis_url)
        self.wm_url = config.wm_url
        self.pooled_wm_url: str | None = None  # a second read-out of the same weights (ablation)
        self._started = False

    # -- start -----------------------------------------------------------------------------------

    def _launch(self, service: Service) -> None:
        """Start (or restart) a service's process from its recorded command and settings."""
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        service.log_file = logs / f"{service.name}.log"
        fh = open(service.log_file, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        service.process = subprocess.Popen(
            service.args, stdout=fh, stderr=subprocess.STDOUT, cwd=os.getcwd(),
            env={**os.environ, "W2A_TORCH_THREADS": "1", **service.env},
            start_new_session=True)  # Ctrl-C reaches us; we stop children in order
        fh.close()

    def _add(self, name: str, address: str, args: list[str], env: dict[str, str]) -> Service:
        self.services = [s for s in self.services if s.name != name]  # a replaced, stopped one
        service = Service(name, None, address, args=args, env=env)
        self._launch(service)
        self.services.append(service)
        return service

    def supervise(self, max_restarts: int = 3) -> list[str]:
        """Restart services that died (same ports, same settings); returns what was restarted."""
        restarted = []
        for s in self.services:
            if s.process is None or not s.args or s.process.poll() is None:
                continue
            if s.restarts >= max_restarts:
                continue
            log.warning("%s exited with %s; restarting (%d/%d), log %s", s.name,
                        s.process.returncode, s.restarts + 1, max_restarts, s.log_file)
            self._launch(s)
            s.restarts += 1
            restarted.append(s.name)
        if restarted:
            self._write_state()
        return restarted

    def _start_redis(self) -> None:
        if self.redis_url:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3)
            _wait(client.ping, f"redis at {self.redis_url}", None, None, 30)
            self.services.append(Service("redis", None, self.redis_url))
            return
        self._redis = EmbeddedRedis(self.run_dir / "redis").start()
        self.redis_url = self._redis.url
        self.services.append(Service("redis", self._redis.process, self.redis_url,
                                     self.run_dir / "redis" / "redis.log"))

    def _start_world_model(self) -> None:
        from services.world_model.client import WorldModelClient

        if self.wm_url or self.config.world_model is None:
            if self.wm_url:
                with WorldModelClient(self.wm_url) as wm:
                    _wait(wm.ready, f"world model at {self.wm_url}", None, None, self.config.ready_timeout_s)
                self.services.append(Service("world-model", None, self.wm_url))
            return
        self.wm_url = self.add_world_model("world-model", self.config.world_model_env)

    def add_world_model(self, name: str, env: dict[str, str]) -> str:
        """Start a (further) Triton world model on the stack's weights; returns its gRPC address.
        Experiments use it to serve the same weights with another feature read-out."""
        from services.world_model.client import WorldModelClient

        http, grpc_port, metrics = free_port(), free_port(), free_port()
        url = f"127.0.0.1:{grpc_port}"
        s = self._add(name, url, _cli(
            "serve", "world-model", "--model", str(self.config.world_model), "--http-port", str(http),
            "--grpc-port", str(grpc_port), "--metrics-port", str(metrics),
            "--workdir", str(self.run_dir / name.replace("-", "_"))), dict(env))
        with WorldModelClient(url) as wm:
            _wait(wm.ready, name, s.process, s.log_file, self.config.ready_timeout_s)
        if self._started:  # stack.json appears once, when every service of start() is up
            self._write_state()
        return url

    def _start_planner(self) -> None:
        port = self.config.planner_port or free_port()
        url = f"http://127.0.0.1:{port}"
        s = self._add("planner", url, _cli("serve", "planner", "--port", str(port)),
                      {"W2A_PLANNER_REDIS_URL": self.redis_url})
        _wait(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, "planner", s.process,
              s.log_file, self.config.ready_timeout_s)

    def _start_policy(self) -> None:
        from w2a_client.client import PolicyClient

        port = self.config.policy_port or free_port()
        env = {"W2A_POLICY_PORT": str(port), "W2A_POLICY_METRICS_PORT": str(free_port()),
               "W2A_POLICY_REDIS_URL": self.redis_url,
               "W2A_POLICY_ROBOT_TOKENS": json.dumps([self.config.robot_token]),
               "W2A_POLICY_TRAINER_TOKEN": self.config.trainer_token,
               "W2A_POLICY_STATE_DIR": str(self.run_dir / "policy"), **self.config.policy_env}
        target = f"127.0.0.1:{port}"
        s = self._add("policy", target, _cli("serve", "policy", "--base", str(self.config.base)), env)
        with PolicyClient(target, self.config.robot_token, timeout=2, retries=0) as client:
            _wait(lambda: client.info() is not None, "policy server", s.process, s.log_file,
                  self.config.ready_timeout_s)

    def restart_policy(self, env: dict[str, str], state_dir: Path) -> None:
        """Replace the policy server with a fresh one (its own residual versions in ``state_dir``)
        and extra ``W2A_POLICY_*`` settings: each trained arm of an experiment starts from v0."""
        self.stop_service("policy")
        self.config.policy_env.update(env)
        self.config.policy_env["W2A_POLICY_STATE_DIR"] = str(state_dir)
        self._start_policy()
        self._write_state()

    def start_trainer(self, adapters: Path, env: dict[str, str] | None = None) -> None:
        """Add the Stage 2 trainer to a running stack (e.g. once Stage 1 has produced adapters);
        a trainer already running is stopped first (it checkpoints and pushes)."""
        self.stop_service("trainer", timeout=120)
        self.config.adapters = Path(adapters)
        self.config.trainer_env.update(env or {})
        self._start_trainer()
        self._write_state()

    def _start_trainer(self) -> None:
        if self.config.adapters is None:
            return
        if not self.wm_url:
            raise ValueError("the Stage 2 trainer needs a world model: give --world-model or --wm-url")
        env = {"W2A_TRAINER_REDIS_URL": self.redis_url, "W2A_TRAINER_WM_URL": self.wm_url,
               "W2A_TRAINER_POLICY_URL": self.address("policy"),
               "W2A_TRAINER_POLICY_TOKEN": self.config.trainer_token,
               "W2A_TRAINER_ADAPTERS": str(self.config.adapters),
               "W2A_TRAINER_OUT": str(self.run_dir / "trainer"),
               "W2A_TRAINER_METRICS_PORT": str(free_port()), **self.config.trainer_env}
        metrics = f"http://127.0.0.1:{env['W2A_TRAINER_METRICS_PORT']}/metrics"
        s = self._add("trainer", metrics, _cli("train-residual"), env)
        _wait(lambda: httpx.get(metrics, timeout=2).status_code == 200, "trainer", s.process,
              s.log_file, self.config.ready_timeout_s)

    def start(self) -> Stack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            for step in (self._start_redis, self._start_world_model, self._start_planner,
                         self._start_policy, self._start_trainer):
                step()
        except BaseException:
            self.stop()
            raise
        self._started = True
        self._write_state()
        return self

    def address(self, name: str) -> str:
        for s in self.services:
            if s.name == name:
                return s.address
        raise KeyError(f"no {name} in this stack")

    def _write_state(self) -> None:
        state = {"supervisor_pid": os.getpid(), "run_dir": str(self.run_dir),
                 "robot_token": self.config.robot_token, "trainer_token": self.config.trainer_token,
                 "services": [{"name": s.name, "pid": s.process.pid if s.process else None,
                               "address": s.address, "log": str(s.log_file) if s.log_file else None}
                              for s in self.services]}
        path = self.run_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.chmod(tmp, 0o600)  # holds tokens
        os.replace(tmp, path)

    # -- stop ------------------------------------------------------------------------------------

    def stop_service(self, name: str, timeout: float = 30.0) -> int | None:
        for s in self.services:
            if s.name == name and s.process is not None and s.process.poll() is None:
                s.process.send_signal(signal.SIGTERM)
                try:
                    return s.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored SIGTERM for %.0fs; killing it", name, timeout)
                    s.process.kill()
                    return s.process.wait(10)
        return None

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM in reverse start order (trainer first: it pushes and acks before the others go)."""
        codes = {}
        for s in reversed(self.services):
            if s.name == "redis":
                continue
            codes[s.name] = self.stop_service(s.name, timeout)
        if self._redis is not None:
            self._redis.stop()
            codes["redis"] = 0
        self.services = []
        state = self.run_dir / STATE_FILE
        if state.exists():
            state.unlink()
        return codes

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_state(run_dir: Path) -> dict:
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no running stack under {run_dir} (no {STATE_FILE})")
    return json.loads(path.read_text())


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child not yet reaped by its parent is a zombie: it is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def stack_status(run_dir: Path) -> dict:
    """Health of every service of a running stack, and the policy version served."""
    from services.world_model.client import WorldModelClient
    from w2a_client.client import PolicyClient

    state = read_state(run_dir)
    out = {"supervisor_alive": _alive(state["supervisor_pid"]), "services": {}}
    for s in state["services"]:
        entry = {"address": s["address"], "pid": s["pid"], "alive": s["pid"] is None or _alive(s["pid"])}
        try:
            if s["name"] == "redis":
                entry["ready"] = bool(redis.Redis.from_url(s["address"], socket_timeout=2).ping())
            elif s["name"].startswith("world-model"):
                with WorldModelClient(s["address"], timeout=3, retries=0) as wm:
                    entry["ready"] = wm.ready()
            elif s["name"] == "planner":
                entry["ready"] = httpx.get(f"{s['address']}/readyz", timeout=3).status_code == 200
            elif s["name"] == "policy":
                with PolicyClient(s["address"], state["robot_token"], timeout=3, retries=0) as client:
                    info = client.info()
                entry["ready"] = True
                entry["residual_version"] = int(info.residual_version)
                entry["base_policy"] = info.base_policy
            elif s["name"] == "trainer":
                r = httpx.get(s["address"], timeout=3)
                entry["ready"] = r.status_code == 200
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
            entry["ready"] = False
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out["services"][s["name"]] = entry
    return out


def stack_down(run_dir: Path, timeout: float = 60.0) -> bool:
    """Ask the ``w2a up`` supervisor to stop (SIGTERM); kill leftovers if it is gone."""
    state = read_state(run_dir)
    pid = state["supervisor_pid"]
    if _alive(pid) and pid != os.getpid():
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    for s in state["services"]:  # the supervisor died hard: stop its children ourselves
        if _alive(s["pid"]):
            os.kill(s["pid"], signal.SIGTERM)
    path = Path(run_dir) / STATE_FILE
    if path.exists():
        path.unlink()
    return not _alive(pid)
