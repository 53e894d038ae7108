import numpy as np
import pytest

from w2a_models.episodes import (
    Episode,
    EpisodeFormatError,
    EpisodeStore,
    find_episode_files,
    read_episode,
    write_episode,
)


def make_episode(T=12, task="pick-place-v3", seed=0):
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 255, (T, 8, 8, 3), dtype=np.uint8),
        actions=rng.standard_normal((T, 4)).astype(np.float32),
        state=rng.standard_normal((T, 18)).astype(np.float32),
        gripper=(np.arange(T) > T // 2).astype(np.float32),
        instruction="pick up the puck", task=task, success=True, seed=seed,
    )


def test_round_trip_and_index(tmp_path):
    store = EpisodeStore(tmp_path)
    ep = make_episode()
    store.add(ep)
    store.add(make_episode(seed=1))
    reopened = EpisodeStore(tmp_path)
    assert len(reopened) == 2
    back = next(iter(reopened))
    np.testing.assert_array_equal(back.frames, ep.frames)
    np.testing.assert_array_equal(back.actions, ep.actions)
    assert back.instruction == ep.instruction and back.task == ep.task and back.seed == 0
    assert find_episode_files(tmp_path) == reopened.paths()


def test_corrupted_file_names_the_file(tmp_path):
    path = write_episode(tmp_path / "ep.npz", make_episode())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError, match=r"ep.npz"):
        read_episode(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(EpisodeFormatError, match=r"junk.npz"):
        read_episode(tmp_path / "junk.npz")


def _write_raw(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_wrong_shapes_name_the_file(tmp_path):
    ep = make_episode()
    good = dict(frames=ep.frames, actions=ep.actions, state=ep.state, gripper=ep.gripper,
                instruction=np.array("x"), task=np.array("t"))
    cases = {
        "short_actions.npz": dict(good, actions=ep.actions[:-1]),
        "gray_frames.npz": dict(good, frames=ep.frames[..., 0]),
        "float_frames.npz": dict(good, frames=ep.frames.astype(np.float32)),
        "nan_actions.npz": dict(good, actions=np.full_like(ep.actions, np.nan)),
    }
    for name, arrays in cases.items():
        path = _write_raw(tmp_path / name, **arrays)
        with pytest.raises(EpisodeFormatError, match=name):
            read_episode(path)
    no_gripper = {k: v for k, v in good.items() if k != "gripper"}
    with pytest.raises(EpisodeFormatError, match=r"missing arrays.*gripper"):
        read_episode(_write_raw(tmp_path / "missing.npz", **no_gripper))


def test_pickled_objects_are_never_loaded(tmp_path):
    ep = make_episode()
    path = tmp_path / "evil.npz"
    np.savez(path, frames=ep.frames, actions=ep.actions, state=ep.state, gripper=ep.gripper,
             instruction=np.array([{"a": 1}], dtype=object), task=np.array("t"))
    with pytest.raises(EpisodeFormatError, match=r"evil.npz"):
        read_episode(path)


def test_bad_index_is_reported(tmp_path):
    (tmp_path / "index.json").write_text("[1, 2")
    with pytest.raises(EpisodeFormatError, match=r"index.json"):
        EpisodeStore(tmp_path)
    with pytest.raises(EpisodeFormatError, match="no such directory"):
        find_episode_files(tmp_path / "nope")


def test_the_state_scale_floor_keeps_a_barely_varying_dimension_from_exploding():
    """LIBERO's experts never rotate the hand: without a floor a 0.02 drift is ~10 standard deviations."""
    from w2a_models.base_policy.tiny_vla import TinyVLAConfig, TinyVLANet

    rng = np.random.default_rng(0)
    states = np.stack([rng.normal(0, 0.1, 500), rng.normal(1.0, 1e-3, 500)], axis=1).astype(np.float32)
    actions = rng.normal(0, 1, (500, 4)).astype(np.float32)
    net = TinyVLANet(TinyVLAConfig(state_dim=2))
    net.set_normalisation(states, actions)
    assert float(0.02 / net.state_std[1]) > 9
    net.set_normalisation(states, actions, state_std_floor=0.05)
    assert float(0.02 / net.state_std[1]) < 0.5
    assert float(net.state_std[0]) == pytest.approx(float(states[:, 0].std()) + 1e-3, rel=1e-4)  # untouched


def test_a_libero_task_name_does_not_make_a_subfolder(tmp_path):
    store = EpisodeStore(tmp_path)
    entry = store.add(make_episode(task="libero_object/pick_up_the_milk_and_place_it_in_the_basket", seed=3))
    assert entry.file == "libero_object__pick_up_the_milk_and_place_it_in_the_basket_000003.npz"
    assert (tmp_path / entry.file).is_file() and find_episode_files(tmp_path) == [tmp_path / entry.file]


def test_expert_actions_round_trip_and_must_match_the_actions(tmp_path):
    ep = make_episode()
    ep.expert_actions = ep.actions + 0.5
    back = read_episode(write_episode(tmp_path / "ep.npz", ep))
    np.testing.assert_array_equal(back.expert_actions, ep.expert_actions)
    assert read_episode(write_episode(tmp_path / "plain.npz", make_episode())).expert_actions is None
    with pytest.raises(EpisodeFormatError, match="expert_actions must match"):
        Episode(**{**make_episode().__dict__, "expert_actions": np.zeros((3, 4), np.float32)})


def test_bc_clones_the_expert_labels_only_when_asked_and_where_they_exist():
    from services.jobs.base_bc import BCConfig, BCDataset

    class Encoder:
        def encode(self, texts):
            return np.zeros((len(texts), 384), np.float32)

    labelled, plain = make_episode(seed=0), make_episode(seed=1)
    labelled.expert_actions = labelled.actions + 1.0
    executed = BCDataset.from_episodes([labelled, plain], 4, Encoder())
    expert = BCDataset.from_episodes([labelled, plain], 4, Encoder(), labels="expert")
    np.testing.assert_allclose(expert.targets[:12] - executed.targets[:12], 1.0, atol=1e-6)
    np.testing.assert_array_equal(expert.targets[12:], executed.targets[12:])  # no labels: the actions
    with pytest.raises(ValueError, match="labels must be"):
        BCConfig(labels="teacher")


def test_random_shift_moves_whole_images_and_repeats_the_edges():
    import torch

    from services.jobs.base_bc import random_shift

    images = torch.arange(4 * 6 * 6 * 3).reshape(4, 6, 6, 3).to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    assert random_shift(images, 0, generator) is images
    shifted = random_shift(images, 2, generator)
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    for original, moved in zip(images, shifted):  # every output pixel comes from the same image
        assert set(moved.flatten().tolist()) <= set(original.flatten().tolist())
    assert not torch.equal(shifted, images)
    # the centre pixel moved by at most 2 rows and columns
    rows, cols = np.nonzero((images[0, :, :, 0] == shifted[0, 3, 3, 0]).numpy())
    assert abs(int(rows[0]) - 3) <= 2 and abs(int(cols[0]) - 3) <= 2
