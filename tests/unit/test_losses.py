import math

import pytest
import torch

from w2a_models.adapters import ActionAdapter, AdapterConfig, VideoAdapter
from w2a_models.losses import Stage1LossConfig, info_nce, reconstruction_loss, stage1_loss


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def test_info_nce_matches_hand_computation():
    # Unit vectors, so cosine similarity is the dot product.
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = torch.tensor([[0.6, 0.8], [-0.8, 0.6]])
    tau = 0.5
    sim = [[0.6, -0.8], [0.8, 0.6]]  # sim[i][j] = v_i . a_j
    v2a = (_ce([s / tau for s in sim[0]], 0) + _ce([s / tau for s in sim[1]], 1)) / 2
    a2v_rows = [[sim[0][0], sim[1][0]], [sim[0][1], sim[1][1]]]  # a_i . v_j
    a2v = (_ce([s / tau for s in a2v_rows[0]], 0) + _ce([s / tau for s in a2v_rows[1]], 1)) / 2
    expected = 0.5 * (v2a + a2v)
    assert info_nce(v, a, temperature=tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_normalises_embeddings():
    v = torch.randn(5, 8)
    a = torch.randn(5, 8)
    assert info_nce(v, a).item() == pytest.approx(info_nce(3.0 * v, 0.1 * a).item(), rel=1e-5)


def test_info_nce_is_symmetric():
    torch.manual_seed(0)
    v, a = torch.randn(6, 16), torch.randn(6, 16)
    assert info_nce(v, a).item() == pytest.approx(info_nce(a, v).item(), rel=1e-6)


def test_hand_computation_with_hard_negative():
    v = torch.tensor([[1.0, 0.0]])
    a = torch.tensor([[1.0, 0.0]])
    hard = torch.tensor([[[0.0, 1.0]]])  # orthogonal: similarity 0
    tau = 1.0
    one_way = _ce([1.0, 0.0], 0)
    got = info_nce(v, a, tau, hard_negative_actions=hard, hard_negative_videos=hard).item()
    assert got == pytest.approx(one_way, rel=1e-6)


def test_hard_negative_equal_to_positive_raises_loss():
    torch.manual_seed(1)
    v, a = torch.randn(4, 8), torch.randn(4, 8)
    base = info_nce(v, a)
    copies_a = a.unsqueeze(1).clone()
    copies_v = v.unsqueeze(1).clone()
    harder = info_nce(v, a, hard_negative_actions=copies_a, hard_negative_videos=copies_v)
    assert harder.item() > base.item() + 1e-3


def test_masked_hard_negatives_are_ignored():
    torch.manual_seed(2)
    v, a = torch.randn(4, 8), torch.randn(4, 8)
    hard = torch.randn(4, 3, 8)
    mask = torch.zeros(4, 3, dtype=torch.bool)
    masked = info_nce(v, a, hard_negative_actions=hard, hard_negative_videos=hard, hard_mask=mask)
    assert masked.item() == pytest.approx(info_nce(v, a).item(), rel=1e-6)


def test_info_nce_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="paired embeddings"):
        info_nce(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="hard negatives"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), hard_negative_actions=torch.randn(2, 1, 4))


def test_gradients_flow_to_both_adapters():
    torch.manual_seed(0)
    cfg = AdapterConfig(token_dim=32, chunk_size=4, action_dim=4)
    video, action = VideoAdapter(cfg), ActionAdapter(cfg)
    latents, actions = torch.randn(5, 3, 32), torch.randn(5, 4, 4)
    loss = info_nce(video(latents), action(actions))
    loss.backward()
    for module in (video, action):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum().item() for g in grads) > 0


def test_stage1_loss_combines_with_weights():
    torch.manual_seed(0)
    zv, za = torch.randn(4, 8), torch.randn(4, 8)
    acts, recon = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    cfg = Stage1LossConfig(temperature=0.1, contrastive_weight=2.0, reconstruction_weight=0.5)
    out = stage1_loss(zv, za, recon, acts, cfg)
    assert out.reconstruction.item() == pytest.approx(((recon - acts) ** 2).mean().item(), rel=1e-6)
    assert out.total.item() == pytest.approx(
        2.0 * info_nce(zv, za, 0.1).item() + 0.5 * out.reconstruction.item(), rel=1e-6)
    with pytest.raises(ValueError, match="shape mismatch"):
        reconstruction_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Stage1LossConfig(temperature=0)
