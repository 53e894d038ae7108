# Skill planner: FastAPI + uvicorn, rules backend offline, OpenAI-compatible LLMs by setting.
# Build from the repository root:  docker build -f docker/planner.Dockerfile -t w2a/planner:0.1.0 .

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
RUN groupadd --gid 10001 w2a && useradd --uid 10001 --gid w2a --no-create-home --shell /usr/sbin/nologin w2a
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    W2A_PLANNER_HOST=0.0.0.0 \
    W2A_PLANNER_PORT=8080
# the LLM API key (W2A_PLANNER_OPENAI_API_KEY) comes from a Secret at run time, never the image
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "http", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["w2a", "serve", "planner"]
