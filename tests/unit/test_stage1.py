import numpy as np
import torch

from services.trainer.stage1 import Stage1Config, hard_negative_index, train_stage1, trajectory_pairs
from services.trainer.stage1_data import ChunkSet


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
            lat.append(v.astype(np.float32)); act.append(a); skill.append(s); demo.append(d)
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
