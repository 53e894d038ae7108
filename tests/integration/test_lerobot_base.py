"""A local LeRobot checkpoint as the frozen base.

The logic around LeRobot (camera mapping, the raw batch handed to LeRobot's preprocessor, the
pre -> predict_action_chunk -> post order, chunk fitting, serving through a real gRPC server) is
tested with a stand-in for the loaded policy. The round trip through a real LeRobot checkpoint
runs where ``lerobot`` is installed and is skipped cleanly elsewhere (it does not co-install with
this machine's torch; see pyproject's ``lerobot`` extra).
"""

import numpy as np
import pytest
import torch

from services.policy.backends.lerobot_base import (
    LeRobotBase,
    LeRobotBaseConfig,
    LeRobotNotInstalled,
    LoadedPolicy,
    camera_map,
    load_lerobot_policy,
)
from services.policy.server import PolicyServer
from tests.policy_helpers import ROBOT, SIZE, ServerThread, settings
from w2a_client.client import PolicyClient
from w2a_models.base_policy import BaseUnavailable, ObservationBatch

KEY = "observation.images.front"


class ChunkPolicy(torch.nn.Module):
    """Stands in for a LeRobot PreTrainedPolicy: a deterministic function of image, state, task."""

    def __init__(self, horizon=10, action_dim=4):
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.seen = []

    def predict_action_chunk(self, batch):
        self.seen.append(batch)
        image = batch[KEY].mean(dim=(1, 2, 3))  # [B]
        state = batch["observation.state"][:, : self.action_dim]  # [B, A]
        steps = torch.arange(self.horizon, dtype=torch.float32)[None, :, None] / self.horizon
        task = torch.tensor([len(t) for t in batch["task"]], dtype=torch.float32)[:, None, None] / 100
        return state[:, None] + image[:, None, None] + steps + task


def preprocess(batch):  # the normaliser a real checkpoint saves: here, a fixed state scale
    return {**batch, "observation.state": batch["observation.state"] * 0.5}


def postprocess(actions):  # the unnormaliser
    return actions * 2.0 + 1.0


def loaded(horizon=10, action_dim=4, image_shapes=None):
    return LoadedPolicy(policy=ChunkPolicy(horizon, action_dim), preprocess=preprocess,
                        postprocess=postprocess, image_shapes=image_shapes or {KEY: (3, SIZE, SIZE)},
                        state_dim=18, action_dim=action_dim, horizon=horizon, policy_type="act")


def expected(batch: ObservationBatch, horizon=10, action_dim=4):
    image = batch.images["front"].astype(np.float32).mean(axis=(1, 2, 3)) / 255.0
    state = batch.state[:, :action_dim] * 0.5
    steps = np.arange(horizon, dtype=np.float32)[None, :, None] / horizon
    task = np.array([len(t) for t in batch.instructions], np.float32)[:, None, None] / 100
    return (state[:, None] + image[:, None, None] + steps + task) * 2.0 + 1.0


def batch_of(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return ObservationBatch(images={"front": rng.integers(0, 255, (n, SIZE, SIZE, 3), dtype=np.uint8)},
                            state=rng.standard_normal((n, 18)).astype(np.float32),
                            instructions=["fold the towel", "stack", "open the drawer"][:n])


def test_camera_names_come_from_the_policy_features():
    shapes = {"observation.images.front": (3, 96, 128), "observation.images.wrist": (3, 64, 64)}
    assert camera_map(shapes, {}) == {"front": "observation.images.front", "wrist": "observation.images.wrist"}
    assert camera_map(shapes, {"corner": "observation.images.front", "hand": "observation.images.wrist"}) == {
        "corner": "observation.images.front", "hand": "observation.images.wrist"}
    with pytest.raises(ValueError, match="unfed"):
        camera_map(shapes, {"corner": "observation.images.front"})
    with pytest.raises(ValueError, match="unknown"):
        camera_map(shapes, {"a": "observation.images.front", "b": "observation.images.wrist",
                            "c": "observation.images.top"})
    with pytest.raises(ValueError, match="no camera"):
        camera_map({}, {})


def test_spec_and_actions_follow_the_checkpoint():
    base = LeRobotBase(LeRobotBaseConfig(checkpoint="unused", chunk_size=8), loaded=loaded())
    assert base.spec.name == "lerobot-act"
    assert (base.spec.action_dim, base.spec.chunk_size, base.spec.state_dim) == (4, 8, 18)
    assert [(c.name, c.height, c.width) for c in base.spec.cameras] == [("front", SIZE, SIZE)]
    batch = batch_of()
    out = base.predict(batch)
    np.testing.assert_allclose(out.actions, expected(batch)[:, :8], atol=1e-5)
    assert out.features.shape == (3, base.spec.feature_dim)
    raw = base.loaded.policy.seen[-1]  # what LeRobot's preprocessor received, after it ran
    assert raw[KEY].shape == (3, 3, SIZE, SIZE) and float(raw[KEY].max()) <= 1.0
    assert raw["task"] == batch.instructions


def test_horizon_limits_and_nonfinite_actions():
    with pytest.raises(ValueError, match="exceeds the policy's horizon"):
        LeRobotBase(LeRobotBaseConfig(checkpoint="unused", chunk_size=20), loaded=loaded())
    lp = loaded()
    lp.postprocess = lambda a: a * float("nan")
    with pytest.raises(BaseUnavailable, match="LeRobot act"):
        LeRobotBase(LeRobotBaseConfig(checkpoint="unused"), loaded=lp).predict(batch_of(1))


def test_missing_package_or_checkpoint_is_a_clear_error(tmp_path):
    try:
        import lerobot  # noqa: F401
    except ImportError:
        with pytest.raises(LeRobotNotInstalled, match="pip install 'w2a\\[lerobot\\]'"):
            load_lerobot_policy(tmp_path)
    else:
        with pytest.raises(FileNotFoundError, match=r"no config.json"):
            load_lerobot_policy(tmp_path)


def test_served_through_the_policy_server(tmp_path):
    base = LeRobotBase(LeRobotBaseConfig(checkpoint="unused", chunk_size=8), loaded=loaded())
    batch = batch_of(1)
    with ServerThread(PolicyServer(settings(tmp_path, action_low=[-50.0] * 4, action_high=[50.0] * 4), base)) as srv, \
            PolicyClient(srv.target, ROBOT, timeout=10) as robot:
        info = robot.info()
        assert info.base_policy == "lerobot-act" and info.chunk_size == 8
        reply = robot.act("r1", {"front": batch.images["front"][0]}, batch.state[0], batch.instructions[0],
                          base_only=True)
    np.testing.assert_allclose(reply.base, expected(batch)[0, :8], atol=1e-4)


def test_a_real_lerobot_checkpoint_round_trip(tmp_path):
    """Build a tiny ACT policy with LeRobot, save it with its processors, load it back through the
    backend and compare with LeRobot's own pipeline."""
    pytest.importorskip("lerobot", reason="lerobot is not installed (optional extra w2a[lerobot])")
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    cfg = ACTConfig(
        input_features={KEY: PolicyFeature(FeatureType.VISUAL, (3, SIZE, SIZE)),
                        "observation.state": PolicyFeature(FeatureType.STATE, (18,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))},
        chunk_size=10, n_action_steps=10, dim_model=32, n_heads=2, dim_feedforward=64,
        n_encoder_layers=1, n_decoder_layers=1, use_vae=False, pretrained_backbone_weights=None,
        device="cpu")
    stats = {KEY: {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.2)},
             "observation.state": {"mean": torch.zeros(18), "std": torch.ones(18)},
             "action": {"mean": torch.zeros(4), "std": torch.full((4,), 2.0)}}
    torch.manual_seed(0)
    policy = ACTPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    policy.save_pretrained(tmp_path)
    pre.save_pretrained(tmp_path)
    post.save_pretrained(tmp_path)

    base = LeRobotBase(LeRobotBaseConfig(checkpoint=tmp_path, chunk_size=8))
    batch = batch_of(2)
    out = base.predict(batch)
    with torch.inference_mode():
        want = post(policy.eval().predict_action_chunk(pre(base.lerobot_batch(batch)))).numpy()
    np.testing.assert_allclose(out.actions, want[:, :8], atol=1e-4)


def test_settings_select_the_lerobot_base(tmp_path):
    from services.policy.app import load_base

    with pytest.raises(ValueError, match="LeRobot pretrained_model directory"):
        load_base(settings(tmp_path, base={"backend": "lerobot"}))
    with pytest.raises((LeRobotNotInstalled, FileNotFoundError)):
        load_base(settings(tmp_path, base={"backend": "lerobot", "checkpoint": tmp_path}))
