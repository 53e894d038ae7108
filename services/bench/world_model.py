"""The world model on a real tritonserver (``w2a bench world-model``)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from services.common.redis_server import free_port


def bench_world_model(concurrency: int = 8, seconds: float = 10.0, model_dir: str | None = None,
                      progress=print) -> dict:
    """Both Triton models on one real tritonserver: ``wm_encode`` (a 13-frame clip, Stage 1's
    call) and ``wm_generate`` (a frame + skill -> 9 frames, the trainer's call); for each,
    sequential single requests vs ``concurrency`` clients whose requests meet in Triton's dynamic
    batcher (one forward / one denoising loop per batch)."""
    from services.world_model.client import WorldModelClient
    from services.world_model.launcher import TritonPorts, TritonServer
    from w2a_models.world_model.builder import build_tiny

    with tempfile.TemporaryDirectory(prefix="w2a-bench-") as tmp:
        tmp = Path(tmp)
        model = Path(model_dir) if model_dir else build_tiny(tmp / "tiny-wm")
        clip = np.random.default_rng(0).integers(0, 255, (13, 64, 64, 3), dtype=np.uint8)
        ports = TritonPorts(free_port(), free_port(), free_port())
        progress("bench world-model: starting tritonserver")
        with TritonServer(model, tmp / "triton", ports) as server:
            target = f"127.0.0.1:{server.ports.grpc}"

            def run(model_name: str, clients: int) -> tuple[list[float], float, int]:
                latencies: list[float] = []
                errors = [0]
                lock = threading.Lock()
                end = time.perf_counter() + seconds

                def worker() -> None:
                    with WorldModelClient(target, timeout=120, retries=0) as client:
                        def call(seed: int = 0):
                            if model_name == "wm_encode":
                                return client.encode(clip)
                            return client.generate(clip[0], "push the puck to the goal", 9, seed=seed)

                        call()  # warm-up, not timed
                        calls = 0
                        while time.perf_counter() < end:
                            t0 = time.perf_counter()
                            calls += 1
                            try:
                                call(calls)
                            except Exception:  # noqa: BLE001 - counted as a failed call
                                errors[0] += 1
                                continue
                            with lock:
                                latencies.append((time.perf_counter() - t0) * 1e3)

                threads = [threading.Thread(target=worker) for _ in range(clients)]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return latencies, time.perf_counter() - start, errors[0]

            figures: dict[str, dict] = {}
            for model_name in ("wm_encode", "wm_generate"):
                progress(f"bench world-model: {model_name}, sequential")
                single, single_s, e1 = run(model_name, 1)
                progress(f"bench world-model: {model_name}, {concurrency} concurrent clients")
                many, many_s, e2 = run(model_name, concurrency)
                batch1, concurrent = len(single) / single_s, len(many) / many_s
                figures[model_name] = {
                    "batch1_rps": batch1, "concurrent_rps": concurrent, "batching_gain": concurrent / batch1,
                    "batch1_p50_ms": float(np.percentile(single, 50)),
                    "p50_ms": float(np.percentile(many, 50)), "p99_ms": float(np.percentile(many, 99)),
                    "errors": e1 + e2}
    encode, generate = figures["wm_encode"], figures["wm_generate"]
    return {"model": "wm_encode", "clip": [13, 64, 64, 3], "concurrency": concurrency,
            "seconds_per_run": seconds, **{k: v for k, v in encode.items() if k != "errors"},
            "generate_clip": [9, 64, 64, 3],
            **{f"generate_{k}": v for k, v in generate.items() if k != "errors"},
            "errors": encode["errors"] + generate["errors"]}
