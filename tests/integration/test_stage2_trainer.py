"""The Stage 2 consumer against a real redis-server: update → checkpoint → XACK order,
crash recovery without double-applying, dead letters, WM failures, and never pushing NaN."""

import dataclasses
import json
import threading

import numpy as np
import pytest
import redis
import torch

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import STREAM_FIELD, logged_image_entry, pack_record
from services.common.rollout_record import DEAD_LETTER_STREAM, ROLLOUT_STREAM, EpisodeEnd, StepRecord
from services.trainer.pusher import NonFiniteWeights, WeightPusher
from services.trainer.residual_trainer import ResidualTrainer, ResidualTrainerConfig, TargetError
from services.trainer.rollout_stream import RolloutStream, StreamConfig
from services.trainer.targets import TableTargets
from w2a_models.adapters import AdapterConfig, Stage1Adapters
from w2a_models.checkpoints import load_checkpoint

FEATURES, CHUNK, DIM = 12, 4, 16


@pytest.fixture
def rds(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        yield client
        client.close()


def _step(i, skill="push the puck", chunk=CHUNK, features=FEATURES, **kw):
    rng = np.random.default_rng(i)
    return StepRecord(robot_id="r0", episode_id=f"e{i // 10}", step=i, skill=skill,
                      base=rng.standard_normal((chunk, 4)).astype(np.float32) * 0.3,
                      features=rng.standard_normal(features).astype(np.float32),
                      images={"corner": logged_image_entry(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))},
                      **kw)


def _publish(client, records):
    return [client.xadd(ROLLOUT_STREAM, {STREAM_FIELD: pack_record(r.to_wire())}).decode() for r in records]


def _adapters():
    torch.manual_seed(0)
    return Stage1Adapters(AdapterConfig(token_dim=DIM, action_dim=4, chunk_size=CHUNK))


def _trainer(rds, out, targets=None, **kw):
    stream = RolloutStream(rds, StreamConfig(block_ms=10, claim_idle_ms=60_000))
    stream.ensure_group()
    config = ResidualTrainerConfig(**{"batch_size": 4, "residual_hidden": 32, "max_wait_s": 0.0, **kw})
    return ResidualTrainer(stream, targets or TableTargets(1, DIM), _adapters(), out, config)


def _pending(rds):
    return rds.xpending(ROLLOUT_STREAM, "trainer")["pending"]


def test_entries_are_acked_only_after_the_checkpoint_holding_their_update(rds, tmp_path):
    _publish(rds, [_step(i) for i in range(8)])
    trainer = _trainer(rds, tmp_path / "t", checkpoint_every=2)
    trainer.ingest(trainer.stream.read())
    trainer.update(4)
    assert trainer.updates == 1 and _pending(rds) == 8  # trained, not checkpointed: nothing acked
    assert not (tmp_path / "t" / "checkpoint" / "manifest.json").exists()
    trainer.update(4)
    assert _pending(rds) == 0  # checkpoint written, then acked
    _, manifest = load_checkpoint(tmp_path / "t" / "checkpoint")
    assert manifest.config["updates"] == 2 and len(manifest.config["applied_ids"]) == 8


def test_markers_and_base_only_steps_are_acked_without_training(rds, tmp_path):
    _publish(rds, [EpisodeEnd(robot_id="r0", episode_id="e0", success=True), _step(1, base_only=True)])
    trainer = _trainer(rds, tmp_path / "t")
    trainer.step()
    assert _pending(rds) == 0 and trainer.buffer == [] and trainer.updates == 0


def test_crash_before_checkpoint_redelivers_and_applies_each_entry_once(rds, tmp_path):
    ids = _publish(rds, [_step(i) for i in range(8)])
    first = _trainer(rds, tmp_path / "t", checkpoint_every=2)
    first.ingest(first.stream.read())
    first.update(4)  # trained on 4 entries, then "kill -9": no checkpoint, no ack
    del first
    second = _trainer(rds, tmp_path / "t", checkpoint_every=2)
    assert second.updates == 0  # nothing was checkpointed
    second.step()
    assert second.updates == 2 and _pending(rds) == 0
    _, manifest = load_checkpoint(tmp_path / "t" / "checkpoint")
    assert sorted(manifest.config["applied_ids"]) == sorted(ids)


def test_crash_between_checkpoint_and_ack_does_not_apply_twice(rds, tmp_path):
    ids = _publish(rds, [_step(i) for i in range(4)])
    first = _trainer(rds, tmp_path / "t")
    first._ack_checkpointed = lambda: None  # "kill -9" right after the checkpoint
    first.step()
    assert first.updates == 1 and _pending(rds) == 4
    weights = {k: v.clone() for k, v in first.residual.state_dict().items()}
    del first
    second = _trainer(rds, tmp_path / "t")
    assert second.updates == 1 and set(second.ledger.ids) == set(ids)
    second.step()  # the re-delivered entries are in the ledger: acked, not trained on
    assert second.updates == 1 and _pending(rds) == 0 and second.buffer == []
    for k, v in second.residual.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_resume_restores_optimizer_state(rds, tmp_path):
    _publish(rds, [_step(i) for i in range(4)])
    first = _trainer(rds, tmp_path / "t")
    first.step()
    second = _trainer(rds, tmp_path / "t")
    a, b = first.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)


def test_chunks_that_do_not_fit_go_to_the_dead_letter_stream(rds, tmp_path):
    _publish(rds, [_step(0, chunk=8), _step(1)])
    trainer = _trainer(rds, tmp_path / "t")
    trainer.ingest(trainer.stream.read())
    assert len(trainer.buffer) == 1
    dlq = rds.xrange(DEAD_LETTER_STREAM)
    assert len(dlq) == 1 and b"does not fit" in dlq[0][1][b"reason"]


class FlakyTargets(TableTargets):
    def __init__(self, failures):
        super().__init__(1, DIM)
        self.failures = failures

    def __call__(self, samples):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("world model down")
        return super().__call__(samples)


def test_world_model_failure_keeps_the_batch_and_the_loop_backs_off(rds, tmp_path):
    _publish(rds, [_step(i) for i in range(4)])
    trainer = _trainer(rds, tmp_path / "t", targets=FlakyTargets(2))
    trainer.ingest(trainer.stream.read())
    with pytest.raises(TargetError):
        trainer.update(4)
    assert len(trainer.buffer) == 4 and trainer.updates == 0 and _pending(rds) == 4
    trainer.run(threading.Event(), backoff_s=0.01, max_updates=1)
    assert trainer.updates == 1 and _pending(rds) == 0


def test_wrong_world_model_latent_width_is_a_clear_error(rds, tmp_path):
    _publish(rds, [_step(i) for i in range(4)])
    trainer = _trainer(rds, tmp_path / "t", targets=TableTargets(1, DIM + 1))
    trainer.ingest(trainer.stream.read())
    with pytest.raises(TargetError, match="do not fit the Stage 1 adapters"):
        trainer.update(4)


class RecordingClient:
    def __init__(self):
        self.pushed = []

    def info(self):
        return type("Info", (), {"residual_version": 3})()

    def push_residual(self, blob, manifest, timeout):
        self.pushed.append(manifest)
        return type("Result", (), {"version": int(manifest.version)})()


def test_nan_weights_are_never_pushed(rds, tmp_path):
    _publish(rds, [_step(i) for i in range(4)])
    client = RecordingClient()
    pusher = WeightPusher(client)
    trainer = _trainer(rds, tmp_path / "t", push_every=1)
    trainer.pusher = pusher
    trainer.step()
    assert pusher.flush(10) and [m.version for m in client.pushed] == ["4"]
    assert client.pushed[0].parent_version == "3"
    with torch.no_grad():
        trainer.residual.head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeights):
        pusher.offer(trainer.residual_tensors(), {}, 2)
    trainer.push()  # logged and counted, not raised, not sent
    assert pusher.flush(10) and len(client.pushed) == 1
    pusher.close()


def test_history_lists_exactly_the_checkpointed_updates_and_their_ids(rds, tmp_path):
    ids = _publish(rds, [_step(i) for i in range(12)])
    first = _trainer(rds, tmp_path / "t", checkpoint_every=2)
    first.ingest(first.stream.read())
    first.update(4)
    first.update(4)  # checkpoint: 2 updates committed
    first.update(4)  # trained, not checkpointed, then "kill -9"
    del first
    second = _trainer(rds, tmp_path / "t", checkpoint_every=2)
    second.step()
    second.close()
    lines = [json.loads(x) for x in (tmp_path / "t" / "stage2_history.jsonl").read_text().splitlines()]
    applied = [i for line in lines for i in line["ids"]]
    assert sorted(applied) == sorted(ids)  # every entry once, the lost update's replay included
    assert [x["update"] for x in lines] == [1, 2, 3]


def test_expert_corrected_mode_learns_the_logged_correction_without_the_world_model(rds, tmp_path):
    """Upper-bound mode: the target is the oracle's a* - clip(a_base); no WM call, same delivery."""
    from services.trainer.stage2 import Stage2Config

    class NoWorldModel:
        def __call__(self, samples):
            raise AssertionError("expert_corrected mode must not ask the world model")

    records = []
    for i in range(40):
        record = _step(i)
        expert = np.clip(record.base, -1, 1) + 0.5  # the teacher always asks for +0.5
        records.append(dataclasses.replace(record, expert_actions=expert.astype(np.float32)))
    _publish(rds, [*records, _step(99)])  # the last has no oracle: skipped in this mode, acked
    trainer = _trainer(rds, tmp_path / "t", targets=NoWorldModel(), mode="expert_corrected",
                       residual_scale=1.0, loss=Stage2Config(lr=1e-2))
    trainer.ingest(trainer.stream.read())
    assert len(trainer.buffer) == 40
    losses = [trainer.update(4)["loss"] for _ in range(10)]
    assert _pending(rds) == 0  # checkpointed, then acked, as in World2Act mode
    assert losses[-1] < 0.5 * losses[0]
    features = torch.from_numpy(np.stack([r.features for r in records]))
    base = torch.from_numpy(np.stack([r.base for r in records]))
    with torch.no_grad():
        assert float(trainer.residual(features, base).mean()) > 0.2  # from 0 toward +0.5



def test_residual_dims_keep_the_other_action_dimensions_at_the_base_through_a_restart(rds, tmp_path):
    """ResidualConfig.dims from the trainer's config: a teacher asking +0.5 everywhere moves only
    the allowed dimensions, and the restored checkpoint keeps the mask."""
    from services.trainer.stage2 import Stage2Config

    records = [dataclasses.replace(r, expert_actions=(np.clip(r.base, -1, 1) + 0.5).astype(np.float32))
               for r in (_step(i) for i in range(16))]
    _publish(rds, records)
    kw = dict(targets=None, mode="expert_corrected", residual_scale=1.0, residual_dims=(0, 2),
              loss=Stage2Config(lr=1e-2))
    trainer = _trainer(rds, tmp_path / "t", **kw)
    trainer.ingest(trainer.stream.read())
    for _ in range(5):
        trainer.update(4)
    features = torch.from_numpy(np.stack([r.features for r in records]))
    base = torch.from_numpy(np.stack([r.base for r in records]))
    restored = _trainer(rds, tmp_path / "t", **kw).residual
    for residual in (trainer.residual, restored):
        with torch.no_grad():
            out = residual(features, base)
        assert residual.config.dims == (0, 2)
        assert float(out[..., [0, 2]].mean()) > 0.1 and float(out[..., [1, 3]].abs().max()) == 0.0

def test_replay_keeps_training_on_earlier_chunks(rds, tmp_path):
    """On-policy aggregation: chunks of the first batch still shape the residual after many
    later updates on other chunks; without replay they are forgotten."""
    from services.trainer.stage2 import Stage2Config

    def oracle(record, shift):
        return dataclasses.replace(record, expert_actions=(np.clip(record.base, -1, 1) + shift).astype(np.float32))

    first = [oracle(_step(i), +0.5) for i in range(4)]  # the first batch asks for +0.5
    later = [oracle(_step(100 + i), -0.5) for i in range(40)]  # everything after for -0.5
    errors = {}
    for replay_batch in (0, 8):
        stream = f"{ROLLOUT_STREAM}:{replay_batch}"
        for r in first + later:
            rds.xadd(stream, {STREAM_FIELD: pack_record(r.to_wire())})
        rolls = RolloutStream(rds, StreamConfig(stream=stream, block_ms=10, claim_idle_ms=60_000))
        rolls.ensure_group()
        trainer = ResidualTrainer(rolls, TableTargets(1, DIM), _adapters(), tmp_path / f"t{replay_batch}",
                                  ResidualTrainerConfig(batch_size=4, residual_hidden=32, max_wait_s=0.0,
                                                        mode="expert_corrected", residual_scale=1.0,
                                                        steps_per_batch=5, replay_batch=replay_batch,
                                                        loss=Stage2Config(lr=1e-2)))
        trainer.ingest(rolls.read(count=100))
        stats = [trainer.update(4) for _ in range(11)]
        assert stats[0]["replayed"] == 0 and stats[-1]["replayed"] == min(replay_batch, 40)
        features = torch.from_numpy(np.stack([r.features for r in first]))
        base = torch.from_numpy(np.stack([r.base for r in first]))
        with torch.no_grad():
            errors[replay_batch] = float((trainer.residual(features, base) - 0.5).abs().mean())
    assert errors[8] < 0.5 * errors[0], errors


class RecordingTargets(TableTargets):
    """Targets that note which entries each call was for and on which thread it ran."""

    def __init__(self, fail_call=None):
        super().__init__(1, DIM)
        self.calls: list[tuple[tuple[str, ...], str]] = []
        self.fail_call = fail_call

    def __call__(self, samples):
        self.calls.append((tuple(s.entry_id for s in samples), threading.current_thread().name))
        if len(self.calls) == self.fail_call:
            raise ConnectionError("world model down")
        return super().__call__(samples)


def test_pipeline_fetches_the_next_batch_targets_during_the_update_and_uses_them_once(rds, tmp_path):
    ids = _publish(rds, [_step(i) for i in range(12)])
    targets = RecordingTargets()
    trainer = _trainer(rds, tmp_path / "t", targets=targets)
    trainer.ingest(trainer.stream.read())
    for _ in range(3):
        trainer.update(4)
    # one call per batch, in order; the second and third were prefetched off the main thread
    assert [c[0] for c in targets.calls] == [tuple(ids[0:4]), tuple(ids[4:8]), tuple(ids[8:12])]
    assert targets.calls[0][1] == threading.main_thread().name
    assert all(name.startswith("stage2-prefetch") for _, name in targets.calls[1:])
    assert _pending(rds) == 0  # delivery unchanged: all checkpointed and acked
    trainer.close()


def test_a_failed_prefetch_keeps_the_batch_and_is_fetched_again(rds, tmp_path):
    _publish(rds, [_step(i) for i in range(8)])
    targets = RecordingTargets(fail_call=2)  # the prefetch of the second batch fails
    trainer = _trainer(rds, tmp_path / "t", targets=targets)
    trainer.ingest(trainer.stream.read())
    trainer.update(4)
    with pytest.raises(TargetError, match="world model down"):
        trainer.update(4)
    assert len(trainer.buffer) == 4 and trainer.updates == 1 and _pending(rds) == 4
    trainer.update(4)  # fetched again, synchronously
    assert trainer.updates == 2 and _pending(rds) == 0 and len(targets.calls) == 3
    trainer.close()


def test_pipeline_off_fetches_on_the_main_thread_only(rds, tmp_path):
    _publish(rds, [_step(i) for i in range(8)])
    targets = RecordingTargets()
    trainer = _trainer(rds, tmp_path / "t", targets=targets, pipeline=False)
    trainer.ingest(trainer.stream.read())
    trainer.update(4)
    trainer.update(4)
    assert [name for _, name in targets.calls] == [threading.main_thread().name] * 2
