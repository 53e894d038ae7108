"""Per-robot sessions: which episode a robot is in, how many steps it was served, its last chunk.

Smoothing at chunk boundaries (optional, ``W2A_POLICY_SMOOTH_STEPS``, default 0 = off): the first
k actions of a new chunk are cross-faded linearly from the previous chunk's last action into the
new chunk (weight of the old action (k-i)/(k+1) at step i). Why this method: it removes the jump a
robot feels when consecutive chunks disagree, never changes actions beyond step k, and needs only
the last action, not a full temporal ensemble. A new episode starts with no history.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Session:
    robot_id: str
    episode_id: str
    steps_served: int = 0
    last_action: np.ndarray | None = None
    last_seen: float = field(default_factory=time.monotonic)


class SessionTable:
    def __init__(self, smooth_steps: int = 0, max_sessions: int = 10_000, idle_seconds: float = 3600) -> None:
        self.smooth_steps = smooth_steps
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, robot_id: str) -> Session | None:
        return self._sessions.get(robot_id)

    def _evict(self, now: float) -> None:
        if len(self._sessions) < self.max_sessions:
            return
        stale = [k for k, s in self._sessions.items() if now - s.last_seen > self.idle_seconds]
        for key in stale or [min(self._sessions, key=lambda k: self._sessions[k].last_seen)]:
            del self._sessions[key]

    def apply(self, robot_id: str, episode_id: str, chunk: np.ndarray) -> np.ndarray:
        """Record a served chunk and return it, smoothed against the session's last action."""
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(robot_id)
            if session is None or session.episode_id != episode_id:
                self._evict(now)
                session = self._sessions[robot_id] = Session(robot_id, episode_id)
            out = chunk
            k = min(self.smooth_steps, len(chunk))
            if k and session.last_action is not None:
                out = chunk.copy()
                for i in range(k):
                    w_old = (k - i) / (k + 1)
                    out[i] = w_old * session.last_action + (1 - w_old) * chunk[i]
            session.last_action = out[-1].copy()
            session.steps_served += 1
            session.last_seen = now
            return out

    def end(self, robot_id: str) -> Session | None:
        with self._lock:
            return self._sessions.pop(robot_id, None)
