"""The Dockerfile: one image for every worker, the worker kind given as its command."""

from __future__ import annotations

from pathlib import Path

from agentstream import __version__
from agentstream.deploy.files import header
from agentstream.settings import (
    DEFAULT_GATEWAY_PORT,
    DEPLOY_METRICS_PORT,
    METRICS_PORT_ENV,
    SCHEMAS_DIR_ENV,
    STATE_DIR_ENV,
    TOPOLOGY_ENV,
)

IMAGE = f"agentstream:{__version__}"  # what compose builds; push it where your cluster pulls from
PYTHON_IMAGE = "python:3.12-slim"
APP_ROOT = "/app"  # the app folder and schemas, read-only for the worker
STATE_ROOT = "/var/lib/agentstream"  # RocksDB stores: caches of the changelogs, rebuilt on a new host
UID = 10001
# The providers' SDKs, trace export and the HTTP gateway (pyproject extras): one image runs every command.
EXTRAS = ("openai", "anthropic", "otel", "gateway")
# What the Dockerfile copies from its build context besides the app folder: the image is
# built from a checkout of agentstream (COPY lines below).
CHECKOUT_PATHS = ("pyproject.toml", "README.md", "services", "schemas")


def missing_from_context(context: Path) -> list[str]:
    """The paths the Dockerfile copies that the build context ``context`` lacks."""
    return [path for path in CHECKOUT_PATHS if not (context / path).exists()]


def image_paths(app_path: str) -> dict[str, str]:
    """Where the image holds the app's topology and the schemas (``app_path`` is the topology
    file relative to the build context)."""
    return {"topology": f"{APP_ROOT}/{app_path}", "schemas": f"{APP_ROOT}/schemas"}


def dockerfile(app_path: str, source: str) -> str:
    app_dir = app_path.rsplit("/", 1)[0] if "/" in app_path else "."
    paths = image_paths(app_path)
    return header("compose", source) + f"""\
# Build stage: wheels of agentstream, its dependencies, both model SDKs (a deployment calls
# real models), the OpenTelemetry SDK (traces go out once OTEL_EXPORTER_OTLP_ENDPOINT is
# set) and the gateway's FastAPI and uvicorn; anything compiled is compiled here.
FROM {PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services/ services/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[{",".join(EXTRAS)}]"

# Run stage: the wheels, the Avro schemas and the app folder, as a user without a shell.
FROM {PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    {METRICS_PORT_ENV}={DEPLOY_METRICS_PORT} \\
    {TOPOLOGY_ENV}={paths["topology"]} \\
    {SCHEMAS_DIR_ENV}={paths["schemas"]} \\
    {STATE_DIR_ENV}={STATE_ROOT}
RUN useradd --system --uid {UID} --no-create-home --shell /usr/sbin/nologin agentstream \\
    && mkdir -p {STATE_ROOT} && chown {UID} {STATE_ROOT}
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR {APP_ROOT}
COPY schemas/ schemas/
COPY {app_dir}/ {app_dir}/
USER {UID}
# A worker's metrics and probes; the gateway's API (`agentstream gateway`).
EXPOSE {DEPLOY_METRICS_PORT} {DEFAULT_GATEWAY_PORT}
# The worker's own probe on its metrics port (exit 0/1); restoring a large state may take a while.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 CMD ["agentstream", "worker", "--check"]
ENTRYPOINT ["agentstream"]
CMD ["worker", "router"]
"""


def dockerignore(source: str) -> str:
    """What the build never reads: kept out of the context sent to the builder (a .venv alone
    is hundreds of MB)."""
    return header("compose", source) + "\n".join(
        [".git/", ".venv/", ".state/", ".kafka/", "**/__pycache__/", "**/*.pyc", "bench/", "tests/", "k8s/", "deploy/"]
    ) + "\n"
