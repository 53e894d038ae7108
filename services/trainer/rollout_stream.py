"""The trainer's side of the Redis Stream ``w2a:rollouts``: at-least-once, applied once.

Consumption protocol (Stage 2):

1. ``read()`` returns, in order: this consumer's own pending entries (delivered before a crash,
   never acked), entries other consumers left idle longer than ``claim_idle_ms`` (XAUTOCLAIM),
   then new entries (XREADGROUP ``>``). Entries delivered more than ``max_deliveries`` times, and
   entries that do not decode, go to the dead-letter stream (``w2a:rollouts:dlq``) and are acked.
2. The caller trains on the entries, checkpoints the update *together with their ids*, and only
   then calls ``ack()``. A crash before the checkpoint re-delivers them; a crash after the
   checkpoint but before the ack re-delivers them too, and ``AppliedLedger`` (restored from the
   checkpoint) says they were already applied, so they are acked without training twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from services.common.rollout_log import STREAM_FIELD, pack_record, unpack_record
from services.common.streams import DEAD_LETTER_STREAM, ROLLOUT_STREAM


@dataclass(frozen=True)
class StreamConfig:
    stream: str = ROLLOUT_STREAM
    group: str = "trainer"
    consumer: str = "trainer-0"
    dead_letter: str = DEAD_LETTER_STREAM
    batch: int = 256
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    autoclaim: bool = True  # off between the ranks of one data-parallel trainer
    max_deliveries: int = 5


@dataclass
class Entry:
    id: str
    record: dict[str, Any]
    deliveries: int = 1


@dataclass
class AppliedLedger:
    """Ids of entries whose update is checkpointed; bounded, saved with the checkpoint."""

    capacity: int = 100_000
    ids: deque = field(default_factory=deque)
    _set: set = field(default_factory=set)

    def add(self, ids: Iterable[str]) -> None:
        for i in ids:
            if i in self._set:
                continue
            self.ids.append(i)
            self._set.add(i)
            if len(self.ids) > self.capacity:
                self._set.discard(self.ids.popleft())

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._set

    def to_list(self) -> list[str]:
        return list(self.ids)

    @classmethod
    def from_list(cls, ids: list[str], capacity: int = 100_000) -> AppliedLedger:
        ledger = cls(capacity)
        ledger.add(ids)
        return ledger


def _id(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RolloutStream:
    def __init__(self, client: redis.Redis, config: StreamConfig = StreamConfig()) -> None:
        self.client = client
        self.config = config
        self._pending_checked = False
        self._pending_cursor = "0"
        self.dead_lettered = 0

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.config.stream, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _deliveries(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = self.client.xpending_range(self.config.stream, self.config.group, min=min(ids),
                                          max=max(ids), count=len(ids) * 2 + 10)
        return {_id(r["message_id"]): int(r["times_delivered"]) for r in rows}

    def _dead_letter(self, entry_id: str, fields: dict, reason: str) -> None:
        payload = {k if isinstance(k, str) else k.decode(): v for k, v in (fields or {}).items()}
        payload.update({"source_id": entry_id, "reason": reason})
        pipe = self.client.pipeline()
        pipe.xadd(self.config.dead_letter, payload)
        pipe.xack(self.config.stream, self.config.group, entry_id)
        pipe.execute()
        self.dead_lettered += 1

    def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move a decoded entry the trainer cannot use to the dead-letter stream (and ack it)."""
        self._dead_letter(entry.id, {STREAM_FIELD: pack_record(entry.record)}, reason)

    def _decode(self, raw: list) -> list[Entry]:
        entries, ids = [], [_id(i) for i, _ in raw]
        deliveries = self._deliveries(ids)
        for (_, fields), eid in zip(raw, ids):
            if fields is None:  # deleted by MAXLEN trimming while pending
                self.client.xack(self.config.stream, self.config.group, eid)
                continue
            count = deliveries.get(eid, 1)
            if count > self.config.max_deliveries:
                self._dead_letter(eid, fields, f"delivered {count} times")
                continue
            data = fields.get(STREAM_FIELD.encode(), fields.get(STREAM_FIELD))
            try:
                record = unpack_record(data)
                if not isinstance(record, dict):
                    raise ValueError("record is not a map")
            except Exception as exc:  # noqa: BLE001 - any undecodable payload is poison
                self._dead_letter(eid, fields, f"undecodable: {type(exc).__name__}")
                continue
            entries.append(Entry(eid, record, count))
        return entries

    def read(self, count: int | None = None, block_ms: int | None = None) -> list[Entry]:
        cfg = self.config
        count = count or cfg.batch
        if not self._pending_checked:  # after a restart: our own unacked deliveries first, once
            raw = self.client.xreadgroup(cfg.group, cfg.consumer, {cfg.stream: self._pending_cursor}, count=count)
            mine = raw[0][1] if raw else []
            if mine:  # page on from the last one: reading them again would count as re-deliveries
                self._pending_cursor = _id(mine[-1][0])
                return self._decode(mine)
            self._pending_checked = True
        if cfg.autoclaim:
            claimed = self.client.xautoclaim(cfg.stream, cfg.group, cfg.consumer,
                                             min_idle_time=cfg.claim_idle_ms, start_id="0-0", count=count)
            if claimed and claimed[1]:
                return self._decode(claimed[1])
        raw = self.client.xreadgroup(cfg.group, cfg.consumer, {cfg.stream: ">"}, count=count,
                                     block=cfg.block_ms if block_ms is None else block_ms)
        return self._decode(raw[0][1]) if raw else []

    def adopt(self, consumers: Iterable[str]) -> int:
        """Take over every entry pending for ``consumers`` (the ranks of a larger world that are
        gone); they come back through this consumer's own pending read. Returns how many."""
        cfg, moved = self.config, 0
        for name in consumers:
            seen: set[str] = set()
            while rows := self.client.xpending_range(cfg.stream, cfg.group, min="-", max="+", count=1000,
                                                     consumername=name):
                ids = [_id(r["message_id"]) for r in rows]
                if seen.issuperset(ids):  # entries trimmed away that XCLAIM will not move
                    break
                seen.update(ids)
                self.client.xclaim(cfg.stream, cfg.group, cfg.consumer, min_idle_time=0, message_ids=ids,
                                   justid=True)
                moved += len(ids)
        if moved:
            self._pending_checked, self._pending_cursor = False, "0"
        return moved

    def consumers(self) -> list[str]:
        """The group's consumer names."""
        try:
            return [_id(c["name"]) for c in self.client.xinfo_consumers(self.config.stream, self.config.group)]
        except redis.ResponseError:  # no stream or group yet
            return []

    def ack(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        return self.client.xack(self.config.stream, self.config.group, *ids) if ids else 0

    def lag(self) -> int:
        return group_lag(self.client, self.config.stream, self.config.group)


def group_lag(client: redis.Redis, stream: str, group: str, cap: int = 1_000) -> int:
    """Entries not yet delivered to ``group``. Redis >= 7 reports it. On 6.x (the embedded
    server): 0 when the group has read up to the stream's last id, else the entries after its
    last-delivered id counted up to ``cap`` (XRANGE returns whole entries, so a large backlog
    reports ``cap``: "at least this many")."""
    for info in client.xinfo_groups(stream):
        if _id(info["name"]) != group:
            continue
        if info.get("lag") is not None:
            return int(info["lag"])
        last = _id(info["last-delivered-id"])
        if last == "0-0":
            return int(client.xlen(stream))
        if last == _id(client.xinfo_stream(stream)["last-generated-id"]):
            return 0
        return len(client.xrange(stream, min=f"({last}", max="+", count=cap))
    return int(client.xlen(stream)) if client.exists(stream) else 0


def group_drained(client: redis.Redis, stream: str, group: str) -> bool:
    """Whether ``group`` has read every entry of ``stream`` and acked all it read."""
    if not client.exists(stream) or group not in {_id(g["name"]) for g in client.xinfo_groups(stream)}:
        return False
    return group_lag(client, stream, group) == 0 and client.xpending(stream, group)["pending"] == 0
