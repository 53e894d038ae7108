"""w2a_models: the World2Act model core (pure torch/numpy, no servers).

Modules: ``adapters`` (video/action adapters), ``losses`` (InfoNCE + reconstruction),
``chunking`` (chunk-wise / trajectory-wise windows), ``skills`` (segmentation and alignment),
``segmentation`` (episodes on disk -> skills), ``plans`` / ``plan_rules`` (instruction -> skills),
``residual`` (the trainable residual policy), ``checkpoints`` (safetensors + manifest),
``episodes`` (the on-disk episode format), ``tasks`` (the simulator task catalogue),
``base_policy`` (the frozen base's protocol and TinyVLA) and ``world_model``.
"""

__version__ = "0.1.0"
