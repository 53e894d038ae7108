import numpy as np
import pytest

from w2a_models.chunking import ChunkWindow, align_pairs, chunk_windows, gather_chunks, trajectory_pool


def test_chunk_windows_drop_partial_tail():
    assert chunk_windows(10, 4) == [ChunkWindow(0, 4), ChunkWindow(4, 8)]
    assert chunk_windows(10, 4, stride=2)[-1] == ChunkWindow(6, 10)


def test_windows_stay_inside_segments():
    windows = chunk_windows(20, 4, segments=[(0, 7), (7, 20)])
    assert windows == [ChunkWindow(0, 4, 0), ChunkWindow(7, 11, 1), ChunkWindow(11, 15, 1),
                       ChunkWindow(15, 19, 1)]
    with pytest.raises(ValueError, match="outside"):
        chunk_windows(10, 4, segments=[(0, 12)])


def test_gather_pairs_frames_with_their_actions():
    actions = np.arange(12, dtype=np.float32).reshape(12, 1)
    frames = np.arange(12)[:, None, None, None] * np.ones((12, 2, 2, 3), dtype=np.uint8)
    windows = chunk_windows(12, 4)
    a, f = gather_chunks(actions, windows), gather_chunks(frames, windows)
    assert a.shape == (3, 4, 1) and f.shape == (3, 4, 2, 2, 3)
    np.testing.assert_array_equal(a[1, :, 0], [4, 5, 6, 7])
    np.testing.assert_array_equal(f[1, :, 0, 0, 0], [4, 5, 6, 7])


def test_trajectory_pooling_for_ablation():
    v, a = np.random.rand(5, 3, 8), np.random.rand(5, 4, 2)
    pv, pa = align_pairs(v, a, "trajectory")
    assert pv.shape == (1, 3, 8) and pa.shape == (1, 4, 2)
    np.testing.assert_allclose(pv[0], v.mean(0))
    cv, ca = align_pairs(v, a, "chunk")
    assert cv is v and ca is a
    with pytest.raises(ValueError, match="video chunks but 4 action chunks"):
        align_pairs(v, a[:4])
    with pytest.raises(ValueError, match="no chunks"):
        trajectory_pool(np.zeros((0, 3)))
