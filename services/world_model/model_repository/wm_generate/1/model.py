"""Triton entry point for wm_generate; the implementation lives in the w2a package."""

from services.world_model.triton_backend import GenerateModel as TritonPythonModel  # noqa: F401
