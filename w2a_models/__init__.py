"""w2a_models: the World2Act model core (pure torch/numpy, no servers).

Modules: ``adapters`` (video/action adapters), ``losses`` (InfoNCE + reconstruction),
``chunking`` (chunk-wise / trajectory-wise windows), ``skills`` (segmentation and alignment),
``residual`` (the trainable residual policy), ``checkpoints`` (safetensors + manifest),
``episodes`` (the on-disk episode format) and ``tasks`` (the simulator task catalogue).
"""

__version__ = "0.1.0"
