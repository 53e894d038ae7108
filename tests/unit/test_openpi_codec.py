import msgpack
import numpy as np
import pytest

from services.policy.openpi_endpoint import OpenpiRequestError, packb, to_hwc_uint8, unpackb


def test_round_trip_of_numeric_arrays():
    obs = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.uint8(7), "c": "text"}
    back = unpackb(packb(obs))
    np.testing.assert_array_equal(back["a"], obs["a"])
    assert back["b"] == 7 and back["c"] == "text"


def test_frames_cannot_build_object_arrays_or_lie_about_their_size():
    evil = msgpack.packb({b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "|O", b"shape": [1]})
    with pytest.raises(OpenpiRequestError, match="not numeric"):
        unpackb(evil)
    short = msgpack.packb({b"__ndarray__": True, b"data": b"\x00" * 3, b"dtype": "<f4", b"shape": [2, 2]})
    with pytest.raises(OpenpiRequestError, match="does not match its bytes"):
        unpackb(short)


def test_images_are_normalised_to_the_camera():
    chw = np.zeros((3, 10, 12), np.uint8)
    assert to_hwc_uint8(chw, (32, 32), "k").shape == (32, 32, 3)
    unit = np.full((32, 32, 3), 0.5, np.float32)
    assert to_hwc_uint8(unit, (32, 32), "k").max() == 127
    with pytest.raises(OpenpiRequestError, match="NaN"):
        to_hwc_uint8(np.full((32, 32, 3), np.nan, np.float32), (32, 32), "k")
    with pytest.raises(OpenpiRequestError, match="HxWx3"):
        to_hwc_uint8(np.zeros((5, 5, 4), np.uint8), (32, 32), "k")
