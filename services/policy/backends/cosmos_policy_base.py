"""A remote Cosmos Policy server (its ``deploy.py``: FastAPI, ``POST /act``) as the frozen base.

Request: JSON ``{"primary_image": [[[r, g, b], ...]], "left_wrist_image": ..., "right_wrist_image":
..., "proprio": [...], "task_description": "..."}`` (images as nested uint8 lists; cameras map to
payload keys by config, and payload keys the robot has no camera for are sent as black images,
since the server reads them unconditionally). Reply: ``{"actions": [[...], ...], ...}``; the
server answers the JSON string ``"error"`` when inference fails. Connect and read deadlines come
from config; any failure raises ``BaseUnavailable`` (the robot gets UNAVAILABLE).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import httpx
import numpy as np

from services.policy.backends.common import fit_chunk, remote_output, remote_spec
from w2a_models.base_policy import BaseOutput, BaseUnavailable, CameraSpec, ObservationBatch


@dataclass(frozen=True)
class CosmosPolicyBaseConfig:
    url: str = "http://127.0.0.1:8777"
    cameras: tuple[CameraSpec, ...] = (CameraSpec("corner", 224, 224),)
    image_keys: dict[str, str] = field(default_factory=lambda: {"corner": "primary_image"})  # camera -> key
    blank_image_keys: tuple[str, ...] = ("left_wrist_image", "right_wrist_image")
    proprio_key: str = "proprio"
    task_key: str = "task_description"
    state_dim: int = 14
    action_dim: int = 14
    chunk_size: int = 50
    connect_timeout_s: float = 5.0
    call_timeout_s: float = 10.0


class CosmosPolicyBase:
    remote = True  # predict() is a network call: the engine never runs it on its event loop

    def __init__(self, config: CosmosPolicyBaseConfig, name: str = "cosmos-policy") -> None:
        self.config = config
        self.spec = remote_spec(name, config)
        timeout = httpx.Timeout(config.call_timeout_s, connect=config.connect_timeout_s)
        self._http = httpx.Client(base_url=config.url, timeout=timeout)
        self._lock = threading.Lock()

    def _payload(self, batch: ObservationBatch, i: int) -> dict:
        cfg = self.config
        payload: dict = {}
        for cam, key in cfg.image_keys.items():
            payload[key] = batch.images[cam][i].tolist()
        first = batch.images[cfg.cameras[0].name][i]
        for key in cfg.blank_image_keys:
            payload.setdefault(key, np.zeros_like(first).tolist())
        payload[cfg.proprio_key] = batch.state[i].astype(float).tolist()
        payload[cfg.task_key] = batch.instructions[i]
        return payload

    def _act(self, payload: dict) -> np.ndarray:
        cfg = self.config
        try:
            response = self._http.post("/act", json=payload)
        except httpx.TimeoutException:
            raise BaseUnavailable(f"Cosmos Policy server {cfg.url}: no answer within "
                                  f"{cfg.call_timeout_s:.1f}s") from None
        except httpx.HTTPError as exc:
            raise BaseUnavailable(f"Cosmos Policy server {cfg.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise BaseUnavailable(f"Cosmos Policy server {cfg.url}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise BaseUnavailable("Cosmos Policy reply is not JSON") from None
        if not isinstance(body, dict) or "actions" not in body:
            raise BaseUnavailable(f"Cosmos Policy server error: {str(body)[:200]}")
        return fit_chunk(body["actions"], cfg.chunk_size, cfg.action_dim, "Cosmos Policy server")

    def predict(self, batch: ObservationBatch) -> BaseOutput:
        with self._lock:
            rows = [self._act(self._payload(batch, i)) for i in range(len(batch))]
        return remote_output(rows, batch, self.config.cameras)

    def close(self) -> None:
        self._http.close()
