"""Names of the Redis streams the services share (no imports: settings modules read them)."""

ROLLOUT_STREAM = "w2a:rollouts"  # rollout records, policy server -> trainer
DEAD_LETTER_STREAM = f"{ROLLOUT_STREAM}:dlq"  # records the trainer could not decode, kept for a look
