"""Training jobs: base-policy behaviour cloning, Stage 1 adapters, Stage 2 residual."""
