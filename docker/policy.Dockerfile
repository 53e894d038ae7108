# Policy server: gRPC a_base + a_residual for robot controllers (`w2a serve policy`).
# Build from the repository root:  docker build -f docker/policy.Dockerfile -t w2a/policy:0.1.0 .
# CPU torch by default; for a CUDA base pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128

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
    W2A_POLICY_HOST=0.0.0.0 \
    W2A_POLICY_PORT=50051 \
    W2A_POLICY_METRICS_PORT=9100 \
    W2A_POLICY_STATE_DIR=/var/lib/w2a/policy
# tokens, Redis URL and the base checkpoint come from the environment at run time (Secrets/ConfigMaps)
WORKDIR /var/lib/w2a
USER 10001:10001
EXPOSE 50051 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "grpc", "127.0.0.1:50051"]
ENTRYPOINT ["w2a", "serve", "policy"]
