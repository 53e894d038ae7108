"""Stage 2: the long-running, reward-free residual trainer (``w2a train-residual``).

One iteration: read rollout entries (``RolloutStream``) → decode logged chunks → once a batch is
full, ask the frozen world model for each chunk's target latents → one residual update
(``stage2_loss``; ``steps_per_batch`` optimizer steps, each on the batch plus ``replay_batch``
earlier chunks from ``services.trainer.replay``) → every ``checkpoint_every`` updates write the
checkpoint *with the ids it used* → only then XACK them → every ``push_every`` updates offer the
weights to the pusher.

Crash safety: entries are acked only after the checkpoint that contains their update, so a crash
re-delivers them; the checkpoint carries an ``AppliedLedger`` of the ids it applied, so entries
re-delivered after a crash *between* checkpoint and ack are acked without training twice.
Optimizer state is checkpointed too, so a resumed run continues the same optimisation (the replay
buffer is not: it refills from new entries, see ``services.trainer.replay``).

Data-parallel under ``torchrun`` (``ranks``, issue 21): every rank is its own consumer in the
group (``<consumer>-r<rank>``) and reads, decodes and fetches targets for its own entries; the
ranks move in lockstep — each loop they agree whether to stop, whether a dependency failed, and
how many chunks each trains on (a rank may have none: its gradient is then zero). Each rank's
loss is weighted by its share of the update's rows and the gradients are summed over ranks, so
every rank takes the same optimizer step and the weights stay bit-identical (checked per update,
``ranks_in_sync`` in the history). In-batch negatives come from the rank's own chunks, as with
independent trainers. Rank 0 alone restores (and broadcasts) the checkpoint, writes it with the
ids *every* rank applied, acks them all after the commit, pushes and serves metrics; a crash of
any rank makes torchrun restart the group, and each rank re-reads its own pending entries by its
stable name. XAUTOCLAIM is off between ranks (a rank would take entries another still holds).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import redis
import torch

from services.common.distributed import Ranks
from services.common.rollout_record import Record, StepRecord, decode_record
from services.trainer.checkpointing import TrainerCheckpoint
from services.trainer.metrics import TrainerMetrics
from services.trainer.pusher import NonFiniteWeights, WeightPusher
from services.trainer.replay import ReplayBuffer
from services.trainer.rollout_stream import AppliedLedger, Entry, RolloutStream
from services.trainer.stage2 import (
    ORACLE_MODES,
    Stage2Config,
    StepSample,
    TrainerMode,
    decode_step,
    expert_residual_loss,
    freeze,
    stage2_loss,
)
from services.trainer.targets import TargetError, TargetFetcher
from w2a_models.adapters import Stage1Adapters
from w2a_models.checkpoints import CheckpointError
from w2a_models.residual import ResidualConfig, ResidualPolicy

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0  # how often the lag gauge is refreshed


@dataclass(frozen=True)
class ResidualTrainerConfig:
    camera: str = ""  # the logged camera the world model sees ("" = the record's only one)
    batch_size: int = 32
    checkpoint_every: int = 1
    push_every: int = 10
    max_wait_s: float = 5.0  # train on a partial batch (>= 2 chunks) when no full one comes
    ledger_capacity: int = 20_000
    residual_hidden: int = 256
    residual_layers: int = 2
    residual_scale: float = 0.2
    residual_dims: tuple[int, ...] | None = None  # ResidualConfig.dims (None = every action dimension)
    loss: Stage2Config = field(default_factory=Stage2Config)
    seed: int = 0
    mode: TrainerMode = "world_model"  # the two others are upper bounds (simulator oracle)
    # Optimizer steps on each batch (its targets fetched once). On-policy data is scarce and a
    # residual starts at zero: one step per batch barely moves it in a short run.
    steps_per_batch: int = 1
    # On-policy aggregation (services.trainer.replay): every step also trains on this many
    # earlier chunks, drawn from the last ``replay_capacity`` with the targets they had.
    replay_batch: int = 0
    replay_capacity: int = 20_000
    # Ask the world model for the next full batch's targets while the current update runs
    # (targets only: nothing is acked or applied early, so delivery guarantees are unchanged).
    pipeline: bool = True


def _weighted_stats(per_rank: list[tuple[list[str], dict]]) -> dict[str, float]:
    """The loss terms of one update over every rank, each rank weighted by its chunks."""
    rows = [(len(ids), stats) for ids, stats in per_rank if ids and stats]
    if len(rows) == 1:
        return dict(rows[0][1])
    total = sum(n for n, _ in rows)
    keys = [k for k, v in rows[0][1].items() if isinstance(v, float | int)] if rows else []
    return {k: sum(n * float(stats[k]) for n, stats in rows) / total for k in keys}


class ResidualTrainer:
    def __init__(self, stream: RolloutStream, targets, adapters: Stage1Adapters, out: str | Path,
                 config: ResidualTrainerConfig = ResidualTrainerConfig(),
                 pusher: WeightPusher | None = None, metrics: TrainerMetrics | None = None,
                 ranks: Ranks = Ranks()) -> None:
        # metrics are always kept (on the trainer's own registry); only serving them is optional
        self.stream, self.targets, self.pusher = stream, targets, pusher
        self.ranks = ranks
        self.metrics = metrics or TrainerMetrics()
        self.adapters = freeze(adapters)
        self.config = config
        self.out = Path(out)
        self.residual: ResidualPolicy | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.updates = 0
        self.checkpointed_updates = 0
        self.ledger = AppliedLedger(config.ledger_capacity)
        self.buffer: list[StepSample] = []
        self.replay = ReplayBuffer(config.replay_capacity if config.replay_batch else 0, config.seed + ranks.rank)
        self.fetcher = TargetFetcher(targets, adapters.config.token_dim)
        self._held: set[str] = set()  # ids in the buffer (XAUTOCLAIM may hand them to us again)
        self._oldest = 0.0
        self._applied: list[str] = []  # ids in updates not yet checkpointed
        self._to_ack: list[str] = []  # ids checkpointed but not yet acked (Redis away)
        self._episode_version: OrderedDict[str, int] = OrderedDict()
        self.last_stats: dict[str, float] = {}
        self.store = TrainerCheckpoint(out, config.ledger_capacity)
        self._offered_update = 0
        self._lag_measured = 0.0
        torch.manual_seed(config.seed)
        self._restore()
        self._offered_update = self.updates

    # -- model state -----------------------------------------------------------------------------

    def _build(self, residual_config: ResidualConfig) -> None:
        self.residual = ResidualPolicy(residual_config)
        self.optimizer = torch.optim.AdamW(self.residual.parameters(), lr=self.config.loss.lr,
                                           weight_decay=0.0)

    def _residual_config_for(self, sample: StepSample) -> ResidualConfig:
        cfg = self.config
        return ResidualConfig(obs_dim=int(sample.features.shape[0]), action_dim=sample.base.shape[1],
                              chunk_size=sample.base.shape[0], hidden=cfg.residual_hidden,
                              num_layers=cfg.residual_layers, scale=cfg.residual_scale, dims=cfg.residual_dims)

    def _fits(self, sample: StepSample) -> str | None:
        """None if the sample fits the residual and adapters, else why not."""
        acfg = self.adapters.config
        if sample.base.shape != (acfg.chunk_size, acfg.action_dim):
            return (f"action chunk {sample.base.shape} does not fit the Stage 1 adapters "
                    f"({acfg.chunk_size}, {acfg.action_dim})")
        if self.residual is not None:
            rcfg = self.residual.config
            if sample.features.shape[0] != rcfg.obs_dim:
                return f"{sample.features.shape[0]} base features, the residual reads {rcfg.obs_dim}"
        return None

    @property
    def checkpoint_dir(self) -> Path:
        return self.store.dir

    def _restore(self) -> None:
        # rank 0 reads the checkpoint (and trims the history); the others get it over the wire,
        # so ranks on other nodes need no shared volume
        restored = self.ranks.broadcast(self.store.restore() if self.ranks.main else None)
        if restored is None:
            return
        self.residual = restored.residual
        self.optimizer = torch.optim.AdamW(self.residual.parameters(), lr=self.config.loss.lr, weight_decay=0.0)
        try:
            self.optimizer.load_state_dict(restored.optimizer_state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.checkpoint_dir}: optimizer state does not restore ({exc})") from exc
        self.updates = self.checkpointed_updates = restored.updates
        self.ledger = restored.ledger
        log.info("resumed Stage 2 at update %d (%d applied ids remembered)", self.updates,
                 len(self.ledger.ids))

    def residual_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.residual.state_dict()) if self.residual is not None else {}

    def checkpoint(self) -> None:
        """Persist model + optimizer + applied ids (one atomic commit), then ack those ids."""
        if self.residual is None or self.updates == self.checkpointed_updates:
            return
        self.ledger.add(self._applied)
        failure: Exception | None = None
        if self.ranks.main:
            try:  # only ids not yet acked can come back after a crash: all the ledger must keep
                self.store.commit(self.residual, self.optimizer, self.updates, self._to_ack + self._applied,
                                  self.config.loss)
            except OSError as exc:
                failure = exc
        if not self.ranks.all(failure is None):  # nobody acks what rank 0 could not commit
            raise failure or CheckpointError("rank 0 could not write the checkpoint")
        self.checkpointed_updates = self.updates
        if self.ranks.main:  # rank 0 acks every rank's ids (XACK does not ask who read them)
            self._to_ack.extend(self._applied)
        self._applied = []
        self.metrics.checkpoints.inc()
        self._ack_checkpointed()

    def _ack_checkpointed(self) -> None:
        if not self._to_ack:
            return
        try:
            self.stream.ack(self._to_ack)
        except redis.RedisError as exc:  # they are in the ledger: re-delivery will not re-apply
            log.warning("ack of %d entries failed (%s); will retry", len(self._to_ack), exc)
            return
        self.metrics.acked.inc(len(self._to_ack))
        self._to_ack = []

    # -- consuming -------------------------------------------------------------------------------

    def _count(self, kind: str, n: int = 1) -> None:
        if n:
            self.metrics.consumed.labels(kind).inc(n)

    def _note_episode(self, record: Record) -> None:
        key = record.episode
        if isinstance(record, StepRecord):
            self._episode_version[key] = record.policy_version
            self._episode_version.move_to_end(key)
            while len(self._episode_version) > 10_000:
                self._episode_version.popitem(last=False)
        else:
            version = self._episode_version.pop(key, 0)
            self.metrics.episodes.labels(str(version), str(record.success).lower()).inc()

    def ingest(self, entries: list[Entry]) -> None:
        """Sort read entries: already applied → ack; not trainable → ack; samples → buffer."""
        done: list[str] = []
        for entry in entries:
            if entry.id in self.ledger:
                done.append(entry.id)
                self._count("already_applied")
                continue
            if entry.id in self._held or entry.id in self._applied or entry.id in self._to_ack:
                continue  # our own entry, handed back by XAUTOCLAIM while we still hold it
            try:
                record = decode_record(entry.record, oracle=self.config.mode in ORACLE_MODES)
                sample = decode_step(entry.id, record, self.config.camera, self.config.mode)
            except (KeyError, TypeError, ValueError) as exc:  # RecordError is a ValueError
                self.stream.dead_letter(entry, f"malformed record: {type(exc).__name__}: {exc}")
                self._count("malformed")
                continue
            self._note_episode(record)
            if sample is None:  # episode markers, base-only and fallback steps: nothing to learn
                done.append(entry.id)
                self._count(record.kind)
                continue
            problem = self._fits(sample)
            if problem:
                self.stream.dead_letter(entry, problem)
                self._count("misfit")
                continue
            if not self.buffer:
                self._oldest = time.monotonic()
            self.buffer.append(sample)
            self._held.add(entry.id)
            self._count("step")
        if done:
            self.stream.ack(done)
        self.metrics.dead_lettered.set(self.stream.dead_lettered)

    def ready_batch(self, idle: bool) -> int:
        """How many buffered chunks to train on now (0 = keep collecting)."""
        if len(self.buffer) >= self.config.batch_size:
            return self.config.batch_size
        waited = time.monotonic() - self._oldest
        if idle and len(self.buffer) >= 2 and waited >= self.config.max_wait_s:
            return len(self.buffer)
        return 0

    # -- one update ------------------------------------------------------------------------------

    def update(self, n: int) -> dict[str, float]:
        """Train on the first ``n`` buffered chunks. Raises TargetError (buffer kept) on WM failure.

        Data-parallel, every rank calls this together (``n`` may be 0 on some, not on all)."""
        samples = self.buffer[:n]
        expert_mode = self.config.mode == "expert_corrected"
        # targets before touching state: a failure keeps the buffer (on every rank)
        failure: TargetError | None = None
        targets = None
        if samples and expert_mode:
            targets = np.stack([s.expert for s in samples])
        elif samples:
            try:
                targets = self.fetcher.latents(samples)
            except TargetError as exc:
                failure = exc
            nxt = self.buffer[n:n + self.config.batch_size]
            if failure is None and self.config.pipeline and len(nxt) == self.config.batch_size:
                self.fetcher.prefetch(nxt)  # the next batch's targets arrive while this update runs
        if not self.ranks.all(failure is None):
            raise failure or TargetError("another rank's world-model call failed")
        if self.residual is None:
            config = next(c for c in self.ranks.gather(self._residual_config_for(samples[0]) if samples else None)
                          if c is not None)
            self._build(config)
            self.ranks.broadcast_parameters(self.residual)
        new = (np.stack([s.features for s in samples]), np.stack([s.base for s in samples]), targets) if samples \
            else None
        replayed = min(len(self.replay), self.config.replay_batch) if samples else 0  # rows per step from the past
        # this rank's share of every step's rows: its loss is weighted by it, gradients are summed
        share = (n + replayed) / max(self.ranks.total(n + replayed), 1)
        self.residual.train()
        result, stats = "skipped_nonfinite", {}
        for _ in range(self.config.steps_per_batch):
            if new is None:
                loss = self._zero_loss()
            else:  # a fresh draw of earlier chunks for every step
                mixed = self.replay.mixed(new, self.config.replay_batch)
                features, base, target = (torch.from_numpy(a) for a in mixed)
                if expert_mode:
                    loss, stats = expert_residual_loss(self.residual, features, base, target)
                else:
                    loss, stats = stage2_loss(self.adapters, self.residual, features, base, target,
                                              self.config.loss)
            if not self._apply(loss, share):
                result = "skipped_nonfinite"
                break
            result = "applied"
        self.residual.eval()
        if new is not None:
            self.replay.add(*new)
        # the chunks are consumed either way: a non-finite batch would only fail again
        self.buffer = self.buffer[n:]
        for s in samples:
            self._held.discard(s.entry_id)
        # one gather per update: every rank's ids, loss terms, replayed rows and policy versions
        per_rank = self.ranks.gather(([s.entry_id for s in samples], stats, replayed,
                                      {s.policy_version for s in samples}))
        ids = [i for rank_ids, *_ in per_rank for i in rank_ids]
        self._applied.extend(ids)
        self._oldest = time.monotonic()
        self.updates += 1
        stats = {**_weighted_stats([(rank_ids, rank_stats) for rank_ids, rank_stats, *_ in per_rank]),
                 "update": self.updates, "chunks": len(ids), "replayed": sum(r[2] for r in per_rank),
                 "result": result}
        if self.ranks.distributed:
            stats["chunks_per_rank"] = [len(rank_ids) for rank_ids, *_ in per_rank]
            stats["ranks_in_sync"] = self.ranks.same_parameters(self.residual)
            if not stats["ranks_in_sync"]:
                log.error("update %d: the ranks' residual weights differ", self.updates)
        self.last_stats = stats
        versions = set().union(*(r[3] for r in per_rank))
        self._record({**stats, "ids": ids, "policy_versions": sorted(versions)})
        if self.updates % self.config.checkpoint_every == 0:
            self.checkpoint()
        if self.pusher is not None and self.updates % self.config.push_every == 0:
            self.push()
        return stats

    def _zero_loss(self) -> torch.Tensor:
        """A rank without rows this update: a zero that reaches every parameter (zero gradient)."""
        return sum(p.sum() for p in self.residual.parameters()) * 0.0

    def _apply(self, loss: torch.Tensor, share: float = 1.0) -> bool:
        """One optimizer step; False (weights untouched) if the loss, gradient or result is not finite.

        Data-parallel: ``share`` weighs this rank's loss and the gradients are summed over ranks,
        so every rank decides and steps alike."""
        if not self.ranks.all(bool(torch.isfinite(loss))):
            return False
        self.optimizer.zero_grad(set_to_none=True)
        (loss * share).backward()  # share = 1 in one process: the same gradient, bit for bit
        self.ranks.sum_gradients(self.residual.parameters())
        norm = torch.nn.utils.clip_grad_norm_(self.residual.parameters(), 1.0)
        if not torch.isfinite(norm):
            return False
        before = {k: v.clone() for k, v in self.residual.state_dict().items()}
        self.optimizer.step()
        if all(torch.isfinite(v).all() for v in self.residual.state_dict().values()):
            return True
        self.residual.load_state_dict(before)  # never keep (let alone push) a non-finite residual
        return False

    def push(self) -> None:
        if self.residual is None or self.pusher is None:
            return
        self._offered_update = self.updates
        try:
            self.pusher.offer(self.residual_tensors(), asdict(self.residual.config), self.updates)
        except NonFiniteWeights as exc:
            log.error("not pushing: %s", exc)
            self.metrics.pushes.labels("refused_nonfinite").inc()

    def _record(self, stats: dict) -> None:
        self.metrics.updates.labels(stats["result"]).inc()
        for term in ("loss", "contrastive", "residual_l2"):
            if term in stats:
                self.metrics.loss.labels(term).set(stats[term])
        if self.ranks.main:  # rank 0's history holds every rank's ids
            self.store.history.record(stats)

    # -- the loop --------------------------------------------------------------------------------

    def step(self, block_ms: int | None = None) -> int:
        """Read once, train on whatever batches are ready; returns entries read.

        Data-parallel, a Redis failure on one rank is raised on every rank (they back off alike)."""
        entries: list[Entry] = []
        failure: redis.RedisError | None = None
        try:
            self._ack_checkpointed()
            entries = self.stream.read(block_ms=block_ms)
            self.ingest(entries)
        except redis.RedisError as exc:
            failure = exc
        if self.ranks.any(failure is not None):
            raise failure or redis.ConnectionError("another rank lost Redis")
        while self.ranks.total(n := self.ready_batch(idle=not entries)) > 0:
            self.update(n)
        if time.monotonic() - self._lag_measured > LAG_INTERVAL_S:
            self._lag_measured = time.monotonic()  # a Redis query per loop would be waste
            self.metrics.lag.set(self.stream.lag())
        return len(entries)

    def run(self, stop, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
            max_updates: int | None = None) -> None:
        """Consume until ``stop`` (a threading.Event) is set; dependencies failing → back off.

        Data-parallel, the ranks stop together as soon as one is asked to."""
        self.stream.ensure_group()
        delay = backoff_s
        while not self.ranks.any(stop.is_set() or (max_updates is not None and self.updates >= max_updates)):
            try:
                self.step()
                delay = backoff_s
                continue
            except TargetError as exc:
                dependency, message = "world_model", str(exc)
            except redis.RedisError as exc:
                dependency, message = "redis", f"{type(exc).__name__}: {exc}"
            log.warning("%s unavailable (%s); retrying in %.1fs", dependency, message, delay)
            self.metrics.backoffs.labels(dependency).inc()
            stop.wait(delay)
            delay = min(delay * 2, max_backoff_s)
        self.close()

    def close(self) -> None:
        """Checkpoint what was applied (then ack it) and hand the last weights to the pusher.

        Buffered chunks not yet trained on stay unacked: Redis re-delivers them to the next run.
        """
        self.fetcher.close()  # targets of an update that will not run are dropped
        try:
            self.checkpoint()
        except redis.RedisError as exc:
            log.warning("final ack failed (%s); the ledger covers the re-delivery", exc)
        if self._offered_update != self.updates:
            self.push()
