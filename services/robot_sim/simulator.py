"""What a robot, a collector and an evaluation need from a simulator (Meta-World or LIBERO).

``MetaWorldSim`` and ``LiberoSim`` both satisfy it; ``robot.make_sim`` picks one from a
``RobotConfig``. The seed decides the placement (evaluation seeds, 100 000 and up, are kept
apart: on LIBERO they are the suite's official init states).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Step(Protocol):
    obs: Any
    success: bool
    truncated: bool


class Simulator(Protocol):
    @property
    def task_name(self) -> str:
        """The name episodes record (Meta-World task, or LIBERO '<suite>/<task name>')."""
        ...

    @property
    def instruction(self) -> str:
        ...

    @property
    def state(self) -> np.ndarray:
        """float32 proprioceptive and object state, in the episode format's layout."""
        ...

    def reset(self, seed: int) -> Any:
        ...

    def render(self) -> np.ndarray:
        """uint8 [H, W, 3], upright: only when a consumer needs a frame (rendering is the cost)."""
        ...

    def step(self, action: np.ndarray) -> Step:
        """One policy step (the action held for the config's action repeat)."""
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> Simulator:
        ...

    def __exit__(self, *exc) -> None:
        ...
