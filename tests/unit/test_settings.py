"""Settings on one path: shared settings, and settings objects handed to child processes."""

import pytest
from pydantic import ValidationError

from services.common.settings import SharedSettings, settings_env
from services.trainer.settings import TrainerSettings
from services.world_model.settings import WorldModelSettings


def test_a_service_redis_url_wins_over_the_shared_one(monkeypatch):
    monkeypatch.setenv("W2A_REDIS_URL", "redis://shared:6379")
    monkeypatch.setenv("W2A_TORCH_THREADS", "3")
    shared = SharedSettings()
    assert shared.torch_threads == 3
    assert shared.redis_for(None) == "redis://shared:6379"
    assert shared.redis_for("redis://own:6379") == "redis://own:6379"


def test_settings_env_reads_back_as_the_same_settings(monkeypatch):
    given = {"batch_size": 8, "base_negative": True, "out": "runs/x", "mode": "expert_corrected",
             "local_noise": 0.05, "policy_token": "secret", "residual_dims": [0, 1, 2, 6]}
    trainer = TrainerSettings.model_validate(given)
    env = settings_env(trainer)
    assert set(env) == {f"W2A_TRAINER_{k.upper()}" for k in given}  # only what was given travels
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = TrainerSettings()
    for name in given:
        assert getattr(child, name) == getattr(trainer, name), name
    assert child.trainer_config().residual_dims == (0, 1, 2, 6)
    monkeypatch.delenv("W2A_TRAINER_RESIDUAL_DIMS")
    assert TrainerSettings().trainer_config().residual_dims is None  # the default moves every dimension


def test_bad_values_fail_where_the_settings_are_built():
    with pytest.raises(ValidationError, match="batch_size"):
        TrainerSettings.model_validate({"batch_size": 1})
    with pytest.raises(ValidationError, match="features"):
        WorldModelSettings.model_validate({"features": "pixels"})


def test_each_base_backend_owns_its_settings_from_nested_variables_or_json(monkeypatch):
    from services.policy.base_settings import Gr00tBase, OpenpiBase, TinyVlaBase
    from services.policy.settings import PolicySettings

    auth = {"robot_tokens": ["r"], "trainer_token": "t"}
    assert PolicySettings(**auth).base == TinyVlaBase()
    monkeypatch.setenv("W2A_POLICY_BASE__BACKEND", "openpi")
    monkeypatch.setenv("W2A_POLICY_BASE__HOST", "10.0.0.5")
    monkeypatch.setenv("W2A_POLICY_BASE__CAMERAS", '{"wrist": [96, 128]}')
    base = PolicySettings(**auth).base
    assert isinstance(base, OpenpiBase) and base.host == "10.0.0.5" and base.port == 8000
    assert base.camera_specs()[0].name == "wrist" and base.camera_specs()[0].width == 128
    monkeypatch.delenv("W2A_POLICY_BASE__BACKEND")
    monkeypatch.delenv("W2A_POLICY_BASE__HOST")
    monkeypatch.delenv("W2A_POLICY_BASE__CAMERAS")
    monkeypatch.setenv("W2A_POLICY_BASE", '{"backend": "gr00t"}')
    base = PolicySettings(**auth).base
    assert isinstance(base, Gr00tBase) and (base.port, base.chunk_size) == (5555, 16)  # gr00t's own defaults
    monkeypatch.setenv("W2A_POLICY_BASE", '{"backend": "gr00t", "action_key": "x"}')
    with pytest.raises(ValidationError, match="action_key"):  # an openpi field is not a gr00t one
        PolicySettings(**auth)
    monkeypatch.setenv("W2A_POLICY_BASE", '{"backend": "pi-zero"}')
    with pytest.raises(ValidationError, match="tiny-vla"):  # the valid backends are listed
        PolicySettings(**auth)


def test_the_flat_base_names_of_earlier_versions_are_refused_with_the_new_name(monkeypatch):
    from services.policy.settings import PolicySettings

    monkeypatch.setenv("W2A_POLICY_REMOTE_HOST", "10.0.0.5")
    with pytest.raises(ValidationError, match="W2A_POLICY_REMOTE_HOST -> W2A_POLICY_BASE__HOST"):
        PolicySettings(robot_tokens=["r"], trainer_token="t")


def test_a_checkpoint_alone_means_the_built_in_tinyvla(monkeypatch, tmp_path):
    from services.policy.base_settings import TinyVlaBase
    from services.policy.settings import PolicySettings

    monkeypatch.setenv("W2A_POLICY_BASE__CHECKPOINT", str(tmp_path))
    assert PolicySettings(robot_tokens=["r"], trainer_token="t").base == TinyVlaBase(checkpoint=tmp_path)
