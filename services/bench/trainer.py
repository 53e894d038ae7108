"""The Stage 2 trainer consuming a real Redis stream (``w2a bench trainer``)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from services.bench.common import (
    INSTRUCTION,
)
from services.common.redis_server import EmbeddedRedis, free_port
from services.common.rollout_log import STREAM_FIELD, logged_image_entry, pack_record
from services.common.rollout_record import StepRecord
from services.common.streams import ROLLOUT_STREAM


def _rollout_records(n: int, image_size: int, feature_dim: int, chunk_size: int, skills: int = 4):
    """Step records shaped like the policy server's (one image, features, base chunk), on the wire."""
    rng = np.random.default_rng(0)
    image = logged_image_entry(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))
    for i in range(n):
        yield StepRecord(robot_id=f"bench-{i % 16}", episode_id=str(i // 50), step=i, skill=f"skill {i % skills}",
                         instruction=INSTRUCTION, base=rng.standard_normal((chunk_size, 4)).astype(np.float32),
                         features=rng.standard_normal(feature_dim).astype(np.float32),
                         images={"corner": image}).to_wire()


def _consume(rds, group: str, targets, adapters, steps: int, out: Path, batch_size: int,
             pipeline: bool = True) -> dict:
    from services.trainer.residual_trainer import ResidualTrainer, ResidualTrainerConfig
    from services.trainer.rollout_stream import RolloutStream, StreamConfig

    stream = RolloutStream(rds, StreamConfig(group=group, consumer="bench", block_ms=10,
                                               batch=min(256, steps)))
    stream.ensure_group()
    trainer = ResidualTrainer(stream, targets, adapters, out,
                              ResidualTrainerConfig(batch_size=batch_size, max_wait_s=0.0, pipeline=pipeline))
    start = time.perf_counter()
    consumed = 0
    while consumed < steps:
        consumed += trainer.step(block_ms=10)
    trainer.close()
    elapsed = time.perf_counter() - start
    return {"steps": consumed, "seconds": elapsed, "updates": trainer.updates,
            "steps_per_s_consumed": consumed / elapsed, "updates_per_s": trainer.updates / elapsed,
            "unacked_after": int(rds.xpending(stream.config.stream, group)["pending"])}


def bench_trainer(steps: int = 20_000, wm_steps: int = 128, batch_size: int = 32, image_size: int = 64,
                  progress=print) -> dict:
    """Stage 2 consumption from a real redis-server: update → checkpoint → XACK per batch, with
    targets from a table (WM calls excluded) and from a real Triton world model (included)."""
    import redis
    import torch

    from services.trainer.targets import TableTargets, WorldModelTargets
    from services.world_model.client import WorldModelClient
    from services.world_model.launcher import TritonPorts, TritonServer
    from w2a_models.adapters import AdapterConfig, Stage1Adapters
    from w2a_models.base_policy.tiny_vla import TinyVLAConfig
    from w2a_models.world_model.builder import build_tiny

    torch.set_num_threads(1)
    feature_dim = TinyVLAConfig(image_size=image_size).feature_dim
    ROLLOUT_CHUNK = TinyVLAConfig().chunk_size
    with tempfile.TemporaryDirectory(prefix="w2a-bench-") as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        tmp = Path(tmp)
        rds = redis.Redis.from_url(server.url)
        progress(f"bench trainer: writing {steps} rollout steps to the stream")
        pipe = rds.pipeline(transaction=False)
        for i, record in enumerate(_rollout_records(steps, image_size, feature_dim, ROLLOUT_CHUNK)):
            pipe.xadd(ROLLOUT_STREAM, {STREAM_FIELD: pack_record(record)})
            if i % 500 == 499:
                pipe.execute()
        pipe.execute()
        wm_dir = build_tiny(tmp / "tiny-wm")
        ports = TritonPorts(free_port(), free_port(), free_port())
        with TritonServer(wm_dir, tmp / "triton", ports) as triton, \
                WorldModelClient(f"127.0.0.1:{triton.ports.grpc}", timeout=120) as wm:
            dim = wm.generate(np.zeros((image_size, image_size, 3), np.uint8), "probe",
                              ROLLOUT_CHUNK + 1).features.shape[-1]
            torch.manual_seed(0)
            adapters = Stage1Adapters(AdapterConfig(token_dim=dim, action_dim=4, chunk_size=ROLLOUT_CHUNK))
            progress("bench trainer: consuming without world-model calls")
            table = _consume(rds, "bench-table", TableTargets(ROLLOUT_CHUNK // 4, dim), adapters, steps,
                             tmp / "t1", batch_size)
            targets = WorldModelTargets(wm, ROLLOUT_CHUNK)
            live: dict[str, list[dict]] = {"pipelined": [], "sequential": []}
            for rep in range(2):  # interleaved: this machine's timings drift
                for mode in live:
                    progress(f"bench trainer: consuming {wm_steps} steps with wm_generate over Triton "
                             f"({mode}, run {rep + 1}/2)")
                    live[mode].append(_consume(rds, f"bench-wm-{mode}-{rep}", targets, adapters, wm_steps,
                                               tmp / f"t-{mode}-{rep}", batch_size, mode == "pipelined"))
            targets.close()
        rds.close()
    return {"steps_per_s_consumed": table["steps_per_s_consumed"], "updates_per_s": table["updates_per_s"],
            "target_steps_per_s_without_wm": 1000,
            "without_wm": table, "with_wm": live["pipelined"][-1],
            "with_wm_steps_per_s": {m: float(np.mean([r["steps_per_s_consumed"] for r in runs]))
                                    for m, runs in live.items()},
            "steps_per_s_with_wm": float(np.mean([r["steps_per_s_consumed"] for r in live["pipelined"]])),
            "config": {"batch_size": batch_size, "chunk_size": ROLLOUT_CHUNK, "image_size": image_size,
                       "feature_dim": feature_dim, "checkpoint_every": 1, "redis": "embedded redis-server"}}
