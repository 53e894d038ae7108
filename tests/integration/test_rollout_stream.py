"""Stage 2's stream consumption against a real Redis: ack-after-checkpoint, re-delivery,
claiming, dead letters, and the applied-ids ledger."""

import time

import pytest
import redis

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import STREAM_FIELD, pack_record
from services.common.rollout_record import DEAD_LETTER_STREAM, ROLLOUT_STREAM
from services.trainer.rollout_stream import AppliedLedger, RolloutStream, StreamConfig


@pytest.fixture
def rds(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield redis.Redis.from_url(server.url)


def _publish(client, n, start=0):
    return [client.xadd(ROLLOUT_STREAM, {STREAM_FIELD: pack_record({"i": i})}).decode()
            for i in range(start, start + n)]


def test_unacked_entries_come_back_after_a_crash_and_the_ledger_prevents_double_apply(rds):
    ids = _publish(rds, 5)
    first = RolloutStream(rds, StreamConfig(block_ms=10))
    first.ensure_group()
    batch = first.read()
    assert [e.record["i"] for e in batch] == [0, 1, 2, 3, 4]
    ledger = AppliedLedger()
    ledger.add(e.id for e in batch[:3])  # update on 0..2 was checkpointed, then: crash, no ack
    restarted = RolloutStream(rds, StreamConfig(block_ms=10))  # same consumer name
    again = restarted.read()
    assert [e.id for e in again] == ids and all(e.deliveries == 2 for e in again)
    to_apply = [e for e in again if e.id not in ledger]
    assert [e.record["i"] for e in to_apply] == [3, 4]
    restarted.ack(e.id for e in again)
    assert restarted.read(block_ms=10) == []
    assert rds.xpending(ROLLOUT_STREAM, "trainer")["pending"] == 0


def test_own_pending_entries_are_handed_back_once_in_pages_not_re_delivered_on_every_read(rds):
    ids = _publish(rds, 5)
    first = RolloutStream(rds, StreamConfig(block_ms=10))
    first.ensure_group()
    assert len(first.read()) == 5  # then a crash: nothing acked
    restarted = RolloutStream(rds, StreamConfig(block_ms=10, batch=2))
    pages = [restarted.read() for _ in range(4)]
    assert [[e.id for e in page] for page in pages] == [ids[:2], ids[2:4], ids[4:], []]
    assert all(e.deliveries == 2 for page in pages for e in page)  # held, not read again


def test_a_rank_takes_over_the_pending_entries_of_a_gone_rank(rds):
    ids = _publish(rds, 4)
    gone = RolloutStream(rds, StreamConfig(consumer="t-r1", block_ms=10))
    gone.ensure_group()
    assert len(gone.read()) == 4
    rank0 = RolloutStream(rds, StreamConfig(consumer="t-r0", block_ms=10, autoclaim=False))
    assert "t-r1" in rank0.consumers()
    assert rank0.adopt(["t-r1"]) == 4
    assert [e.id for e in rank0.read()] == ids  # through its own pending read
    assert rds.xpending_range(ROLLOUT_STREAM, "trainer", "-", "+", 10, consumername="t-r1") == []


def test_without_autoclaim_idle_entries_of_another_consumer_stay_with_it(rds):
    _publish(rds, 3)
    other = RolloutStream(rds, StreamConfig(consumer="t-r1", block_ms=10))
    other.ensure_group()
    assert len(other.read()) == 3
    time.sleep(0.15)
    rank0 = RolloutStream(rds, StreamConfig(consumer="t-r0", claim_idle_ms=100, autoclaim=False, block_ms=10))
    assert rank0.read() == []


def test_idle_entries_of_a_dead_consumer_are_claimed(rds):
    _publish(rds, 3)
    dead = RolloutStream(rds, StreamConfig(consumer="dead", block_ms=10))
    dead.ensure_group()
    assert len(dead.read()) == 3
    time.sleep(0.15)
    alive = RolloutStream(rds, StreamConfig(consumer="alive", claim_idle_ms=100, block_ms=10))
    alive._pending_checked = True
    claimed = alive.read()
    assert [e.record["i"] for e in claimed] == [0, 1, 2]


def test_poison_and_over_delivered_entries_go_to_the_dead_letter_stream(rds):
    rds.xadd(ROLLOUT_STREAM, {STREAM_FIELD: b"\xc1not msgpack"})
    good = _publish(rds, 1, start=7)[0]
    stream = RolloutStream(rds, StreamConfig(max_deliveries=2, claim_idle_ms=0, block_ms=10))
    stream.ensure_group()
    first = stream.read()
    assert [e.id for e in first] == [good]  # the poison entry went straight to the DLQ
    dlq = rds.xrange(DEAD_LETTER_STREAM)
    assert len(dlq) == 1 and dlq[0][1][b"reason"].startswith(b"undecodable")
    # never acked: re-delivered (claim_idle 0) until max_deliveries, then dead-lettered
    seen = 1
    while True:
        batch = stream.read(block_ms=10)
        if not batch:
            break
        seen += 1
        assert seen <= 3
    assert seen == 2
    assert len(rds.xrange(DEAD_LETTER_STREAM)) == 2
    assert rds.xpending(ROLLOUT_STREAM, "trainer")["pending"] == 0


def test_ledger_is_bounded_and_round_trips():
    ledger = AppliedLedger(capacity=3)
    ledger.add(["1-0", "2-0", "3-0", "4-0"])
    assert "1-0" not in ledger and "4-0" in ledger
    assert AppliedLedger.from_list(ledger.to_list(), 3).to_list() == ["2-0", "3-0", "4-0"]


def test_group_lag_counts_undelivered_entries(rds):
    from services.trainer.rollout_stream import group_lag

    _publish(rds, 5)
    stream = RolloutStream(rds, StreamConfig(block_ms=10, batch=2))
    stream.ensure_group()
    assert group_lag(rds, ROLLOUT_STREAM, "trainer") == 5
    stream.read()
    assert group_lag(rds, ROLLOUT_STREAM, "trainer") == 3
    assert group_lag(rds, ROLLOUT_STREAM, "trainer", cap=2) == 2  # a large backlog reports the cap
    stream.read(count=10)
    assert group_lag(rds, ROLLOUT_STREAM, "trainer") == 0


def test_the_ranks_that_are_gone_are_named_by_the_consumer_and_the_world():
    from services.trainer.settings import gone_consumers

    names = ["t", "t-r0", "t-r1", "t-r2", "t-r10", "other", "t-rx", "tt-r3"]
    assert gone_consumers(names, "t", 2) == ["t", "t-r2", "t-r10"]
    assert gone_consumers(names, "t", 11) == ["t"]
