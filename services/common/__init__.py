"""Shared service plumbing: the declared rollout record (``rollout_record``) and its log to Redis
with a disk spool (``rollout_log``, ``stream_appender``), the stream names (``streams``), the
settings every service shares (``settings``) and the embedded Redis server. Each service's own
settings, auth and metrics live with it (``services/<service>/settings.py``, ``auth.py``,
``metrics.py``); the gRPC stubs are in the robot client package (``w2a_client.proto``)."""
