"""The serving engine: micro-batches concurrent robots into one base + one residual forward.

Requests wait in an asyncio queue; the batcher takes the first, then whatever else arrives within
``max_wait_ms`` (up to ``max_batch``), and runs the forward on one worker thread so the event loop
keeps accepting requests meanwhile. The residual is read once per batch from ``self.slot``; a hot
swap replaces that reference between batches, so no batch ever mixes versions or sees a
half-loaded model.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from services.policy.safety import SafetyConfig, apply_safety
from services.policy.weights import ResidualSlot
from w2a_models.base_policy import BasePolicy, ObservationBatch


@dataclass(frozen=True)
class BatchConfig:
    max_batch: int = 16
    max_wait_ms: float = 2.0
    # A lone request runs its forward on the event loop when forwards take at most this long: a
    # request arriving meanwhile waits one such forward instead of every request paying two
    # thread hand-offs.
    inline_forward_ms: float = 2.0


@dataclass
class StepInput:
    images: dict[str, np.ndarray]  # camera -> uint8 [H, W, 3]
    state: np.ndarray  # float32 [S]
    instruction: str
    base_only: bool = False
    enqueued_at: float = field(default_factory=time.perf_counter)
    # camera -> (encoding, bytes) of images the robot sent compressed: logged as they came
    sent: dict[str, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class StepOutput:
    final: np.ndarray  # [M, A]
    base: np.ndarray
    residual: np.ndarray
    version: int
    fallback: bool
    fallback_reason: str
    queue_ms: float
    base_ms: float
    residual_ms: float
    batch_size: int
    features: np.ndarray | None = None  # the base's observation features (the residual's input)
    server_ms: float = 0.0  # request received -> answer ready (PolicyService.act fills it in)


class EngineStopped(RuntimeError):
    pass


class PolicyEngine:
    def __init__(self, base: BasePolicy, safety: SafetyConfig, batching: BatchConfig = BatchConfig(),
                 slot: ResidualSlot = ResidualSlot(0, None)) -> None:
        self.base = base
        self.safety = safety
        self.batching = batching
        self.slot = slot
        self.stats = {"batches": 0, "steps": 0, "fallbacks": 0}
        self.on_batch = None  # optional callback(batch_size, fallbacks) for metrics
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-forward")
        self._running = False
        self._busy = False  # did requests overlap lately? only then is waiting for a batch worth it
        self._forward_ms = float("inf")  # recent batch-of-one forward time (EMA); unknown at first
        self._base_is_remote = bool(getattr(base, "remote", False))  # network calls: never inline

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._running = True
        self._task = asyncio.create_task(self._batch_loop(), name="policy-batcher")

    async def stop(self) -> None:
        """Finish everything already queued, then stop the batcher."""
        self._running = False
        if self._queue is not None:
            await self._queue.put(None)  # wakes the batcher; it drains the rest first
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def swap(self, slot: ResidualSlot) -> None:
        self.slot = slot  # one reference assignment: atomic with respect to batches

    # -- serving -------------------------------------------------------------------------------

    async def act(self, step: StepInput) -> StepOutput:
        if not self._running or self._queue is None:
            raise EngineStopped("policy engine is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((step, future))
        return await future

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        stopping = False
        while not (stopping and queue.empty()):
            item = await queue.get()
            if item is None:
                stopping = True
                continue
            batch = [item]
            # A lone robot should not pay the batching window: wait for company only when
            # requests have been overlapping (a multi-item batch, or arrivals during a forward).
            wait_s = self.batching.max_wait_ms / 1000.0 if self._busy else 0.0
            deadline = loop.time() + wait_s
            while len(batch) < self.batching.max_batch:
                timeout = deadline - loop.time()
                try:
                    nxt = queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(queue.get(), timeout)
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            steps = [s for s, _ in batch]
            try:
                if (self._busy or len(batch) > 1 or self._base_is_remote
                        or self._forward_ms > self.batching.inline_forward_ms):
                    # the forward runs off the loop, which meanwhile reads and queues new requests
                    outputs = await loop.run_in_executor(self._executor, self.forward, steps)
                else:
                    # a lone robot and a fast model: skip the two thread hand-offs; a request
                    # arriving now waits at most one short forward (slow or remote bases, whose
                    # calls can take a deadline's worth, never block the loop)
                    outputs = self.forward(steps)
                if len(batch) == 1:
                    # the forward itself, not the hand-offs around it (an executor round trip
                    # would otherwise keep a fast model off the loop for good)
                    took = outputs[0].base_ms + outputs[0].residual_ms
                    first = self._forward_ms == float("inf")
                    self._forward_ms = took if first else 0.8 * self._forward_ms + 0.2 * took
            except Exception as exc:  # noqa: BLE001 - the base or residual blew up: fail this batch, keep serving
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._busy = len(batch) > 1 or not queue.empty()
            for (_, fut), out in zip(batch, outputs):
                if not fut.done():
                    fut.set_result(out)

    def forward(self, steps: list[StepInput]) -> list[StepOutput]:
        """One base forward and one residual forward for a batch (runs on the worker thread)."""
        start = time.perf_counter()
        slot = self.slot  # read once: the whole batch uses one version
        cameras = [c.name for c in self.base.spec.cameras]
        obs = ObservationBatch(
            images={c: np.stack([s.images[c] for s in steps]) for c in cameras},
            state=np.stack([s.state for s in steps]).astype(np.float32),
            instructions=[s.instruction for s in steps],
        )
        base_out = self.base.predict(obs)
        t_base = time.perf_counter()
        residual = np.zeros_like(base_out.actions)
        if slot.module is not None:
            with torch.no_grad():
                residual = slot.module(torch.from_numpy(base_out.features),
                                       torch.from_numpy(base_out.actions)).numpy()
        base_only = np.array([s.base_only for s in steps])
        residual[base_only] = 0.0
        t_res = time.perf_counter()
        safe = apply_safety(base_out.actions, residual, self.safety)
        n = len(steps)
        self.stats["batches"] += 1
        self.stats["steps"] += n
        self.stats["fallbacks"] += int(safe.fallback.sum())
        if self.on_batch is not None:
            self.on_batch(n, int(safe.fallback.sum()))
        base_ms, res_ms = (t_base - start) * 1e3, (t_res - t_base) * 1e3
        return [
            StepOutput(
                final=safe.final[i], base=safe.base[i], residual=safe.residual[i],
                features=base_out.features[i],
                version=0 if steps[i].base_only else slot.version,
                fallback=bool(safe.fallback[i]), fallback_reason=safe.reasons[i],
                queue_ms=(start - steps[i].enqueued_at) * 1e3, base_ms=base_ms,
                residual_ms=res_ms, batch_size=n,
            )
            for i in range(n)
        ]
