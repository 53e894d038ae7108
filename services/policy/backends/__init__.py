"""Remote base policies behind ``w2a_models.base_policy.BasePolicy`` (openpi today)."""
