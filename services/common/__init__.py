"""Shared service plumbing: settings, auth, metrics, rollout log, proto stubs."""
