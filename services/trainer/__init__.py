"""The Stage 2 trainer service (``w2a train-residual``): consume rollout records from Redis
(``rollout_stream``), compute World2Act targets (``targets``, ``stage2``), update the residual
(``residual_trainer``, ``replay``), checkpoint, ack, and push weights (``pusher``) while the policy
server keeps serving. The offline jobs (base, world model, Stage 1) are ``services.jobs``."""
