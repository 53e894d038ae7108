import numpy as np
import pytest
import torch

from services.common.rollout_log import logged_image_entry, pack_record, unpack_record
from services.common.rollout_record import StepRecord, decode_record
from services.trainer.stage2 import ORACLE_MODES, Stage2Config, decode_step, freeze, stage2_loss
from w2a_models.adapters import AdapterConfig, Stage1Adapters
from w2a_models.residual import ResidualConfig, ResidualPolicy


def _setup(seed=0):
    torch.manual_seed(seed)
    adapters = freeze(Stage1Adapters(AdapterConfig(token_dim=16, action_dim=4, chunk_size=8)))
    residual = ResidualPolicy(ResidualConfig(obs_dim=10, action_dim=4, chunk_size=8, hidden=32, scale=0.5))
    features, base = torch.randn(8, 10), torch.randn(8, 8, 4) * 0.1
    video = torch.randn(8, 2, 16)
    return adapters, residual, features, base, video


def test_gradients_reach_only_the_residual_and_the_loss_falls():
    adapters, residual, features, base, video = _setup()
    before = {k: v.clone() for k, v in adapters.state_dict().items()}
    opt = torch.optim.Adam(residual.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss, stats = stage2_loss(adapters, residual, features, base, video, Stage2Config(residual_l2=0.0))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in adapters.parameters())
        assert residual.head.weight.grad is not None
        opt.step()
        losses.append(stats["contrastive"])
    assert losses[-1] < losses[0] - 0.1
    for k, v in adapters.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert stats["residual_abs_max"] <= 0.5 + 1e-6  # bounded by the residual's scale


def test_needs_in_batch_negatives():
    adapters, residual, features, base, video = _setup()
    with pytest.raises(ValueError, match="at least 2 chunks"):
        stage2_loss(adapters, residual, features[:1], base[:1], video[:1])


def _decode(entry_id, wire, camera, mode="world_model"):
    """What the trainer does with a stream entry: typed record, then a sample (or None)."""
    return decode_step(entry_id, decode_record(wire, oracle=mode in ORACLE_MODES), camera, mode)


def test_decode_step_from_a_logged_record():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    record = StepRecord(robot_id="r", episode_id="e", step=3, skill="push the puck",
                        base=rng.standard_normal((8, 4)).astype(np.float32),
                        features=rng.standard_normal(10).astype(np.float32),
                        images={"corner": logged_image_entry(frame)})
    wire = unpack_record(pack_record(record.to_wire()))
    sample = _decode("1-0", wire, "corner")
    assert sample.skill == "push the puck" and sample.episode == "r/e"
    np.testing.assert_array_equal(sample.frame, frame)
    np.testing.assert_allclose(sample.base, record.base)
    assert _decode("2-0", {**wire, "base_only": True}, "corner") is None
    assert _decode("3-0", {"kind": "episode_end"}, "corner") is None
    assert _decode("4-0", wire, "wrist") is None  # not the world model's camera


def test_evaluation_steps_are_never_training_samples():
    record = StepRecord(robot_id="r", episode_id="e", step=0, evaluation=True, base=np.zeros((8, 4), np.float32),
                        features=np.zeros(10, np.float32),
                        images={"corner": logged_image_entry(np.zeros((1, 1, 3), np.uint8))})
    assert _decode("1-0", record.to_wire(), "corner") is None


class _Untouchable(dict):
    """An oracle field that fails the test the moment anything reads it."""

    def _fail(self, *a, **k):
        raise AssertionError("the oracle was read outside an oracle mode")

    __getitem__ = get = __contains__ = keys = items = values = __iter__ = _fail


def _oracle_record(rng):
    """A step record in the first wire format (bare float32 bytes), with the simulator's oracle."""
    expert = rng.standard_normal((8, 4)).astype(np.float32)
    future = rng.integers(0, 255, (9, 8, 8, 3), dtype=np.uint8)
    record = {"kind": "step", "robot_id": "r", "episode_id": "e", "skill": "push", "chunk": [8, 4],
              "base": rng.standard_normal((8, 4)).astype(np.float32).tobytes(),
              "features": rng.standard_normal(10).astype(np.float32).tobytes(),
              "images": {"front": {"shape": [8, 8, 3], "data": future[0].tobytes()}},
              "oracle": {"expert_actions": expert.tobytes(),
                         "future": {"shape": list(future.shape), "data": future.tobytes()}}}
    return record, expert, future


def test_the_oracle_is_never_read_outside_an_oracle_mode():
    record, expert, future = _oracle_record(np.random.default_rng(1))
    poisoned = {**record, "oracle": _Untouchable(record["oracle"])}
    sample = _decode("1-0", poisoned, "")  # world_model mode, the only camera
    assert sample is not None and sample.expert is None and sample.future is None
    with pytest.raises(AssertionError, match="oracle was read"):
        _decode("1-0", poisoned, "", mode="expert_corrected")
    s = _decode("1-0", record, "", mode="expert_corrected")
    np.testing.assert_array_equal(s.expert, expert)
    s = _decode("1-0", record, "", mode="real_future")
    np.testing.assert_array_equal(s.future, future)
    # an oracle mode skips steps that carry no oracle (robots without a teacher)
    bare = {k: v for k, v in record.items() if k != "oracle"}
    assert _decode("1-0", bare, "", mode="expert_corrected") is None
    assert _decode("1-0", bare, "", mode="real_future") is None


def test_expert_residual_loss_moves_the_residual_toward_the_expert_correction():
    from services.trainer.stage2 import expert_residual_loss
    from w2a_models.residual import ResidualConfig, ResidualPolicy

    torch.manual_seed(0)
    residual = ResidualPolicy(ResidualConfig(obs_dim=6, action_dim=4, chunk_size=8, hidden=32, scale=1.0))
    features, base = torch.randn(16, 6), torch.rand(16, 8, 4) * 3 - 1.5  # some base actions out of range
    expert = torch.rand(16, 8, 4) * 2 - 1
    target = expert - base.clamp(-1, 1)  # what the residual must add to the clipped base action
    opt = torch.optim.Adam(residual.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss, stats = expert_residual_loss(residual, features, base, expert)
        first = first if first is not None else stats["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        res = residual(features, base)
    assert stats["loss"] < 0.2 * first
    cos = torch.nn.functional.cosine_similarity(res.flatten(), target.flatten(), dim=0)
    assert cos > 0.9


def test_local_negatives_turn_the_gradient_toward_the_positive():
    """Constructed case: the video embeds the expert chunk a*, B_a is the identity, and the base
    is off by the same offset in every row (rows are similar chunks of one skill, as in a
    trainer batch). In-batch negatives alone make rows distinguishable; with a_base and noisy
    copies as local negatives the gradient on a_final points toward a*."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    m, a, b = 4, 3, 8
    centre = torch.randn(1, m, a)
    expert = centre + 0.05 * torch.randn(b, m, a)
    offset = 0.5 * torch.randn(1, m, a)
    base = expert - offset

    class Delta(torch.nn.Module):  # the residual's output as a free tensor: its grad is dL/da_final
        def __init__(self):
            super().__init__()
            self.delta = torch.nn.Parameter(torch.zeros(b, m, a))

        def forward(self, features, base_actions):
            return self.delta

    adapters = SimpleNamespace(video=lambda lat: lat[:, 0], action=lambda act: act.flatten(1))
    video = expert.flatten(1)[:, None]

    def cosine(config):
        residual = Delta()
        loss, _ = stage2_loss(adapters, residual, torch.zeros(b, 2), base, video, config)
        loss.backward()
        want = (expert - base).flatten(1)
        return torch.nn.functional.cosine_similarity(-residual.delta.grad.flatten(1), want, dim=1).mean().item()

    in_batch = cosine(Stage2Config(residual_l2=0.0))
    local = cosine(Stage2Config(residual_l2=0.0, local_negatives=8, local_noise=0.1, base_negative=True))
    assert local > 0.3 and local > in_batch + 0.2, (in_batch, local)


def test_logged_images_decode_by_their_encoding_and_refuse_what_they_cannot_be():
    import io

    import pytest
    from PIL import Image

    from services.common.rollout_log import logged_image, logged_image_entry

    frame = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(logged_image(logged_image_entry(frame)), frame)
    legacy = {"shape": [16, 16, 3], "data": frame.tobytes()}  # records written before "encoding"
    np.testing.assert_array_equal(logged_image(legacy), frame)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    np.testing.assert_array_equal(logged_image(logged_image_entry(frame, ("png", buf.getvalue()))), frame)
    with pytest.raises(ValueError, match="not raw, jpeg or png"):
        logged_image({"shape": [16, 16, 3], "encoding": "webp", "data": b""})
    with pytest.raises(ValueError, match="the record says"):
        logged_image({"shape": [8, 8, 3], "encoding": "png", "data": buf.getvalue()})
