"""Rollout records reach a real Redis Stream, and survive a Redis outage through the disk spool."""

import time

import numpy as np
import redis

from services.common.redis_server import EmbeddedRedis
from services.common.rollout_log import STREAM_FIELD, RolloutLogger, logged_image, unpack_record
from services.common.rollout_record import ROLLOUT_STREAM, EpisodeEnd, StepRecord
from services.policy.server import PolicyServer
from tests.policy_helpers import ROBOT, ServerThread, observation, settings, stream_records, tiny_base, wait_for
from w2a_client.client import PolicyClient

STREAM = ROLLOUT_STREAM


def _records(url):
    entries = redis.Redis.from_url(url).xrange(STREAM)
    return [unpack_record(fields[STREAM_FIELD.encode()]) for _, fields in entries]


def _served_records(tmp_path, base, act) -> list:
    """``act(client)`` against a policy server that logs to a real Redis; the stream's records
    once the server has stopped (its stop flushes the logger's queue)."""
    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, STREAM, tmp_path / "spool")
        with (
            ServerThread(PolicyServer(settings(tmp_path), base, logger)) as srv,
            PolicyClient(srv.target, ROBOT) as client,
        ):
            act(client)
        return stream_records(rds.url, STREAM)


def test_served_steps_and_episode_end_reach_the_stream(tmp_path):
    base = tiny_base()
    images, state = observation()

    def act(client):
        for step in range(3):
            client.act("r1", images, state, "push the puck", episode_id="ep1", step=step * 4, skill="push")
        client.end_episode("r1", "ep1", 12, success=True)

    records = _served_records(tmp_path, base, act)
    steps = [r for r in records if isinstance(r, StepRecord)]
    assert [r.step for r in steps] == [0, 4, 8]
    first = steps[0]
    assert first.robot_id == "r1" and first.skill == "push" and first.policy_version == 0
    np.testing.assert_allclose(first.state, state)
    assert first.final.shape == (4, 4) and first.final.dtype == np.float32
    np.testing.assert_allclose(first.final, first.base + first.residual, atol=1e-5)
    assert first.features.shape == (base.spec.feature_dim,) and np.isfinite(first.features).all()
    assert logged_image(first.images["corner"]).shape == (32, 32, 3)
    end = records[-1]
    assert isinstance(end, EpisodeEnd) and end.success and end.episode == "r1/ep1"


def test_redis_outage_spools_and_replays_in_order_exactly_once(tmp_path):
    rds = EmbeddedRedis(tmp_path / "redis").start()
    logger = RolloutLogger(rds.url, STREAM, tmp_path / "spool", retry_interval=0.1).start()
    try:
        for i in range(5):
            logger.log({"kind": "step", "id": f"a/{i}", "i": i})
        assert wait_for(lambda: logger.written == 5)
        rds.kill()  # kill -9: Redis is gone, with AOF on disk
        for i in range(5, 25):
            logger.log({"kind": "step", "id": f"a/{i}", "i": i})
        assert wait_for(lambda: logger.spooled > 0 and not logger.redis_up)
        rds.start()  # same port and data dir
        for i in range(25, 30):
            logger.log({"kind": "step", "id": f"a/{i}", "i": i})
        assert wait_for(lambda: logger.spooled == 0 and logger.written == 30)
        ids = [r["i"] for r in _records(rds.url)]
        assert ids == list(range(30)), ids
        assert not (tmp_path / "spool").exists()
    finally:
        logger.stop()
        rds.stop()


def test_full_queue_drops_oldest_and_never_blocks(tmp_path):
    logger = RolloutLogger("redis://127.0.0.1:1/0", STREAM, tmp_path / "spool", queue_size=3)
    start = time.perf_counter()
    for i in range(10):
        logger.log({"i": i})
    assert time.perf_counter() - start < 0.5
    assert logger.dropped == 7 and logger.queue_depth == 3


def test_records_spooled_at_shutdown_are_replayed_by_the_next_logger(tmp_path):
    dead = RolloutLogger("redis://127.0.0.1:1/0", STREAM, tmp_path / "spool", retry_interval=0.05).start()
    for i in range(4):
        dead.log({"i": i})
    dead.stop()
    assert dead.spooled == 4
    with EmbeddedRedis(tmp_path / "redis") as rds:
        fresh = RolloutLogger(rds.url, STREAM, tmp_path / "spool").start()
        assert wait_for(lambda: fresh.spooled == 0)
        fresh.stop()
        assert [r["i"] for r in _records(rds.url)] == [0, 1, 2, 3]


def test_replay_skips_records_that_reached_the_stream_before_the_failure(tmp_path):
    """A pipeline applied by Redis whose reply was lost lands in the spool too: not written twice."""
    from services.common.rollout_log import pack_record

    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, STREAM, tmp_path / "spool")
        entries = [(pack_record({"kind": "step", "i": i, "rid": f"w:{i}"}), f"w:{i}".encode())
                   for i in range(6)]
        logger._xadd(entries[:4])  # applied, "reply lost":
        logger.spool.append([p for p, _ in entries])  # the writer spooled the whole batch and more
        logger.spooled = len(entries)
        logger._replay_spool()
        assert [r["i"] for r in _records(rds.url)] == [0, 1, 2, 3, 4, 5]
        assert len(logger.spool) == 0


def test_replay_of_an_old_spool_without_embedded_ids(tmp_path):
    """Spool frames from before ids were embedded are matched by their content hash."""
    import hashlib

    from services.common.rollout_log import pack_record

    with EmbeddedRedis(tmp_path / "redis") as rds:
        logger = RolloutLogger(rds.url, STREAM, tmp_path / "spool")
        payloads = [pack_record({"kind": "step", "i": i}) for i in range(5)]
        logger._xadd([(p, hashlib.blake2b(p, digest_size=12).hexdigest().encode()) for p in payloads[:2]])
        logger.spool.append(payloads)
        logger.spooled = len(payloads)
        logger._replay_spool()
        assert [r["i"] for r in _records(rds.url)] == [0, 1, 2, 3, 4]


def test_record_ids_are_unique_across_logger_instances(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        for _ in range(2):  # a restarted server must not reuse the ids of the previous run
            logger = RolloutLogger(rds.url, STREAM, tmp_path / "spool").start()
            for i in range(50):
                logger.log({"kind": "step", "i": i})
            logger.stop()
        records = _records(rds.url)
        assert len(records) == 100 and len({r["rid"] for r in records}) == 100


def test_a_record_that_cannot_be_packed_is_dropped_and_counted_not_raised(tmp_path):
    """A logging bug must not fail the robot's Act: the record is dropped, counted and logged."""
    logger = RolloutLogger("redis://127.0.0.1:1/0", STREAM, tmp_path / "spool")
    logger.log({"kind": "step", "bad": object()})
    logger.log({"kind": "step", "ok": 1})
    assert logger.dropped == 1 and logger.queue_depth == 1


def test_compressed_frames_are_logged_as_sent_and_decoded_by_the_trainer(tmp_path):
    """A JPEG/PNG observation is logged as the bytes the robot sent (with its encoding), not as the
    decoded array; the trainer decodes it to exactly what the server acted on."""
    import io

    from PIL import Image

    from services.trainer.stage2 import decode_step
    from w2a_client.client import image_proto

    images, state = observation()

    def act(client):
        for step, encoding in enumerate(("raw", "jpeg", "png")):
            client.act("r1", images, state, "push the puck", episode_id="ep1", step=step, encoding=encoding)

    steps = [r for r in _served_records(tmp_path, tiny_base(), act) if isinstance(r, StepRecord)]
    sent = {enc: image_proto(images["corner"], "corner", enc).data for enc in ("jpeg", "png")}
    raw, jpeg, png = (s.images["corner"] for s in steps)
    assert raw["encoding"] == "raw" and len(raw["data"]) == 32 * 32 * 3
    assert jpeg["encoding"] == "jpeg" and jpeg["data"] == sent["jpeg"] and len(jpeg["data"]) < len(raw["data"])
    assert png["encoding"] == "png" and png["data"] == sent["png"]
    with Image.open(io.BytesIO(sent["jpeg"])) as img:
        jpeg_frame = np.asarray(img.convert("RGB"))
    # PNG is lossless: the original frame; JPEG: what decoding the sent bytes gives
    for record, expected in zip(steps, (images["corner"], jpeg_frame, images["corner"])):
        np.testing.assert_array_equal(decode_step(record.id, record, "corner").frame, expected)
