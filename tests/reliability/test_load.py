"""Load: 16 and 64 robots, each on its own StreamAct session, against a real `w2a serve policy`
process; latency, errors (goal 0) and the server's memory growth (goal: flat)."""

import asyncio
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.bench import ROBOT, policy_server_process, tiny_base
from services.common.redis_server import EmbeddedRedis
from tests.reliability.conftest import QUICK
from w2a_client.client import act_request
from w2a_client.proto.w2a.v1 import policy_pb2_grpc as pb_grpc

SECONDS = 6.0 if QUICK else 30.0
RSS_GOAL_MB = 64.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _robots(target: str, robots: int, seconds: float, pid: int) -> dict:
    rng = np.random.default_rng(0)
    images = {"corner": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)}
    state = rng.standard_normal(18).astype(np.float32)
    latencies, errors, rss = [], [0], []
    end = time.perf_counter() + seconds
    metadata = (("authorization", f"Bearer {ROBOT}"),)

    async def robot(i: int) -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            queue: asyncio.Queue = asyncio.Queue()

            async def requests():
                while (item := await queue.get()) is not None:
                    yield item

            call = stub.StreamAct(requests(), metadata=metadata)
            step = 0
            try:
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    await queue.put(act_request(f"load-{i}", images, state, "push the puck",
                                                episode_id=f"e{i}", step=step))
                    await call.read()
                    latencies.append((time.perf_counter() - t0) * 1e3)
                    step += 1
            except grpc.RpcError:
                errors[0] += 1
            finally:
                await queue.put(None)
                call.cancel()

    async def sample_memory():
        while time.perf_counter() < end:
            rss.append((time.perf_counter(), _rss_mb(pid)))
            await asyncio.sleep(0.25)

    await asyncio.gather(sample_memory(), *(robot(i) for i in range(robots)))
    lat = np.asarray(latencies)
    warm = [m for t, m in rss if t > end - seconds * 0.75]  # after warm-up
    return {"robots": robots, "seconds": seconds, "requests": len(lat),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "errors": errors[0], "rss_start_mb": round(warm[0], 1), "rss_end_mb": round(warm[-1], 1),
            "rss_growth_mb": round(warm[-1] - warm[0], 1)}


@pytest.mark.parametrize("robots", [16, 64])
def test_many_robots_on_streams(robots, report):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny_base(64).save(tmp / "base")
        with EmbeddedRedis(tmp / "redis") as rds, \
                policy_server_process(tmp / "base", tmp / "state", rds.url) as (target, pid):
            result = asyncio.run(_robots(target, robots, SECONDS, pid))
    report["load"].append(result)
    assert result["errors"] == 0
    assert result["rss_growth_mb"] < RSS_GOAL_MB, result
