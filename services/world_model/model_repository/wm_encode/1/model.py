"""Triton entry point for wm_encode; the implementation lives in the w2a package."""

from services.world_model.triton_backend import EncodeModel as TritonPythonModel  # noqa: F401
