"""A small GR00T-protocol server for tests: ZMQ REP, msgpack + np.save arrays, api_token, the
ping and get_action endpoints. Its "policy" is a fixed function of the observation."""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from services.policy.backends.gr00t_base import pack, unpack


def toy_actions(obs: dict, horizon: int = 16) -> dict:
    arm = np.asarray(obs["state.single_arm"], np.float64)[0]
    img = np.asarray(obs["video.ego_view"], np.float64).mean() / 255.0
    steps = np.arange(horizon)[:, None] / horizon
    return {"action.single_arm": np.tanh(arm[:6][None] * 0.1 + steps + img),
            "action.gripper": np.full((horizon, 1),
                                      0.5 if "grasp" in obs["annotation.human.task_description"][0] else -0.5)}


class Gr00tTestServer:
    def __init__(self, port: int, api_token: str | None = None, delay_s: float = 0.0) -> None:
        self.port, self.api_token, self.delay_s = port, api_token, delay_s
        self.requests = 0
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._bind_error: Exception | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _bind(self, sock) -> None:
        # zmq closes a socket in its I/O thread, after close() returns: the previous server on
        # this port may still hold it for a moment.
        deadline = time.monotonic() + 5.0
        while True:
            try:
                sock.bind(f"tcp://127.0.0.1:{self.port}")
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            self._bind(sock)
        except zmq.ZMQError as exc:
            self._bind_error = exc
            sock.close(linger=0)
            return
        finally:
            self._bound.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            request = unpack(sock.recv())
            self.requests += 1
            if self.api_token is not None and request.get("api_token") != self.api_token:
                sock.send(pack({"error": "Unauthorized: Invalid API token"}))
                continue
            if self.delay_s:
                self._stop.wait(self.delay_s)
            endpoint = request.get("endpoint", "get_action")
            if endpoint == "ping":
                sock.send(pack({"status": "ok", "message": "Server is running"}))
            elif endpoint == "get_action":
                sock.send(pack(toy_actions(request["data"])))
            else:
                sock.send(pack({"error": f"Unknown endpoint: {endpoint}"}))
        sock.close(linger=0)

    def __enter__(self) -> Gr00tTestServer:
        self._thread.start()
        self._bound.wait(10)
        if self._bind_error is not None:
            raise self._bind_error
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
