"""Rollout logging off the hot path: bounded queue -> Redis Stream, with a disk spool.

``log()`` never blocks: it packs the record as msgpack (never pickle; a few µs when arrays come
as bytes) and puts it in a bounded deque (when full, the oldest record is dropped and counted).
Packing on the caller keeps the writer thread's share of the GIL small: it only frames the
entries and moves bytes (``StreamAppender``: one ``XADD MAXLEN ~`` pipeline per batch, replies
counted, not parsed). The writer wakes at most every ``linger`` seconds (or when ``batch_size``
records wait). When Redis is unreachable or refuses an entry the writer appends records to an
on-disk spool (length-prefixed msgpack frames, fsynced) and keeps retrying; once Redis answers
again the spool is replayed in order before any newer record, then truncated. Each entry carries
a record id (``rid``) beside the record; a replay skips records whose id is already in the
stream's tail (a pipeline applied before its reply was lost, a replay cut off half-way), so a
Redis failure does not duplicate records. A crash of this process mid-replay still can: the
trainer's applied-id ledger covers that case.

The id is ``<logger instance>:<sequence number>`` (no hashing of 12 KB frames),
written into the record itself, so a spooled frame carries it, and beside it in the stream entry.
Spool frames written before ids were embedded fall back to a content hash.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import redis

from services.common.stream_appender import StreamAppender

log = logging.getLogger(__name__)

STREAM_FIELD = "data"
RID_FIELD = "rid"  # id of the record ("<logger instance>:<n>"), for exactly-once replay from the spool


def _encode_extra(value: Any) -> Any:
    """numpy arrays travel as their raw bytes (shapes are recorded beside them)."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value).tobytes()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot log a {type(value).__name__}")


def logged_image_entry(image: np.ndarray, sent: tuple[str, bytes] | None = None) -> dict:
    """A step record's image: the bytes the robot sent, with their encoding and decoded shape.

    A JPEG/PNG frame is logged compressed, as it arrived (the server only validated and decoded
    it); a raw frame as its uint8 [H, W, 3] bytes. ``logged_image`` reads either back."""
    if sent is None:
        return {"shape": list(image.shape), "encoding": "raw", "data": image.tobytes()}
    encoding, data = sent
    return {"shape": list(image.shape), "encoding": encoding, "data": data}


def logged_image(entry: dict) -> np.ndarray:
    """uint8 [H, W, 3] of a logged image entry (records without ``encoding`` are raw)."""
    encoding = entry.get("encoding", "raw")
    shape = tuple(entry["shape"])
    if encoding == "raw":
        return np.frombuffer(entry["data"], np.uint8).reshape(shape).copy()
    if encoding not in ("jpeg", "png"):
        raise ValueError(f"logged image encoding {encoding!r} is not raw, jpeg or png")
    import io

    from PIL import Image

    with Image.open(io.BytesIO(entry["data"])) as img:
        frame = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if frame.shape != shape:
        raise ValueError(f"logged {encoding} image decodes to {frame.shape}, the record says {shape}")
    return frame


def record_id(payload: bytes) -> str:
    """Id of a packed record for exactly-once replay: the one embedded by the logger, or (frames
    spooled by older versions) a content hash."""
    rid = unpack_record(payload).get(RID_FIELD)
    return rid if isinstance(rid, str) else hashlib.blake2b(payload, digest_size=12).hexdigest()


def pack_record(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True, default=_encode_extra)


def unpack_record(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class DiskSpool:
    """Append-only file of length-prefixed msgpack records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, payloads: list[bytes]) -> None:
        with open(self.path, "ab") as fh:
            for payload in payloads:
                fh.write(struct.pack(">I", len(payload)))
                fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())

    def read_all(self) -> list[bytes]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        out, offset = [], 0
        while offset + 4 <= len(data):
            (length,) = struct.unpack_from(">I", data, offset)
            if offset + 4 + length > len(data):
                log.warning("spool %s ends in a torn record; ignoring its last %d bytes",
                            self.path, len(data) - offset)
                break
            out.append(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return out

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self.read_all())


class RolloutLogger:
    def __init__(
        self,
        redis_url: str,
        stream: str,
        spool_path: str | Path,
        maxlen: int = 200_000,
        queue_size: int = 10_000,
        batch_size: int = 256,
        retry_interval: float = 0.5,
        linger: float = 0.05,
        on_change: Callable[[RolloutLogger], None] | None = None,
    ) -> None:
        self.stream = stream
        self.batch_size = batch_size
        self.retry_interval = retry_interval
        self.linger = linger
        self.spool = DiskSpool(spool_path)
        self.on_change = on_change
        self._client = redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self._appender = StreamAppender(redis_url, stream, maxlen, (STREAM_FIELD, RID_FIELD))
        # (packed record, record id) pairs, the values of a stream entry in field order
        self._queue: collections.deque[tuple[bytes, bytes]] = collections.deque(maxlen=queue_size)
        self._instance = secrets.token_hex(6)  # record ids: "<instance>:<n>", unique across restarts
        self._sequence = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self._writer_waiting = False  # only then does log() need to wake it
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written = 0
        self.spooled = len(self.spool)  # records waiting in the spool (survives restarts)
        self.redis_up = True

    # -- producer side (event loop; never blocks) -----------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        """Pack a record and queue it; the Redis write happens on the writer thread."""
        rid = f"{self._instance}:{next(self._sequence)}"
        record[RID_FIELD] = rid
        try:
            entry = (pack_record(record), rid.encode())
        except (TypeError, ValueError, OverflowError):  # a bug in the caller's record: not the robot's problem
            log.exception("cannot pack rollout record %s; dropped", record.get("id"))
            self.dropped += 1
            return
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1  # deque drops the oldest on append
            self._queue.append(entry)
            if self._writer_waiting:
                self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- writer thread --------------------------------------------------------------------------

    def start(self) -> RolloutLogger:
        self._thread = threading.Thread(target=self._run, name="rollout-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Flush the queue (to Redis, or to the spool if Redis is down) and stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        remaining = self._take(len(self._queue))
        if remaining:  # writer did not finish in time: keep the data on disk
            self.spool.append([payload for payload, _ in remaining])
            self.spooled += len(remaining)
        self._appender.close()

    def _take(self, n: int) -> list[tuple[bytes, bytes]]:
        """Up to ``n`` queued (packed record, record id) pairs, oldest first."""
        with self._cond:
            return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    def _xadd(self, entries: list[tuple[bytes, bytes]]) -> None:
        self._appender.append(entries)

    def _already_written(self, pending: int) -> set[bytes]:
        """Record ids of spooled payloads that reached the stream anyway.

        A pipeline cut off by a Redis failure may have been applied before the reply was lost, and
        a replay cut off half-way wrote its first batches: those records sit in the spool *and*
        in the stream. They can only be among the newest entries, so the tail is enough.
        """
        tail = self._client.xrevrange(self.stream, count=min(pending + 10_000, 200_000))
        return {fields.get(RID_FIELD.encode()) for _, fields in tail} - {None}

    def _replay_spool(self) -> None:
        # While Redis stays down this runs every retry interval: probe it before reading the
        # whole spool file again.
        self._client.ping()
        pending = [(p, record_id(p).encode()) for p in self.spool.read_all()]
        written = self._already_written(len(pending)) if pending else set()
        fresh = [(p, rid) for p, rid in pending if rid not in written]
        for start in range(0, len(fresh), self.batch_size):
            self._xadd(fresh[start : start + self.batch_size])
        if pending:
            log.info("replayed %d spooled rollout records (%d were already in the stream)",
                     len(fresh), len(pending) - len(fresh))
        self.spool.clear()
        self.written += len(fresh)
        self.spooled = 0

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._writer_waiting = True
                while not self._queue and not self._stop and not self.spooled:
                    self._cond.wait(timeout=self.retry_interval)
                self._writer_waiting = False
                stopping = self._stop
            if not stopping and len(self._queue) < self.batch_size and self.linger > 0:
                # Let records accumulate: few large pipelines cost the serving threads far less
                # (GIL hand-offs, syscalls) than one small pipeline per record.
                time.sleep(self.linger)
            batch = self._take(self.batch_size)
            try:
                if self.spooled:
                    self._replay_spool()  # everything spooled goes before newer records
                if batch:
                    self._xadd(batch)
                    self.written += len(batch)
                if not self.redis_up:
                    log.info("redis is back; rollout logging resumed")
                self.redis_up = True
            except (redis.RedisError, OSError) as exc:
                if self.redis_up:
                    log.warning("redis unreachable or refusing writes (%s); spooling rollouts to %s",
                                exc, self.spool.path)
                self.redis_up = False
                rest = batch + (self._take(len(self._queue)) if stopping else [])
                if rest:
                    self.spool.append([payload for payload, _ in rest])
                    self.spooled += len(rest)
                if stopping:
                    self._notify()
                    return
                time.sleep(self.retry_interval)
            self._notify()
            if stopping and not self._queue:
                return
