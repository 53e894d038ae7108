"""Benchmarks of the policy server over real gRPC on loopback (``w2a bench …``, JSON output).

Each configuration runs a real ``w2a serve policy`` process; the load generator runs in this
process with one asyncio client per robot, each acting in a closed loop (send, wait, send), as
robot controllers do.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np

from services.bench.common import (
    INSTRUCTION,
    ROBOT,
    observation,
    policy_process,
    policy_server_process,
    tiny_base,
)
from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import STREAM_FIELD, unpack_record
from services.common.rollout_record import StepRecord
from services.common.streams import ROLLOUT_STREAM


async def _load(target: str, robots: int, seconds: float, size: int, stream: bool = True,
                encoding: str = "raw") -> dict:
    """``robots`` closed-loop robots for ``seconds``: each holds one ``StreamAct`` session (as
    robot controllers do) or, with ``stream=False``, makes one unary ``Act`` call per step;
    ``encoding``: how they send their camera frame (raw, jpeg, png)."""
    from w2a_client.client import AsyncPolicyClient, act_request

    images, state = observation(size)
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    clients = [AsyncPolicyClient(target, ROBOT, retries=0) for _ in range(robots)]

    async def robot(i: int, client) -> None:
        nonlocal errors
        step = 0
        request = act_request(f"robot-{i}", images, state, INSTRUCTION, episode_id=f"ep-{i}",
                              encoding=encoding)
        session = client.stream() if stream else None
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            request.step = step
            t0 = time.perf_counter()
            try:
                if session is None:
                    reply = await client.act_request(request)
                else:
                    await session.write(request)
                    reply = await session.read()
                    if reply is grpc.aio.EOF:
                        raise RuntimeError("the server ended the session")
                latencies.append((time.perf_counter() - t0) * 1e3)
                server_ms.append(reply.timings.server_ms)
            except Exception:  # noqa: BLE001 - a benchmark counts every failed call, whatever it was
                errors += 1
                if session is not None:  # a broken session is over: open a new one
                    session.cancel()
                    session = client.stream()
            step += 1
        if session is not None:
            await session.done_writing()
            while await session.read() is not grpc.aio.EOF:
                pass

    for c in clients:  # warm-up: connect every channel first
        await c.info()
    # transport floor: a GetInfo round trip (auth + a small message, no model)
    floor = []
    for _ in range(200):
        t0 = time.perf_counter()
        await clients[0].info()
        floor.append((time.perf_counter() - t0) * 1e3)
    start = time.perf_counter()
    await asyncio.gather(*(robot(i, c) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - start
    for c in clients:
        await c.close()
    return {"latencies": latencies, "server_ms": server_ms, "elapsed": elapsed, "errors": errors,
            "grpc_floor_p50_ms": float(np.percentile(floor[20:], 50))}


def _summary(runs: list[dict]) -> dict:
    """Latency percentiles over all runs' requests; throughput over their summed duration."""
    lat = np.concatenate([r["latencies"] for r in runs])
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "server_p50_ms": float(np.percentile(np.concatenate([r["server_ms"] for r in runs]), 50)),
            "grpc_floor_p50_ms": float(np.median([r["grpc_floor_p50_ms"] for r in runs])),
            "rps": len(lat) / sum(r["elapsed"] for r in runs), "requests": int(lat.size),
            "errors": sum(r["errors"] for r in runs)}


def _last_entry_bytes(url: str, stream: str = ROLLOUT_STREAM) -> int | None:
    """Size of the newest step record in a stream (None when there is none)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for _, fields in client.xrevrange(stream, count=50):
            data = fields.get(STREAM_FIELD.encode())
            if data is not None and unpack_record(data).get("kind") == StepRecord.kind:
                return len(data)
        return None
    finally:
        client.close()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bare_forward_ms(base, size: int, repeats: int = 200) -> float:
    """The same model called in-process, batch 1: base forward + a residual forward."""
    import torch

    from w2a_models.base_policy import ObservationBatch
    from w2a_models.residual import ResidualConfig, ResidualPolicy

    spec = base.spec
    residual = ResidualPolicy(ResidualConfig(spec.feature_dim, spec.action_dim, spec.chunk_size))
    images, state = observation(size)
    batch = ObservationBatch({"corner": images["corner"][None]}, state[None].astype(np.float32),
                             [INSTRUCTION])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = base.predict(batch)
        with torch.no_grad():
            residual(torch.from_numpy(out.features), torch.from_numpy(out.actions))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[repeats // 10 :]))


def bench_policy(robots: int = 16, seconds: float = 5.0, image_size: int = 64, slices: int = 5,
                 progress=print) -> dict:
    """Latency, batching gain and logging overhead of ``w2a serve policy`` processes on loopback.

    Logged and unlogged servers run side by side and take the load in turn, ``slices`` short
    slices each in alternating order: on a small shared machine, drift between two long runs
    (page cache, CPU frequency, the Redis AOF) is as large as the effect being measured.
    """
    import torch

    torch.set_num_threads(1)
    slice_s = max(0.5, 2 * seconds / slices)  # each configuration gets 2 x seconds of load in all
    with tempfile.TemporaryDirectory(prefix="w2a-bench-") as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        base = tiny_base(image_size)
        base.save(tmp / "base")
        bare = _bare_forward_ms(base, image_size)

        redis_servers: dict[str, EmbeddedRedis] = {}

        def redis_url(name: str) -> str:
            redis_servers[name] = stack.enter_context(EmbeddedRedis(tmp / f"redis-{name}"))
            return redis_servers[name].url

        def load(target: str, robots_: int, seconds_: float, stream: bool = True,
                 encoding: str = "raw") -> dict:
            return asyncio.run(_load(target, robots_, seconds_, image_size, stream, encoding))

        progress("bench policy: one robot (StreamAct session, then unary Act)")
        with policy_process(tmp / "base", tmp / "single", redis_url("single")) as target:
            single = _summary([load(target, 1, seconds)])
            single_unary = _summary([load(target, 1, seconds, stream=False)])
        progress("bench policy: batching off")
        with policy_process(tmp / "base", tmp / "unbatched", redis_url("unbatched"), max_batch=1) as target:
            unbatched = _summary([load(target, robots, seconds)])
        configs = {"logged": (redis_url("logged"), {}), "unlogged": (None, {}),
                   # where logging's cost lies: the same records without the camera frames
                   "logged_no_images": (redis_url("no-images"), {"log_images": "false"}),
                   # robots that send JPEG: the server logs the bytes they sent
                   "logged_jpeg": (redis_url("jpeg"), {})}
        servers = {name: stack.enter_context(policy_server_process(tmp / "base", tmp / name, url, **extra))
                   for name, (url, extra) in configs.items()}
        # load runs: (server, how robots send frames); JPEG robots' baseline is the unlogged
        # server with JPEG robots (decoding costs both the same)
        plan = {"logged": ("logged", "raw"), "unlogged": ("unlogged", "raw"),
                "logged_no_images": ("logged_no_images", "raw"), "logged_jpeg": ("logged_jpeg", "jpeg"),
                "unlogged_jpeg": ("unlogged", "jpeg")}
        runs: dict[str, list[dict]] = {name: [] for name in plan}
        pids = {name: pid for name, (_, pid) in servers.items()}
        pids["redis"] = redis_servers["logged"].process.pid
        cpu: dict[str, float] = {name: 0.0 for name in pids}
        for target, _ in servers.values():
            load(target, robots, 0.5)  # warm-up, not counted
        for i in range(slices):
            progress(f"bench policy: logged vs unlogged (raw and JPEG robots), slice {i + 1}/{slices}")
            for name in (list(plan) if i % 2 == 0 else list(plan)[::-1]):
                server, encoding = plan[name]
                watched = [name, "redis"] if name == "logged" else [name] if name in pids else []
                before = [_cpu_seconds(pids[w]) for w in watched]
                runs[name].append(load(servers[server][0], robots, slice_s, encoding=encoding))
                for w, b in zip(watched, before):
                    a = _cpu_seconds(pids[w])
                    cpu[w] += (a - b) if a is not None and b is not None else float("nan")
        entry_bytes = {name: _last_entry_bytes(redis_servers[key].url)
                       for name, key in (("raw", "logged"), ("jpeg", "jpeg"))}
    logged, unlogged, no_images, logged_jpeg, unlogged_jpeg = (_summary(runs[n]) for n in plan)
    errors = sum(r["errors"] for r in (single, single_unary, unbatched, logged, unlogged, no_images,
                                       logged_jpeg, unlogged_jpeg))

    def overhead(r: dict, baseline: dict = unlogged) -> float:
        return 100.0 * (baseline["rps"] - r["rps"]) / baseline["rps"]

    def cpu_us(name: str, r: dict) -> float | None:  # None where /proc is missing
        return None if np.isnan(cpu[name]) else 1e6 * cpu[name] / r["requests"]

    return {
        "robots": robots, "seconds_per_run": seconds, "logging_slices": slices,
        "p50_ms": logged["p50_ms"], "p99_ms": logged["p99_ms"],
        "p99_over_p50": logged["p99_ms"] / logged["p50_ms"],
        "unlogged_p50_ms": unlogged["p50_ms"], "unlogged_p99_ms": unlogged["p99_ms"],
        "errors": errors,
        "bare_forward_p50_ms": bare,
        # end to end for one robot on its StreamAct session: what it waits beyond the model
        # (includes the Python client and both gRPC stacks)
        "single_robot_p50_ms": single["p50_ms"],
        "overhead_p50_ms": single["p50_ms"] - bare,
        # the same with one unary Act call per step (a new HTTP/2 stream and auth check each)
        "unary_single_robot_p50_ms": single_unary["p50_ms"],
        "unary_overhead_p50_ms": single_unary["p50_ms"] - bare,
        # inside the server only: receive -> reply, minus the model
        "server_overhead_p50_ms": single["server_p50_ms"] - bare,
        "grpc_floor_p50_ms": single["grpc_floor_p50_ms"],
        "batched_rps": logged["rps"], "unbatched_rps": unbatched["rps"],
        "batching_gain": logged["rps"] / unbatched["rps"],
        "unlogged_rps": unlogged["rps"],
        "logging_overhead_pct": overhead(logged),
        "logging_overhead_no_images_pct": overhead(no_images),
        "logging_overhead_jpeg_pct": overhead(logged_jpeg, unlogged_jpeg),
        "jpeg_rps": logged_jpeg["rps"], "unlogged_jpeg_rps": unlogged_jpeg["rps"],
        # one logged step record in the stream (msgpack): raw-frame robots vs JPEG robots
        "stream_entry_bytes_raw": entry_bytes["raw"], "stream_entry_bytes_jpeg": entry_bytes["jpeg"],
        # the policy server process's own CPU per served step (the rest is redis-server's)
        "server_cpu_us_per_step_logged": cpu_us("logged", logged),
        "server_cpu_us_per_step_unlogged": cpu_us("unlogged", unlogged),
        "redis_cpu_us_per_step_logged": cpu_us("redis", logged),
        # what shares the machine: the load generator, the servers and redis-server all run here
        "setup": {"cpus": os.cpu_count(), "image_size": image_size, "robot_transport": "StreamAct",
                  "redis": "embedded redis-server per logged server, AOF everysec, same host"},
    }
