"""The declared rollout record: typed arrays round-trip, old records still decode, bad ones say why."""

from pathlib import Path

import msgpack
import numpy as np
import pytest

from services.common.rollout_log import logged_image, logged_image_entry, pack_record, unpack_record
from services.common.rollout_record import (
    RECORD_FORMAT,
    EpisodeEnd,
    RecordError,
    StepRecord,
    decode_record,
    read_array,
    wire_array,
)

# Two records in the first wire format, as services/policy/server.py wrote them up to d8633e9
# (arrays as bare float32 bytes, action shapes in "chunk", no "v").
V1_FIXTURE = Path(__file__).parents[1] / "fixtures" / "rollout_records_v1.msgpack"


def _record(rng, **kw):
    frame = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return StepRecord(robot_id="r", episode_id="e", step=4, base=rng.standard_normal((8, 4)).astype(np.float32),
                      features=rng.standard_normal(12).astype(np.float32), state=np.arange(5, dtype=np.float32),
                      residual=np.zeros((8, 4), np.float32), final=np.ones((8, 4), np.float32),
                      images={"corner": logged_image_entry(frame)}, skill="push the puck", **kw)


def test_a_step_record_round_trips_through_msgpack_with_dtypes_and_shapes():
    rng = np.random.default_rng(0)
    future = rng.integers(0, 255, (9, 6, 6, 3), dtype=np.uint8)
    record = _record(rng, expert_actions=np.full((8, 4), 0.5, np.float32), expert_future=future)
    wire = unpack_record(pack_record(record.to_wire()))
    assert wire["v"] == RECORD_FORMAT and wire["kind"] == "step" and wire["id"] == "r/e/4"
    assert wire["base"]["shape"] == [8, 4] and wire["base"]["dtype"] == "<f4"
    back = decode_record(wire, oracle=True)
    for name in ("base", "features", "state", "residual", "final", "expert_actions", "expert_future"):
        np.testing.assert_array_equal(getattr(back, name), getattr(record, name))
        assert getattr(back, name).dtype == getattr(record, name).dtype
    np.testing.assert_array_equal(logged_image(back.images["corner"]), logged_image(record.images["corner"]))
    assert back.skill == "push the puck" and back.trainable
    assert decode_record(wire).expert_actions is None  # the oracle only when asked for


def test_records_of_the_first_format_still_decode():
    step, end = (unpack_record(msgpack.packb(r, use_bin_type=True))
                 for r in msgpack.unpackb(V1_FIXTURE.read_bytes(), raw=False))
    record = decode_record(step)
    assert isinstance(record, StepRecord) and record.id == "robot-0/ep-3/5" and record.policy_version == 2
    assert record.base.shape == (2, 4) and record.final.shape == (2, 4) and record.features.shape == (5,)
    assert record.state.dtype == np.float32 and record.server_ms == 3.25
    assert logged_image(record.images["corner"]).shape == (4, 4, 3)
    marker = decode_record(end)
    assert isinstance(marker, EpisodeEnd) and marker.success and marker.episode == "robot-0/ep-3"


def test_episode_end_round_trips():
    end = EpisodeEnd(robot_id="r", episode_id="e", step=9, success=True, evaluation=True)
    assert decode_record(unpack_record(pack_record(end.to_wire()))) == end


@pytest.mark.parametrize(("wire", "message"), [
    ({"kind": "telemetry"}, "unknown rollout record kind 'telemetry'"),
    ({"kind": "step", "v": RECORD_FORMAT + 1}, "newer than this reader"),
    ({"kind": "step", "robot_id": "r"}, "without 'base'"),
    ({"kind": "step", "chunk": [2, 4], "base": b"\x00" * 12}, "do not fill shape"),
    ({"kind": "step", "base": {"dtype": "|O", "shape": [1], "data": b""}}, "object arrays are refused"),
    ({"kind": "step", "base": [1, 2]}, "expected an array"),
    ([1, 2], "is a map"),
])
def test_bad_records_raise_a_record_error_that_says_why(wire, message):
    with pytest.raises(RecordError, match=message):
        decode_record(wire)


def test_wire_arrays_keep_non_float_dtypes():
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(read_array(wire_array(array), "x"), array)
    assert read_array(wire_array(array), "x").dtype == np.int16
