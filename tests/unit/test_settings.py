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
             "local_noise": 0.05, "policy_token": "secret"}
    trainer = TrainerSettings.model_validate(given)
    env = settings_env(trainer)
    assert set(env) == {f"W2A_TRAINER_{k.upper()}" for k in given}  # only what was given travels
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = TrainerSettings()
    for name in given:
        assert getattr(child, name) == getattr(trainer, name), name


def test_bad_values_fail_where_the_settings_are_built():
    with pytest.raises(ValidationError, match="batch_size"):
        TrainerSettings.model_validate({"batch_size": 1})
    with pytest.raises(ValidationError, match="features"):
        WorldModelSettings.model_validate({"features": "pixels"})
