# Trainer: Stage 2 consumer (`w2a train-residual`, the default command) and the Stage 1 job
# (`w2a train-adapters`, launched by torchrun in k8s/base/stage1-job.yaml).
# Build from the repository root:  docker build -f docker/trainer.Dockerfile -t w2a/trainer:0.1.0 .
# GPU nodes: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128

FROM python:3.11.11-slim-bookworm AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY w2a_models ./w2a_models
COPY services ./services
COPY packages ./packages
RUN pip install --extra-index-url "$TORCH_INDEX" ./packages/w2a-client .

FROM python:3.11.11-slim-bookworm AS runtime
RUN groupadd --gid 10001 w2a && useradd --uid 10001 --gid w2a --no-create-home --shell /usr/sbin/nologin w2a \
    && mkdir -p /var/lib/w2a && chown w2a:w2a /var/lib/w2a
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    W2A_TORCH_THREADS=1 \
    W2A_TRAINER_OUT=/var/lib/w2a/trainer \
    W2A_TRAINER_METRICS_HOST=0.0.0.0 \
    W2A_TRAINER_METRICS_PORT=9102
# the trainer token and Redis URL come from Secrets/ConfigMaps at run time
WORKDIR /var/lib/w2a
USER 10001:10001
EXPOSE 9102
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "http", "http://127.0.0.1:9102/metrics"]
ENTRYPOINT ["w2a"]
CMD ["train-residual"]
