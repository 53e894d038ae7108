import numpy as np
import pytest

from services.trainer.replay import ReplayBuffer


def _rows(start, n):
    values = np.arange(start, start + n, dtype=np.float32)
    return values[:, None] * np.ones((n, 3)), values[:, None, None] * np.ones((n, 2, 4)), values[:, None]


def test_ring_keeps_the_newest_rows_and_samples_without_replacement():
    replay = ReplayBuffer(capacity=5, seed=0)
    replay.add(*_rows(0, 4))
    replay.add(*_rows(4, 4))  # 0 … 7 added; 3 … 7 remain
    assert len(replay) == 5
    features, base, target = replay.sample(5)
    assert sorted(features[:, 0].tolist()) == [3, 4, 5, 6, 7]
    # rows stay aligned across the three arrays
    assert np.array_equal(features[:, 0], base[:, 0, 0]) and np.array_equal(features[:, 0], target[:, 0])
    assert len(replay.sample(99)[0]) == 5  # no more than it holds


def test_empty_or_disabled_buffer_samples_nothing():
    assert ReplayBuffer(10).sample(4) is None
    off = ReplayBuffer(0)
    off.add(*_rows(0, 3))
    assert len(off) == 0 and off.sample(2) is None


def test_rows_of_another_shape_are_refused():
    replay = ReplayBuffer(10)
    replay.add(*_rows(0, 2))
    features, base, _ = _rows(0, 2)
    with pytest.raises(ValueError, match="shape"):
        replay.add(features, base, np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="count"):
        replay.add(features, base[:1], np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        ReplayBuffer(-1)


def test_mixed_puts_the_new_rows_first_and_adds_a_draw_of_earlier_ones():
    replay = ReplayBuffer(capacity=10, seed=0)
    new = _rows(100, 2)
    assert all(a is b for a, b in zip(replay.mixed(new, 4), new))  # empty: the new rows alone
    replay.add(*_rows(0, 6))
    features, base, target = replay.mixed(new, 4)
    assert features.shape == (6, 3) and base.shape == (6, 2, 4) and target.shape == (6, 1)
    assert features[:2, 0].tolist() == [100, 101] and set(features[2:, 0].tolist()) <= set(range(6))
