"""Pushing residual versions to a serving policy server (``w2a bench weights``)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from services.bench.common import (
    INSTRUCTION,
    ROBOT,
    TRAINER,
    observation,
    policy_process,
    tiny_base,
)


def bench_weights(pushes: int = 10, robots: int = 4, image_size: int = 64, progress=print) -> dict:
    import torch

    from w2a_client.client import PolicyClient
    from w2a_models.checkpoints import pack_tensors
    from w2a_models.residual import ResidualConfig, ResidualPolicy

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="w2a-bench-") as tmp:
        tmp = Path(tmp)
        base = tiny_base(image_size)
        base.save(tmp / "base")
        spec = base.spec
        images, state = observation(image_size)
        progress("bench weights: pushing while robots act")
        with policy_process(tmp / "base", tmp / "state", None) as target:
            stop, failed, acts = threading.Event(), [0], [0]

            def robot(i: int) -> None:
                with PolicyClient(target, ROBOT, retries=0) as client:
                    while not stop.is_set():
                        try:
                            client.act(f"r{i}", images, state, INSTRUCTION)
                            acts[0] += 1
                        except Exception:  # noqa: BLE001 - counted as a failed act
                            failed[0] += 1

            threads = [threading.Thread(target=robot, args=(i,), daemon=True) for i in range(robots)]
            for t in threads:
                t.start()
            live_ms, blob_bytes = [], 0
            with PolicyClient(target, TRAINER) as trainer, PolicyClient(target, ROBOT) as probe:
                for version in range(1, pushes + 1):
                    cfg = ResidualConfig(spec.feature_dim, spec.action_dim, spec.chunk_size)
                    blob, manifest = pack_tensors(ResidualPolicy(cfg).state_dict(), str(version),
                                                  str(version - 1) if version > 1 else None, cfg.__dict__)
                    blob_bytes = len(blob)
                    t0 = time.perf_counter()
                    trainer.push_residual(blob, manifest)
                    while probe.act("probe", images, state, INSTRUCTION).version < version:
                        pass
                    live_ms.append((time.perf_counter() - t0) * 1e3)
                    time.sleep(0.1)
            stop.set()
            for t in threads:
                t.join(10)
    return {"pushes": pushes, "robots": robots, "blob_bytes": blob_bytes,
            "push_to_live_ms_p50": float(np.median(live_ms)), "push_to_live_ms_max": float(max(live_ms)),
            "acts_during_pushes": acts[0], "failed_acts": failed[0]}
