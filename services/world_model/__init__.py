"""The world-model service: a Triton model repository (wm_encode, wm_generate), its launcher and
the tritonclient-based WorldModelClient."""
