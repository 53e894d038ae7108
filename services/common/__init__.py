"""Shared service plumbing: the rollout log to Redis (and its disk spool), the stream appender,
the embedded Redis server and the generated proto stubs. Settings, auth and metrics live with
the service that owns them (``services/<service>/settings.py``, ``auth.py``, ``metrics.py``)."""
