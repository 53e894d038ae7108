"""Benchmarks of the policy server over real gRPC on loopback (``w2a bench …``, JSON output).

Each configuration runs a real ``w2a serve policy`` process; the load generator runs in this
process with one asyncio client per robot, each acting in a closed loop (send, wait, send), as
robot controllers do.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import numpy as np

from services.common.redis_server import EmbeddedRedis, free_port
from services.common.rollout_log import STREAM_FIELD, logged_image_entry, pack_record, unpack_record
from services.common.rollout_record import StepRecord
from services.common.streams import ROLLOUT_STREAM

ROBOT, TRAINER = "bench-robot", "bench-trainer"
INSTRUCTION = "pick up the puck and place it at the goal"


def _tiny_base(image_size: int):
    import torch

    from w2a_models.base_policy.tiny_vla import TinyVLA, TinyVLAConfig, TinyVLANet

    torch.manual_seed(0)
    return TinyVLA(TinyVLANet(TinyVLAConfig(image_size=image_size)))


@contextmanager
def policy_process(base_dir: Path, state_dir: Path, redis_url: str | None, **settings):
    """A real ``w2a serve policy`` process; yields its target address."""
    with policy_server_process(base_dir, state_dir, redis_url, **settings) as (target, _):
        yield target


@contextmanager
def policy_server_process(base_dir: Path, state_dir: Path, redis_url: str | None, **settings):
    port = free_port()
    env = {**os.environ, "W2A_POLICY_PORT": str(port), "W2A_POLICY_METRICS_PORT": "0",
           "W2A_POLICY_BASE_CHECKPOINT": str(base_dir), "W2A_POLICY_STATE_DIR": str(state_dir),
           "W2A_POLICY_ROBOT_TOKENS": f'["{ROBOT}"]', "W2A_POLICY_TRAINER_TOKEN": TRAINER,
           "W2A_POLICY_LOG_ROLLOUTS": "true" if redis_url else "false",
           **({"W2A_POLICY_REDIS_URL": redis_url} if redis_url else {}),
           **{f"W2A_POLICY_{k.upper()}": str(v) for k, v in settings.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "policy"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from w2a_client.client import PolicyClient

        with PolicyClient(f"127.0.0.1:{port}", ROBOT) as probe:
            probe.wait_ready(120)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _observation(size: int):
    rng = np.random.default_rng(0)
    return {"corner": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)}, rng.standard_normal(18)


async def _load(target: str, robots: int, seconds: float, size: int, stream: bool = True,
                encoding: str = "raw") -> dict:
    """``robots`` closed-loop robots for ``seconds``: each holds one ``StreamAct`` session (as
    robot controllers do) or, with ``stream=False``, makes one unary ``Act`` call per step;
    ``encoding``: how they send their camera frame (raw, jpeg, png)."""
    from w2a_client.client import AsyncPolicyClient, act_request

    images, state = _observation(size)
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
    images, state = _observation(size)
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
        base = _tiny_base(image_size)
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


def bench_weights(pushes: int = 10, robots: int = 4, image_size: int = 64, progress=print) -> dict:
    import torch
    from w2a_client.client import PolicyClient

    from w2a_models.checkpoints import pack_tensors
    from w2a_models.residual import ResidualConfig, ResidualPolicy

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="w2a-bench-") as tmp:
        tmp = Path(tmp)
        base = _tiny_base(image_size)
        base.save(tmp / "base")
        spec = base.spec
        images, state = _observation(image_size)
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
