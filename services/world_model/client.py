"""WorldModelClient: the trainer's and tools' view of the world-model service (Triton gRPC).

Deadlines on every call, retries with backoff on UNAVAILABLE, and local checks of shapes and
dtypes before anything is sent (Triton validates again on its side). Several servers
(``url="a:8001,b:8001"``, issue 21) are balanced on the client: calls go round robin over the
servers that answer; one that fails with UNAVAILABLE (or does not connect) is skipped for
``cooldown_s`` and then tried again. ``served`` counts which endpoint answered which model.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np


class WorldModelError(RuntimeError):
    """The world-model service rejected a request or could not be reached."""


@dataclass
class Generated:
    features: np.ndarray  # [T_lat, D]
    video: np.ndarray | None  # uint8 [T, H, W, 3] when requested


class WorldModelClient:
    def __init__(self, url: str | list[str] = "127.0.0.1:8001", timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, cooldown_s: float = 5.0, first: int = 0) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.endpoints = [u.strip() for u in (url.split(",") if isinstance(url, str) else url) if u.strip()]
        if not self.endpoints:
            raise ValueError("no world-model endpoint given")
        self.url = ",".join(self.endpoints)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.cooldown_s = cooldown_s
        self.clients = {e: grpcclient.InferenceServerClient(e) for e in self.endpoints}
        self.served: Counter[tuple[str, str]] = Counter()  # (endpoint, model) -> answered calls
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count(first)  # data-parallel ranks start on different servers
        self._lock = threading.Lock()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def __enter__(self) -> WorldModelClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ready(self) -> bool:
        """Every endpoint serves both models."""
        try:
            return all(bool(c.is_server_ready(client_timeout=5)) and all(
                c.is_model_ready(m, client_timeout=5) for m in ("wm_encode", "wm_generate"))
                for c in self.clients.values())
        except Exception:  # noqa: BLE001 - unreachable counts as not ready
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise WorldModelError(f"world model at {self.url} not ready after {timeout}s")
            time.sleep(0.5)

    # -- calls ---------------------------------------------------------------------------------

    def _input(self, name: str, array: np.ndarray, dtype: str):
        tensor = self._grpc.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        return tensor

    def _order(self) -> list[str]:
        """Endpoints to try for one call: round robin over the ones not cooling down, then the rest."""
        with self._lock:
            start = next(self._turn) % len(self.endpoints)
            now = time.monotonic()
            turn = self.endpoints[start:] + self.endpoints[:start]
            up = [e for e in turn if self._down_until.get(e, 0.0) <= now]
            return up + [e for e in turn if e not in up]

    def _mark_down(self, endpoint: str) -> None:
        with self._lock:
            self._down_until[endpoint] = time.monotonic() + self.cooldown_s

    def _infer(self, model: str, inputs, outputs: list[str]):
        from tritonclient.utils import InferenceServerException

        delay = self.backoff
        for attempt in range(self.retries + 1):
            failure = ""
            for endpoint in self._order():
                try:
                    result = self.clients[endpoint].infer(
                        model, inputs, client_timeout=self.timeout,
                        outputs=[self._grpc.InferRequestedOutput(o) for o in outputs])
                except InferenceServerException as exc:
                    if "UNAVAILABLE" not in (exc.status() or "").upper():
                        raise WorldModelError(f"{model}: {exc.message() or exc}") from None
                    failure = f"{endpoint}: {exc.message() or exc}"
                    self._mark_down(endpoint)  # the next server takes this call
                    continue
                with self._lock:
                    self.served[(endpoint, model)] += 1
                return [result.as_numpy(o) for o in outputs]
            if attempt == self.retries:
                raise WorldModelError(f"{model}: no world-model server answered ({failure})")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def encode(self, video: np.ndarray, text: str = "") -> np.ndarray:
        """uint8 [T, H, W, 3] -> features [T_lat, D]."""
        video = np.asarray(video)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
            raise WorldModelError(f"encode needs uint8 [T, H, W, 3] with T > 0, got {video.dtype} {video.shape}")
        (features,) = self._infer("wm_encode", [
            self._input("VIDEO", video[None], "UINT8"),
            self._input("TEXT", np.array([[text.encode()]], dtype=object), "BYTES")], ["FEATURES"])
        return features[0]

    def generate(self, frame: np.ndarray, skill: str, num_frames: int = 13, seed: int = 0,
                 return_video: bool = False) -> Generated:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise WorldModelError(f"generate needs a uint8 [H, W, 3] frame, got {frame.dtype} {frame.shape}")
        features, video = self._infer("wm_generate", [
            self._input("FRAME", frame[None], "UINT8"),
            self._input("SKILL", np.array([[skill.encode()]], dtype=object), "BYTES"),
            self._input("NUM_FRAMES", np.array([[num_frames]], dtype=np.int32), "INT32"),
            self._input("SEED", np.array([[seed]], dtype=np.int64), "INT64"),
            self._input("RETURN_VIDEO", np.array([[return_video]], dtype=bool), "BOOL")],
            ["FEATURES", "VIDEO"])
        return Generated(features[0], video[0] if return_video else None)

    def generate_chain(self, frame: np.ndarray, skills: list[str], frames_per_skill: int = 13,
                       seed: int = 0) -> list[Generated]:
        """Skill-WM over the service: each segment starts from the previous segment's last frame."""
        from w2a_models.world_model.model import chain_skills

        try:
            return chain_skills(lambda f, skill, s: self.generate(f, skill, frames_per_skill, s,
                                                                  return_video=True),
                                frame, skills, seed)
        except ValueError as exc:
            raise WorldModelError(str(exc)) from None
