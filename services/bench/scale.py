"""Scale-out on one machine (``w2a bench scale``): Stage 1 with 1 and 2 ``torchrun`` ranks (same
global batch), Stage 2 rollout steps/s with world-model calls for 1 trainer + 1 Triton server
against 2 ranks + 2 servers, and the time to push one residual version to 1 and 3 policy replicas.

Every part runs real processes on loopback (torchrun with gloo, ``tritonserver``, ``w2a serve
policy``, ``w2a train-residual``, an embedded redis-server). On a machine with fewer cores than
processes the scaled configurations compete for the same cores: the figures say what this
machine does, not what a cluster would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import numpy as np

from services.bench.common import TRAINER, policy_process, tiny_base

ROOT = Path(__file__).resolve().parents[2]


# -- Stage 1 ---------------------------------------------------------------------------------------

def synthetic_chunk_set(demos: int = 40, per_demo: int = 12, tokens: int = 3, token_dim: int = 64,
                        chunk: int = 8, action_dim: int = 4, seed: int = 0):
    """Chunks whose video latent is a fixed random map of their actions plus noise (four skills):
    learnable, and shaped like the tiny world model's features."""
    from services.jobs.stage1_data import ChunkSet

    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((chunk * action_dim, tokens * token_dim)).astype(np.float32) / 8
    skills = rng.integers(0, 4, demos * per_demo)
    actions = rng.normal(0.0, 0.5, (demos * per_demo, chunk, action_dim)).astype(np.float32)
    actions += (skills[:, None, None] - 1.5).astype(np.float32) * 0.3
    latents = (actions.reshape(len(actions), -1) @ proj).reshape(-1, tokens, token_dim)
    latents += 0.05 * rng.standard_normal(latents.shape).astype(np.float32)
    demo = np.repeat(np.arange(demos), per_demo)
    return ChunkSet(latents.astype(np.float32), actions, skills, demo, [f"t: skill {i}" for i in range(4)],
                    [f"d{i}" for i in range(demos)])


def stage1_rank(out: Path, steps: int, batch: int) -> None:
    """One rank (or the one process) of the Stage 1 measurement; rank 0 writes ``rank0.json``."""
    import torch

    from services.common.distributed import init_from_env, shutdown
    from services.jobs.stage1 import Stage1Config, train_stage1

    torch.set_num_threads(1)
    ranks = init_from_env("gloo")
    config = Stage1Config(steps=steps, batch_size=batch, hard_negatives=4, holdout_fraction=0.2)
    result = train_stage1(synthetic_chunk_set(), out / "job", config, progress=False, ranks=ranks)
    if ranks.main:
        (out / "rank0.json").write_text(json.dumps({"world": ranks.world, "steps": steps,
                                                    "train_seconds": result["train_seconds"]}))
    shutdown(ranks)


def _stage1(out: Path, ranks: int, steps: int, batch: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rank_cmd = ["-m", "services.bench.scale", "stage1-rank", str(out), str(steps), str(batch)]
    cmd = [sys.executable, *rank_cmd] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *rank_cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"stage 1 with {ranks} ranks failed:\n{done.stderr[-3000:]}")
    result = json.loads((out / "rank0.json").read_text())
    return result["steps"] / result["train_seconds"]


# -- Stage 2 ---------------------------------------------------------------------------------------

def _stage2(tmp: Path, redis_url: str, adapters: Path, wm_endpoints: list[str], ranks: int, steps: int,
            group: str, batch_size: int) -> dict:
    """Rollout steps per second from the trainer(s) being up to the stream drained."""
    import redis

    from services.common.streams import ROLLOUT_STREAM
    from services.trainer.rollout_stream import group_drained

    log = tmp / f"{group}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "W2A_TORCH_THREADS": "1",
           "W2A_TRAINER_REDIS_URL": redis_url, "W2A_TRAINER_ADAPTERS": str(adapters),
           "W2A_TRAINER_OUT": str(tmp / group), "W2A_TRAINER_WM_URL": ",".join(wm_endpoints),
           "W2A_TRAINER_GROUP": group, "W2A_TRAINER_CONSUMER": group, "W2A_TRAINER_METRICS_PORT": "0",
           "W2A_TRAINER_BATCH_SIZE": str(batch_size), "W2A_TRAINER_PUSH_EVERY": "1000000",
           "W2A_TRAINER_MAX_WAIT_S": "0.5", "W2A_TRAINER_POLICY_URL": "127.0.0.1:9"}
    train = ["-m", "services.cli", "train-residual"]
    cmd = [sys.executable, *train] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *train]
    client = redis.Redis.from_url(redis_url)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while log.read_text(errors="replace").count("Stage 2 trainer") < ranks:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"trainer did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        start = time.perf_counter()
        while not group_drained(client, ROLLOUT_STREAM, group):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"trainer stopped before the stream drained:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()
    return {"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds, "ranks": ranks,
            "wm_servers": len(wm_endpoints)}


# -- push fan-out ----------------------------------------------------------------------------------

def _fanout(endpoints: list[str], base, pushes: int, first_update: int) -> tuple[list[float], dict]:
    """Milliseconds from offering a version to every replica having accepted it."""
    import torch

    from services.trainer.fleet import FleetPusher
    from w2a_client.client import PolicyClient
    from w2a_models.residual import ResidualConfig, ResidualPolicy

    spec = base.spec
    cfg = ResidualConfig(spec.feature_dim, spec.action_dim, spec.chunk_size)
    fleet = FleetPusher(lambda: list(endpoints), lambda e: PolicyClient(e, TRAINER, retries=0), every_s=60)
    times = []
    try:
        for i in range(pushes):
            torch.manual_seed(first_update + i)
            t0 = time.perf_counter()
            fleet.offer(ResidualPolicy(cfg).state_dict(), asdict(cfg), first_update + i)
            if not fleet.flush(60):
                raise RuntimeError(f"push to {endpoints} did not complete: {fleet.last_error}")
            times.append((time.perf_counter() - t0) * 1000)
        served = fleet.served_versions()
        current = fleet.current.version
    finally:
        fleet.close(5)
    return times, {"served": served, "current": current}


def bench_scale(stage1_steps: int = 150, stage1_batch: int = 64, stage2_steps: int = 320, pushes: int = 6,
                image_size: int = 64, progress=print) -> dict:
    import redis
    import torch

    from services.bench.trainer import _rollout_records
    from services.common.redis_server import EmbeddedRedis, free_port
    from services.common.rollout_log import STREAM_FIELD, pack_record
    from services.common.streams import ROLLOUT_STREAM
    from services.world_model.client import WorldModelClient
    from services.world_model.launcher import TritonPorts, TritonServer
    from w2a_models.adapters import AdapterConfig, Stage1Adapters
    from w2a_models.base_policy.tiny_vla import TinyVLAConfig
    from w2a_models.checkpoints import save_module
    from w2a_models.world_model.builder import build_tiny

    torch.set_num_threads(1)
    result: dict = {"machine": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="w2a-bench-scale-") as tmp:
        tmp = Path(tmp)
        # Stage 1, interleaved (timings drift here): 1, 2, 1, 2 ranks; the mean of each
        runs: dict[int, list[float]] = {1: [], 2: []}
        for rep in range(2):
            for ranks in (1, 2):
                progress(f"bench scale: Stage 1, {ranks} rank(s), {stage1_steps} steps of global batch "
                         f"{stage1_batch} (run {rep + 1}/2)")
                runs[ranks].append(_stage1(tmp / f"stage1-{ranks}-{rep}", ranks, stage1_steps, stage1_batch))
        result["stage1"] = {"ranks_1_steps_per_s": float(np.mean(runs[1])),
                            "ranks_2_steps_per_s": float(np.mean(runs[2])),
                            "runs": {f"ranks_{r}": v for r, v in runs.items()},
                            "global_batch": stage1_batch, "steps": stage1_steps}

        # Stage 2 with world-model calls
        chunk = TinyVLAConfig().chunk_size
        feature_dim = TinyVLAConfig(image_size=image_size).feature_dim
        wm_dir = build_tiny(tmp / "tiny-wm")
        with ExitStack() as stack:
            server = stack.enter_context(EmbeddedRedis(tmp / "redis"))
            wms = [stack.enter_context(TritonServer(wm_dir, tmp / f"triton{i}",
                                                    TritonPorts(free_port(), free_port(), free_port())))
                   for i in range(2)]
            endpoints = [f"127.0.0.1:{w.ports.grpc}" for w in wms]
            with WorldModelClient(endpoints[0], timeout=120) as wm:
                dim = wm.generate(np.zeros((image_size, image_size, 3), np.uint8), "probe",
                                  chunk + 1).features.shape[-1]
            torch.manual_seed(0)
            acfg = AdapterConfig(token_dim=dim, action_dim=4, chunk_size=chunk)
            save_module(tmp / "adapters", Stage1Adapters(acfg), "1", config={"adapter": asdict(acfg)})
            rds = redis.Redis.from_url(server.url)
            progress(f"bench scale: writing {stage2_steps} rollout steps to the stream")
            pipe = rds.pipeline(transaction=False)
            for record in _rollout_records(stage2_steps, image_size, feature_dim, chunk):
                pipe.xadd(ROLLOUT_STREAM, {STREAM_FIELD: pack_record(record)})
            pipe.execute()
            rds.close()
            stage2: dict[str, list[dict]] = {"single": [], "scaled": []}
            for rep in range(2):  # each configuration reads the whole stream in its own group
                for name, ranks, wm_endpoints in (("single", 1, endpoints[:1]), ("scaled", 2, endpoints)):
                    progress(f"bench scale: Stage 2, {ranks} rank(s) and {len(wm_endpoints)} world-model "
                             f"server(s), {stage2_steps} steps (run {rep + 1}/2)")
                    stage2[name].append(_stage2(tmp, server.url, tmp / "adapters", wm_endpoints, ranks,
                                                stage2_steps, f"bench-{name}-{rep}", 32))
        result["stage2"] = {"single_steps_per_s": float(np.mean([r["steps_per_s"] for r in stage2["single"]])),
                            "scaled_steps_per_s": float(np.mean([r["steps_per_s"] for r in stage2["scaled"]])),
                            "runs": stage2, "batch_size_per_rank": 32,
                            "single": "1 trainer + 1 Triton world model", "scaled": "2 ranks + 2 Triton servers"}

        # push fan-out to 1 and 3 real policy servers
        base = tiny_base(image_size)
        base.save(tmp / "base")
        with ExitStack() as stack:
            targets = [stack.enter_context(policy_process(tmp / "base", tmp / f"state{i}", None)) for i in range(3)]
            ms: dict[int, list[float]] = {1: [], 3: []}
            update, state = 1, {}
            for rep in range(2):
                for n in (1, 3):
                    progress(f"bench scale: {pushes} pushes to {n} replica(s) (run {rep + 1}/2)")
                    times, state = _fanout(targets[:n], base, pushes, update)
                    ms[n] += times
                    update += pushes
        result["fanout"] = {"replicas_1_ms": float(np.median(ms[1])), "replicas_3_ms": float(np.median(ms[3])),
                            "replicas_in_sync": len(set(state["served"].values())) == 1
                            and set(state["served"].values()) == {state["current"]},
                            "served_versions": state["served"], "pushes_each": 2 * pushes, "statistic": "median"}
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "stage1-rank":
        stage1_rank(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit("usage: python -m services.bench.scale stage1-rank OUT STEPS BATCH (use `w2a bench scale`)")
