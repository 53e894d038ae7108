"""One-off training and analysis jobs, run to completion by the CLI and ``w2a demo``: behaviour
cloning of the base (``base_bc``), the world model (``world_model_train``, ``world_model_eval``),
Stage 1 adapters (``stage1``, ``stage1_data``), link diagnostics (``diagnostics``) and the
report's charts (``plots``). The long-running Stage 2 service is ``services.trainer``."""
