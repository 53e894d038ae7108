import asyncio

import numpy as np
import torch

from services.policy.engine import BatchConfig, PolicyEngine, StepInput
from services.policy.safety import SafetyConfig, apply_safety
from services.policy.weights import ResidualSlot
from w2a_models.base_policy import BaseOutput, CameraSpec, PolicySpec

SAFETY = SafetyConfig((-1.0,) * 2, (1.0,) * 2, residual_max_norm=0.5)


def test_bounds_and_residual_norm_clamp():
    base = np.array([[[0.9, -0.2]]], dtype=np.float32)
    residual = np.array([[[3.0, 4.0]]], dtype=np.float32)  # norm 5 -> scaled to 0.5
    out = apply_safety(base, residual, SAFETY)
    np.testing.assert_allclose(out.residual[0, 0], [0.3, 0.4], atol=1e-6)
    np.testing.assert_allclose(out.final[0, 0], [1.0, 0.2], atol=1e-6)  # 1.2 clipped to 1.0
    assert not out.fallback.any()


def test_non_finite_parts_fall_back():
    base = np.array([[[0.1, 0.2]], [[np.nan, 0.0]]], dtype=np.float32)
    residual = np.array([[[np.inf, 0.0]], [[0.1, 0.1]]], dtype=np.float32)
    out = apply_safety(base, residual, SAFETY)
    assert out.fallback.tolist() == [True, True]
    np.testing.assert_allclose(out.final[0], base[0])  # residual dropped: base action
    np.testing.assert_allclose(out.final[1], 0.0)  # base unusable: hold still
    assert out.reasons == ["residual non-finite", "base action non-finite"]
    assert np.isfinite(out.final).all()


class FakeBase:
    """A base policy for engine logic tests: action = state[:2] repeated, features = state."""

    spec = PolicySpec("fake", action_dim=2, chunk_size=3, state_dim=2,
                      cameras=(CameraSpec("cam", 2, 2),), feature_dim=2)

    def __init__(self):
        self.batch_sizes = []

    def predict(self, batch):
        self.batch_sizes.append(len(batch))
        actions = np.repeat(batch.state[:, None, :], 3, axis=1)
        return BaseOutput(actions.astype(np.float32), batch.state.astype(np.float32))


class NaNResidual(torch.nn.Module):
    def forward(self, features, base):
        return torch.full_like(base, float("nan"))


def _step(x, base_only=False):
    return StepInput({"cam": np.zeros((2, 2, 3), np.uint8)}, np.array([x, x], np.float32), "do it",
                     base_only=base_only)


def test_engine_batches_and_falls_back_on_nan_residual():
    base = FakeBase()

    async def run():
        engine = PolicyEngine(base, SAFETY, BatchConfig(max_batch=8, max_wait_ms=50),
                              ResidualSlot(3, NaNResidual()))
        await engine.start()
        outs = await asyncio.gather(*[engine.act(_step(0.1 * i, base_only=(i == 0))) for i in range(5)])
        await engine.stop()
        return engine, outs

    engine, outs = asyncio.run(run())
    assert base.batch_sizes == [5]  # one forward for all five concurrent requests
    assert outs[0].version == 0 and not outs[0].fallback  # base-only: residual never applied
    for i, out in enumerate(outs[1:], start=1):
        assert out.fallback and out.fallback_reason == "residual non-finite" and out.version == 3
        np.testing.assert_allclose(out.final, np.full((3, 2), 0.1 * i), atol=1e-6)
    assert engine.stats["fallbacks"] == 4


def test_engine_stop_drains_queued_requests():
    base = FakeBase()

    async def run():
        engine = PolicyEngine(base, SAFETY, BatchConfig(max_batch=2, max_wait_ms=0))
        await engine.start()
        tasks = [asyncio.create_task(engine.act(_step(0.0))) for _ in range(6)]
        await asyncio.sleep(0)
        await engine.stop()
        return await asyncio.gather(*tasks)

    assert len(asyncio.run(run())) == 6


def test_sessions_track_episodes_and_crossfade_chunk_boundaries():
    from services.policy.sessions import SessionTable

    table = SessionTable(smooth_steps=2)
    first = np.zeros((4, 2), np.float32)
    np.testing.assert_array_equal(table.apply("r", "e1", first), first)  # no history: unchanged
    second = np.ones((4, 2), np.float32)
    out = table.apply("r", "e1", second)
    np.testing.assert_allclose(out[:, 0], [1 / 3, 2 / 3, 1.0, 1.0], atol=1e-6)
    assert table.get("r").steps_served == 2
    # a new episode starts fresh
    np.testing.assert_array_equal(table.apply("r", "e2", second), second)
    assert table.get("r").steps_served == 1
    table.end("r")
    assert table.get("r") is None
    assert SessionTable(smooth_steps=0).apply("x", "e", second) is second


class ThreadRecordingBase(FakeBase):
    def __init__(self, delay_s=0.0):
        super().__init__()
        self.delay_s = delay_s
        self.threads = []

    def predict(self, batch):
        import threading
        import time

        self.threads.append(threading.get_ident())
        time.sleep(self.delay_s)
        return super().predict(batch)


class RemoteRecordingBase(ThreadRecordingBase):
    remote = True


def _lone_requests(base, n=5):
    """n sequential requests; returns the event loop's thread id."""
    import threading

    async def run():
        engine = PolicyEngine(base, SAFETY, BatchConfig(max_batch=4, max_wait_ms=1.0))
        await engine.start()
        for i in range(n):
            await engine.act(_step(0.1 * i))
        await engine.stop()
        return threading.get_ident()

    return asyncio.run(run())


def test_a_lone_request_to_a_fast_local_base_skips_the_thread_hand_off():
    base = ThreadRecordingBase()
    loop_thread = _lone_requests(base)
    assert base.threads[0] != loop_thread  # forward time unknown yet: off the loop
    assert all(t == loop_thread for t in base.threads[1:])


def test_remote_and_slow_bases_never_run_on_the_event_loop():
    remote = RemoteRecordingBase()
    loop_thread = _lone_requests(remote)
    assert loop_thread not in remote.threads  # a network call could block for a whole deadline
    slow = ThreadRecordingBase(delay_s=0.005)  # 5 ms > the 2 ms inline limit
    loop_thread = _lone_requests(slow)
    assert loop_thread not in slow.threads
