import numpy as np
import torch

from services.jobs.stage1 import Stage1Config, hard_negative_index, train_stage1, trajectory_pairs
from services.jobs.stage1_data import ChunkSet


def synthetic_chunks(demos=12, per_demo=6, seed=0) -> ChunkSet:
    """Learnable pairing: each chunk's video latent is a fixed random map of its actions plus
    noise; two skills, chunks of one skill share their mean action (so only details tell apart)."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((8 * 4, 2 * 16)).astype(np.float32)
    lat, act, skill, demo = [], [], [], []
    for d in range(demos):
        for c in range(per_demo):
            s = c % 2
            a = rng.normal(0.5 if s else -0.5, 0.5, (8, 4)).astype(np.float32)
            v = (a.reshape(-1) @ proj).reshape(2, 16) + 0.05 * rng.standard_normal((2, 16))
            lat.append(v.astype(np.float32))
            act.append(a)
            skill.append(s)
            demo.append(d)
    return ChunkSet(np.stack(lat), np.stack(act), np.array(skill), np.array(demo),
                    ["t: reach", "t: push"], [f"d{i}" for i in range(demos)])


def test_hard_negatives_are_same_skill_other_demo():
    chunks = synthetic_chunks()
    rows = np.arange(10)
    index, mask = hard_negative_index(chunks.skill, chunks.demo, rows, 4, np.random.default_rng(0))
    assert mask.all()
    for r, negs in zip(rows, index):
        assert np.all(chunks.skill[negs] == chunks.skill[r])
        assert np.all(chunks.demo[negs] != chunks.demo[r])
    # a skill with no other demo gets padded (masked) slots
    lonely = ChunkSet(chunks.latents[:2], chunks.actions[:2], np.array([0, 1]), np.array([0, 0]), [], [])
    _, mask = hard_negative_index(lonely.skill, lonely.demo, np.arange(2), 3, np.random.default_rng(0))
    assert not mask.any()


def test_stage1_learns_the_pairing_far_above_chance(tmp_path):
    torch.manual_seed(0)
    chunks = synthetic_chunks()
    result = train_stage1(chunks, tmp_path, Stage1Config(steps=300, batch_size=32, holdout_fraction=0.25),
                          progress=False)
    assert result["v2a_top1_all"] > 5 * result["chance_top1_all"]
    assert result["v2a_top1_same_skill"] > 2 * result["chance_top1_same_skill"]
    assert (tmp_path / "stage1_loss.png").exists() and (tmp_path / "checkpoint" / "manifest.json").exists()


def test_trajectory_pairs_pool_each_demo():
    chunks = synthetic_chunks(demos=3)
    pairs = trajectory_pairs(chunks)
    assert len(pairs) == 3 and pairs.latents.shape[1:] == chunks.latents.shape[1:]
    np.testing.assert_allclose(pairs.actions[0], chunks.actions[chunks.demo == 0].mean(0), atol=1e-6)


def test_same_index_negatives_come_from_the_same_phase_of_the_skill():
    import numpy as np

    from services.jobs.stage1 import chunk_positions, hard_negative_index

    # demos 0, 1, 2; skill 0 has chunks at positions 0..3 in every demo, then skill 1
    demo = np.repeat([0, 1, 2], 6)
    skill = np.tile([0, 0, 0, 0, 1, 1], 3)
    position = chunk_positions(skill, demo)
    np.testing.assert_array_equal(position[:6], [0, 1, 2, 3, 0, 1])
    rows = np.array([2, 10])  # demo 0 skill 0 pos 2; demo 1 skill 1 pos 0
    index, mask = hard_negative_index(skill, demo, rows, 2, np.random.default_rng(0), position)
    assert mask.all()
    assert set(demo[index[0]]) == {1, 2} and set(position[index[0]]) == {2} and set(skill[index[0]]) == {0}
    assert set(position[index[1]]) == {0} and set(skill[index[1]]) == {1} and 1 not in demo[index[1]]


def test_perturbed_negatives_teach_the_adapters_the_local_action_space():
    """A positive among its own noisy copies is easy to rank only if the adapters read actions
    finely; the extra term must lower that local loss and raise local retrieval."""
    import torch

    from services.jobs.stage1 import perturbed_negative_loss
    from w2a_models.adapters import AdapterConfig, Stage1Adapters

    torch.manual_seed(0)
    model = Stage1Adapters(AdapterConfig(token_dim=32, embed_dim=16, video_hidden=32, action_hidden=64))
    actions = torch.rand(64, 8, 4) * 2 - 1
    latents = torch.cat([actions.flatten(1)[:, None].expand(-1, 2, -1)], dim=-1)  # video shows the chunk
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = perturbed_negative_loss(model, model.video(latents), model.action(actions), actions, 8, 0.3, 0.07)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]
