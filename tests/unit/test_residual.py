import pytest
import torch

from w2a_models.residual import ResidualConfig, ResidualPolicy


def _policy(**kw):
    torch.manual_seed(0)
    return ResidualPolicy(ResidualConfig(obs_dim=10, action_dim=4, chunk_size=8, **kw))


def test_residual_is_zero_at_init():
    policy = _policy()
    obs, base = torch.randn(5, 10), torch.randn(5, 8, 4)
    assert torch.equal(policy(obs, base), torch.zeros(5, 8, 4))
    assert torch.equal(policy.act(obs, base), base)


def test_residual_is_bounded_for_huge_inputs():
    policy = _policy(scale=0.3)
    with torch.no_grad():  # make the head non-trivial so the bound is actually exercised
        policy.head.weight.normal_(0, 10.0)
        policy.head.bias.normal_(0, 10.0)
    out = policy(torch.full((3, 10), 1e9), torch.full((3, 8, 4), -1e9))
    assert torch.isfinite(out).all()
    assert out.abs().max().item() <= 0.3 + 1e-6
    assert out.abs().max().item() > 0.1  # not trivially zero


def test_gradients_reach_the_residual_and_training_moves_it():
    policy = _policy()
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    obs, base = torch.randn(16, 10), torch.randn(16, 8, 4)
    target = torch.full((16, 8, 4), 0.1)
    loss = ((policy(obs, base) - target) ** 2).mean()
    loss.backward()
    assert policy.head.weight.grad.abs().sum().item() > 0
    opt.step()
    assert policy(obs, base).abs().sum().item() > 0


def test_residual_validates_inputs():
    policy = _policy()
    with pytest.raises(ValueError, match="obs_features"):
        policy(torch.randn(2, 9), torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="base_actions"):
        policy(torch.randn(2, 10), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="scale must be > 0"):
        ResidualConfig(obs_dim=4, scale=0)


def test_dims_mask_leaves_other_action_dimensions_to_the_base():
    policy = _policy(scale=0.5, dims=(0, 2))
    with torch.no_grad():
        policy.head.weight.normal_(0, 1.0)
        policy.head.bias.normal_(0, 1.0)
    out = policy(torch.randn(6, 10), torch.randn(6, 8, 4))
    assert torch.equal(out[..., [1, 3]], torch.zeros(6, 8, 2))
    assert out[..., [0, 2]].abs().min().item() > 0  # the allowed dimensions do move


def test_dims_survive_a_json_round_trip_and_stay_out_of_the_state_dict():
    import json
    from dataclasses import asdict

    config = ResidualConfig(obs_dim=10, action_dim=4, dims=(0, 1, 3))
    again = ResidualConfig(**json.loads(json.dumps(asdict(config))))
    assert again == config and again.dims == (0, 1, 3)
    # older checkpoints (no mask) load strictly into a masked module and vice versa
    assert set(ResidualPolicy(again).state_dict()) == set(_policy().state_dict())


def test_dims_are_validated():
    for bad in ((), (4,), (1, 1), (-1,)):
        with pytest.raises(ValueError, match="dims"):
            ResidualConfig(obs_dim=4, action_dim=4, dims=bad)
