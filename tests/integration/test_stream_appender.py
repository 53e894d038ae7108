"""The rollout writer's pipelined XADD client against a real redis-server."""

from __future__ import annotations

import time

import pytest
import redis

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import RID_FIELD, STREAM_FIELD, RolloutLogger, unpack_record
from services.common.stream_appender import StreamAppender, StreamWriteError

STREAM = "test:appender"


def _appender(url: str, maxlen: int = 100_000) -> StreamAppender:
    return StreamAppender(url, STREAM, maxlen, (STREAM_FIELD, RID_FIELD))


def test_entries_arrive_in_order_with_their_fields(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        appender = _appender(rds.url)
        # 5,000 replies (~100 KB) arrive over several reads: the reply counter must stitch them
        entries = [(b"payload-%d" % i + b"\x00\r\n" * (i % 3), b"rid:%d" % i) for i in range(5000)]
        appender.append(entries[:10])
        appender.append(entries[10:])
        got = redis.Redis.from_url(rds.url).xrange(STREAM)
        assert [(f[b"data"], f[b"rid"]) for _, f in got] == entries
        appender.close()


def test_maxlen_trims_approximately(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        appender = _appender(rds.url, maxlen=50)
        for start in range(0, 2000, 100):
            appender.append([(b"x", b"%d" % i) for i in range(start, start + 100)])
        assert 50 <= redis.Redis.from_url(rds.url).xlen(STREAM) < 500


def test_an_error_reply_raises_with_redis_message_and_the_next_batch_works(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        client = redis.Redis.from_url(rds.url)
        client.set(STREAM, "not a stream")
        appender = _appender(rds.url)
        with pytest.raises(StreamWriteError, match="WRONGTYPE"):
            appender.append([(b"a", b"1"), (b"b", b"2")])
        client.delete(STREAM)
        appender.append([(b"c", b"3")])
        assert [f[b"data"] for _, f in client.xrange(STREAM)] == [b"c"]


def test_password_database_and_unix_socket_urls(tmp_path):
    with EmbeddedRedis(tmp_path / "redis", unix_socket=True) as rds:
        client = redis.Redis.from_url(rds.url)
        _appender(rds.url).append([(b"over-unix", b"1")])
        assert client.xlen(STREAM) == 1
        client.config_set("requirepass", "s3cret")
        tcp = f"redis://:s3cret@127.0.0.1:{rds.port}/3"
        _appender(tcp).append([(b"db3", b"2")])
        assert redis.Redis.from_url(tcp).xlen(STREAM) == 1
        with pytest.raises(StreamWriteError, match=r"(?i)pass"):
            _appender(f"redis://:wrong@127.0.0.1:{rds.port}/0").append([(b"x", b"3")])


def test_unreachable_redis_raises_oserror_and_reconnects_after_a_restart(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        appender = _appender(rds.url)
        appender.append([(b"before", b"1")])
        rds.kill()
        with pytest.raises(OSError):  # noqa: PT011 - whichever socket error: the contract is OSError
            appender.append([(b"lost", b"2")])
        rds.start()
        appender.append([(b"after", b"3")])
        assert [f[b"data"] for _, f in redis.Redis.from_url(rds.url).xrange(STREAM)][-1] == b"after"
    with pytest.raises(OSError):  # noqa: PT011 - as above
        _appender("redis://127.0.0.1:1/0").append([(b"x", b"1")])


def test_logger_spools_what_redis_refuses_and_replays_it_once_redis_accepts(tmp_path):
    """An error reply (here WRONGTYPE; OOM or MISCONF in the field) must not kill the writer or
    lose records: they wait in the spool and go out in order once Redis takes writes again."""
    with EmbeddedRedis(tmp_path / "redis") as rds:
        client = redis.Redis.from_url(rds.url)
        client.set(STREAM, "in the way")
        logger = RolloutLogger(rds.url, STREAM, tmp_path / "spool", retry_interval=0.05, linger=0).start()
        for i in range(5):
            logger.log({"kind": "step", "i": i})
        deadline = time.monotonic() + 10
        while logger.spooled < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert logger.spooled == 5 and not logger.redis_up
        client.delete(STREAM)
        while logger.spooled and time.monotonic() < deadline:
            time.sleep(0.02)
        logger.log({"kind": "step", "i": 5})
        logger.stop()
        records = [unpack_record(f[b"data"]) for _, f in client.xrange(STREAM)]
        assert [r["i"] for r in records] == list(range(6))


def test_embedded_redis_starts_from_a_relative_directory(tmp_path, monkeypatch):
    """`w2a demo` runs under ./runs/<stamp>: redis-server changes into --dir before opening
    --logfile, so a relative path used to make it exit before it could log why."""
    monkeypatch.chdir(tmp_path)
    with EmbeddedRedis("runs/stack/redis") as rds:
        assert redis.Redis.from_url(rds.url).ping()
    assert (tmp_path / "runs/stack/redis/redis.log").exists()
