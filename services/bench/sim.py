"""Where a simulated robot's time goes (``w2a bench sim``): physics per step and one render per
frame, with LIBERO's multisampling on and off, measured interleaved in one process so the
machine's drift hits both alike."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np


def _render_ms(sim, frames: int) -> float:
    started = time.perf_counter()
    for _ in range(frames):
        sim.render()
    return 1e3 * (time.perf_counter() - started) / frames


def _physics_ms(sim, steps: int, rng: np.random.Generator) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        sim.step(np.concatenate([rng.uniform(-0.3, 0.3, 6), [-1.0]]).astype(np.float32))
    return 1e3 * (time.perf_counter() - started) / steps


def bench_sim(suite: str = "libero_object", task: int = 0, image_size: int = 64, rounds: int = 3,
              frames: int = 10, steps: int = 20, progress=print) -> dict:
    """Median ms per render (antialias on / off) and per physics step over ``rounds``
    alternating rounds; the images' mean absolute difference says what turning it off changes."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from services.robot_sim.libero_env import LiberoConfig, LiberoSim

    rng = np.random.default_rng(0)
    sims = {aa: LiberoSim(LiberoConfig(suite=suite, task=task, image_size=image_size, antialias=aa))
            for aa in (True, False)}
    try:
        for sim in sims.values():
            sim.reset(0)
            sim.render()  # the first frame uploads textures
        frame_difference = float(np.abs(sims[True].render().astype(np.int16) - sims[False].render()).mean())
        render: dict[bool, list[float]] = {True: [], False: []}
        physics: list[float] = []
        for r in range(rounds):
            progress(f"bench sim: round {r + 1}/{rounds}")
            for aa, sim in sims.items():
                render[aa].append(_render_ms(sim, frames))
            physics.append(_physics_ms(sims[False], steps, rng))
    finally:
        for sim in sims.values():
            sim.close()
    on, off = statistics.median(render[True]), statistics.median(render[False])
    return {"sim": "libero", "suite": suite, "task": task, "image_size": image_size, "rounds": rounds,
            "render_ms_antialias": round(on, 1), "render_ms_no_antialias": round(off, 1),
            "render_speedup": round(on / off, 2), "physics_ms_per_step": round(statistics.median(physics), 1),
            "frame_mean_abs_difference": round(frame_difference, 2),
            "lp_num_threads": os.environ.get("LP_NUM_THREADS", "default")}
