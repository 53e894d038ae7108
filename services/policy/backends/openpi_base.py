"""A remote openpi policy server as the frozen base, through the real ``openpi-client`` package.

Each observation row becomes one openpi ``infer`` call (openpi servers take one observation per
call); keys are mapped by config. Deadlines: connecting and each call run on a worker thread with
a timeout; on timeout or any connection error the socket is dropped, ``BaseUnavailable`` is raised
(the policy server answers UNAVAILABLE: never a hang, never a made-up action) and the next call
reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from services.policy.backends.common import fit_chunk, remote_output, remote_spec
from w2a_models.base_policy import BaseOutput, BaseUnavailable, CameraSpec, ObservationBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenpiBaseConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cameras: tuple[CameraSpec, ...] = (CameraSpec("corner", 224, 224),)
    image_keys: dict[str, str] = field(default_factory=lambda: {"corner": "observation/image"})  # camera -> key
    state_key: str = "observation/state"
    prompt_key: str = "prompt"
    action_key: str = "actions"
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 10  # the first M actions of the server's horizon are served
    connect_timeout_s: float = 5.0
    call_timeout_s: float = 2.0


class OpenpiBase:
    remote = True  # predict() is a network call: the engine never runs it on its event loop

    def __init__(self, config: OpenpiBaseConfig, name: str = "openpi") -> None:
        self.config = config
        self.spec = remote_spec(name, config)
        self._client = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="openpi-base")

    def _connect(self):
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        cfg = self.config
        return WebsocketClientPolicy(cfg.host, cfg.port, api_key=cfg.api_key)

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # already broken; closing unblocks a recv stuck on it
                client._ws.close()

    def _call(self, fn, timeout: float, what: str):
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            self._drop()
            raise BaseUnavailable(f"openpi server {self.config.host}:{self.config.port}: {what} "
                                  f"took longer than {timeout:.1f}s") from None
        except BaseUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - connection refused/reset, protocol error, server error
            self._drop()
            raise BaseUnavailable(f"openpi server {self.config.host}:{self.config.port}: {what} failed "
                                  f"({type(exc).__name__}: {exc})") from None

    def _infer_one(self, obs: dict) -> np.ndarray:
        cfg = self.config
        if self._client is None:
            self._client = self._call(self._connect, cfg.connect_timeout_s, "connect")
        client = self._client
        out = self._call(lambda: client.infer(obs), cfg.call_timeout_s, "infer")
        if not isinstance(out, dict) or cfg.action_key not in out:
            raise BaseUnavailable(f"openpi server reply has no {cfg.action_key!r}")
        return fit_chunk(out[cfg.action_key], cfg.chunk_size, cfg.action_dim, "openpi server")

    def predict(self, batch: ObservationBatch) -> BaseOutput:
        cfg = self.config
        rows = []
        with self._lock:
            for i in range(len(batch)):
                obs = {key: batch.images[cam][i] for cam, key in cfg.image_keys.items()}
                obs[cfg.state_key] = batch.state[i]
                obs[cfg.prompt_key] = batch.instructions[i]
                rows.append(self._infer_one(obs))
        return remote_output(rows, batch, cfg.cameras)

    def close(self) -> None:
        self._drop()
        self._pool.shutdown(wait=False, cancel_futures=True)
