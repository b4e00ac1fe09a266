# The gateway's container image. Build: docker build -t llm-gateway .
# Run:   docker run -p 8080:8080 -v llm-gateway-data:/data --read-only --tmpfs /tmp llm-gateway
# Everything the gateway writes (the embedded store, the durable record log) is under /data,
# so the root filesystem can be read-only; mount a volume there.

ARG PYTHON_VERSION=3.11

# ---- build: the locked dependencies, then the project, into /app/.venv
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# uv from PyPI, as .ci/run installs it.
RUN python -m pip install --no-cache-dir --quiet uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY gateway ./gateway
COPY collectors ./collectors
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- runtime: the virtualenv on a slim Python, as a non-root user
FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="llm-gateway" \
      org.opencontainers.image.description="OpenAI-compatible LLM gateway that records every call, its cost and the end user's verdict into ClickHouse" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/llm-gateway/llm-gateway" \
      org.opencontainers.image.documentation="https://github.com/llm-gateway/llm-gateway#readme"
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home gateway \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    LLM_GATEWAY_DATA_DIR=/data/store
# The record log of a ClickHouse-backed gateway defaults to ./llm-gateway-log: /data too.
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["llm-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
