"""Typed settings of a worker process, from arguments and the environment.

Every environment variable agentstream reads is named here, in one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentstream.errors import ConfigurationError

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
# Which broker agentstream starts when KAFKA_BOOTSTRAP_SERVERS is unset: "kafka" (Apache
# Kafka from its Maven artifacts) or "tansu" (the embedded broker). Default: tansu for
# `agentstream dev`/`demo`, kafka for the tests where java and mvn exist.
BROKER_ENV = "AGENTSTREAM_BROKER"
# librdkafka security settings from the environment: KAFKA_<NAME> with NAME lowercased and
# "_" read as "." (KAFKA_SASL_MECHANISM -> sasl.mechanism), for names under these prefixes.
KAFKA_CLIENT_ENV_PREFIX = "KAFKA_"
KAFKA_CLIENT_PASSTHROUGH = ("security.", "sasl.", "ssl.")
# Where the Apache Kafka jars are cached (default ~/.cache/agentstream).
KAFKA_CACHE_ENV = "AGENTSTREAM_KAFKA_CACHE"
STATE_DIR_ENV = "AGENTSTREAM_STATE_DIR"
TOPOLOGY_ENV = "AGENTSTREAM_TOPOLOGY"
PREFIX_ENV = "AGENTSTREAM_PREFIX"
LOG_LEVEL_ENV = "AGENTSTREAM_LOG_LEVEL"
# "text" (default) or "json": one JSON object per line with the record's context (telemetry/logs.py).
LOG_FORMAT_ENV = "AGENTSTREAM_LOG_FORMAT"
# The values of variables whose names end so (and of the files their *_FILE variants name)
# are replaced by [REDACTED] in every log line (telemetry/redact.py).
SECRET_ENV_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
# OpenTelemetry's standard variables: traces are exported over OTLP/HTTP only when one of
# these is set (telemetry/tracing.py); the SDK reads the other OTEL_* variables itself
# (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_SCHEDULE_DELAY, ...).
OTEL_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# A worker's service.name in its traces: agentstream-<worker> (router, supervisor, a specialist type).
SERVICE_NAME_PREFIX = "agentstream-"
MAX_INFLIGHT_ENV = "AGENTSTREAM_MAX_INFLIGHT"
# Consumer group protocol of the workers: "auto" (default: KIP-848 on Apache Kafka, classic
# on Tansu), "classic" or "consumer" (KIP-848, Apache Kafka 4).
GROUP_PROTOCOL_ENV = "AGENTSTREAM_GROUP_PROTOCOL"
# How long (ms) a worker's consumer lets the broker hold a fetch that finds no record.
# Unset: 500 on Apache Kafka (it answers a waiting fetch as soon as a record arrives, so a long
# wait costs no latency and an idle consumer asks twice a second instead of 50 times), 20 on
# Tansu (it holds a fetch for about half the wait even when records are there).
FETCH_WAIT_ENV = "AGENTSTREAM_FETCH_WAIT_MS"
# How long (s) an input partition of a worker goes without a record before the worker leaves
# it out of its fetches until a check (four times a second) finds its end moved: the first
# record after such a quiet spell waits ~0.25 s longer per hop on average (bench/idle.py).
# Unset: 30 where the fetch wait is 50 ms or less (Tansu: an idle fetch costs the broker a
# pass over the partitions it names), never with a longer one (Apache Kafka holds an idle
# fetch). 0: never (runtime/idle_partitions.py).
QUIET_PAUSE_ENV = "AGENTSTREAM_QUIET_PAUSE_S"
# How long (ms, fractions allowed) a worker's producer waits to batch records before it
# sends them (librdkafka's linger.ms). Unset: clients.DEFAULT_LINGER_MS (2). 0 sends at once:
# at a low rate every hop is faster (a task makes ~7 acknowledged writes in a row, each
# waiting the linger), under a burst every record costs more CPU (bench/RESULTS.md "Session 13").
LINGER_ENV = "AGENTSTREAM_LINGER_MS"
# Seconds between a worker's librdkafka statistics (whole seconds; unset or 0: none, the
# default). Set, the worker counts the requests its producer and consumer sent to the
# brokers, by request type, in agentstream_kafka_requests_total
# (telemetry/kafka_requests.py; bench/RESULTS.md "Session 46").
KAFKA_STATS_ENV = "AGENTSTREAM_KAFKA_STATS_S"
# The worker's HTTP port for /metrics, /healthz and /readyz (telemetry/server.py), also what
# `agentstream worker --check` asks. Unset or 0: no port (the default, so the five workers
# of `agentstream dev` on one host do not fight over one); the generated deploy files set it.
METRICS_PORT_ENV = "AGENTSTREAM_METRICS_PORT"
# Seconds between a worker's periodic checkpoints (default 1): its table writes reach their
# changelogs and its source offsets are committed (runtime/checkpointing.py). Longer: fewer
# commits, and more records read again after a kill -9. A long expiry walk that ran out of
# its batch resumes at this pace too (runtime/retention.py).
COMMIT_INTERVAL_ENV = "AGENTSTREAM_COMMIT_INTERVAL_S"
# Seconds without a completed poll after which /healthz answers 503 (default 30).
HEALTH_STALL_ENV = "AGENTSTREAM_HEALTH_STALL_S"
# Seconds a checkpoint waits for the broker to acknowledge its outputs and changelog writes
# before the worker stops without committing (default 30): a broker failover longer than
# this stops the workers that wrote to it, for their orchestrator to start again.
FLUSH_TIMEOUT_ENV = "AGENTSTREAM_FLUSH_TIMEOUT_S"
# The tenants file (tenancy/config.py): tenants, their hashed API keys, roles, limits and the
# JWT settings. Set: the router enforces the tenants' limits (README "Tenants"), and does not
# start when the file is missing; unset: no tenancy.
TENANTS_ENV = "AGENTSTREAM_TENANTS"
# Another directory of .avsc files (default: the repository's schemas/).
SCHEMAS_DIR_ENV = "AGENTSTREAM_SCHEMAS_DIR"
# Where cached downloads go when AGENTSTREAM_KAFKA_CACHE is unset (the XDG standard name).
XDG_CACHE_HOME_ENV = "XDG_CACHE_HOME"

# The HTTP gateway (gateway/settings.py): its port (default 8080) and the address it binds.
GATEWAY_PORT_ENV = "AGENTSTREAM_GATEWAY_PORT"
GATEWAY_HOST_ENV = "AGENTSTREAM_GATEWAY_HOST"
DEFAULT_GATEWAY_PORT = 8080

# Models (models/config.py, models/*_provider.py).
MODEL_ENV = "AGENTSTREAM_MODEL"  # provider:model for every agent type, over the config
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"  # the SDKs' standard names, so existing setups work
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
ANTHROPIC_API_KEY_ENV = "ANTHROPIC_API_KEY"
ANTHROPIC_BASE_URL_ENV = "ANTHROPIC_BASE_URL"
# A secret may come from a file instead: OPENAI_API_KEY_FILE=/run/secrets/openai holds the key.
SECRET_FILE_SUFFIX = "_FILE"

# The scripted model, for tests and benchmarks (specialist/model_chains.py).
SCRIPTED_LATENCY_ENV = "AGENTSTREAM_SCRIPTED_LATENCY"  # seconds, or a range "0.5-2"
SCRIPTED_CALL_LOG_ENV = "AGENTSTREAM_SCRIPTED_CALL_LOG"  # a file path: one line per model call
SCRIPTED_FAILURE_RATE_ENV = "AGENTSTREAM_SCRIPTED_FAILURE_RATE"  # 0..1: share of calls failing with a 500
SCRIPTED_FAULTS_ENV = "AGENTSTREAM_SCRIPTED_FAULTS"  # "1": honour the fault marks in task inputs (models/call_log.py)

DEFAULT_STATE_DIR = Path(".state")
# The port every generated deploy file (Dockerfile, compose, k8s) gives AGENTSTREAM_METRICS_PORT.
DEPLOY_METRICS_PORT = 9400
# Paths of the probes on the metrics port.
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"

# The WorkerSettings field each variable sets (a bad value is reported by its variable's name).
_FIELD_ENV = {
    "bootstrap": BOOTSTRAP_ENV,
    "state_dir": STATE_DIR_ENV,
    "topology_path": TOPOLOGY_ENV,
    "prefix": PREFIX_ENV,
    "max_inflight": MAX_INFLIGHT_ENV,
    "commit_interval_s": COMMIT_INTERVAL_ENV,
    "group_protocol": GROUP_PROTOCOL_ENV,
    "fetch_wait_ms": FETCH_WAIT_ENV,
    "quiet_pause_s": QUIET_PAUSE_ENV,
    "linger_ms": LINGER_ENV,
    "kafka_stats_s": KAFKA_STATS_ENV,
    "metrics_port": METRICS_PORT_ENV,
    "health_stall_s": HEALTH_STALL_ENV,
    "flush_timeout_s": FLUSH_TIMEOUT_ENV,
    "tenants_path": TENANTS_ENV,
}


def state_dir_from_env(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The one rule for every command: ``explicit`` (a --state-dir), else
    ``AGENTSTREAM_STATE_DIR``, else ``.state``."""
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    value = env.get(STATE_DIR_ENV, "").strip()
    return Path(value) if value else DEFAULT_STATE_DIR


class WorkerSettings(BaseModel):
    """What every worker needs; unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str
    state_dir: Path = DEFAULT_STATE_DIR
    topology_path: Path | None = None
    prefix: str | None = None
    commit_interval_s: float = Field(default=1.0, gt=0)
    max_input_bytes: int = Field(default=32_768, gt=0)
    max_inflight: int = Field(default=256, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    group_protocol: Literal["auto", "classic", "consumer"] = "auto"
    fetch_wait_ms: int | None = Field(default=None, ge=1, le=60_000)  # None: by broker (FETCH_WAIT_ENV)
    quiet_pause_s: float | None = Field(default=None, ge=0, le=86_400)  # None: by fetch wait (QUIET_PAUSE_ENV)
    linger_ms: float | None = Field(default=None, ge=0, le=60_000)  # None: clients.DEFAULT_LINGER_MS (LINGER_ENV)
    kafka_stats_s: int = Field(default=0, ge=0, le=86_400)  # 0: no librdkafka statistics (KAFKA_STATS_ENV)
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no HTTP port
    flush_timeout_s: float = Field(default=30.0, gt=0, le=300)  # librdkafka gives up on a record after 300 s anyway
    # A checkpoint's flush runs between two polls and may take up to flush_timeout_s on a slow
    # broker before it fails on its own: a shorter stall limit would restart workers that are
    # merely waiting for the broker (checked below).
    health_stall_s: float = Field(default=30.0, gt=0)
    tenants_path: Path | None = None  # the tenants file: the router enforces its limits (None: no tenancy)

    @model_validator(mode="after")
    def _stall_outlasts_the_flush(self) -> WorkerSettings:
        # Checked where the flush timeout is set: a short stall limit alone, accepted before
        # the timeout could be set, stays accepted.
        if "flush_timeout_s" in self.model_fields_set and self.health_stall_s < self.flush_timeout_s:
            raise ValueError(
                f"{HEALTH_STALL_ENV}={self.health_stall_s:g} is shorter than {FLUSH_TIMEOUT_ENV}={self.flush_timeout_s:g}: "
                f"a worker waiting for the broker would be restarted as stuck; set {HEALTH_STALL_ENV} to at least "
                f"{self.flush_timeout_s:g}")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> WorkerSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get(BOOTSTRAP_ENV):
            values["bootstrap"] = env[BOOTSTRAP_ENV]
        if env.get(STATE_DIR_ENV):
            values["state_dir"] = Path(env[STATE_DIR_ENV])
        if env.get(TOPOLOGY_ENV):
            values["topology_path"] = Path(env[TOPOLOGY_ENV])
        if env.get(PREFIX_ENV):
            values["prefix"] = env[PREFIX_ENV]
        if env.get(TENANTS_ENV, "").strip():
            values["tenants_path"] = Path(env[TENANTS_ENV].strip())
        if env.get(MAX_INFLIGHT_ENV):
            values["max_inflight"] = env[MAX_INFLIGHT_ENV]
        for field, name in (("metrics_port", METRICS_PORT_ENV), ("health_stall_s", HEALTH_STALL_ENV),
                            ("flush_timeout_s", FLUSH_TIMEOUT_ENV), ("commit_interval_s", COMMIT_INTERVAL_ENV),
                            ("fetch_wait_ms", FETCH_WAIT_ENV), ("linger_ms", LINGER_ENV),
                            ("quiet_pause_s", QUIET_PAUSE_ENV), ("kafka_stats_s", KAFKA_STATS_ENV)):
            if env.get(name, "").strip():
                values[field] = env[name].strip()
        if env.get(GROUP_PROTOCOL_ENV):
            values["group_protocol"] = env[GROUP_PROTOCOL_ENV].strip().lower()
        from_environment = {name for name in values if name not in overrides or overrides[name] is None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                if field in from_environment:
                    raise ConfigurationError(
                        f"{_FIELD_ENV[field]}={env[_FIELD_ENV[field]]!r} is not valid: {error['msg']}."
                    ) from None
                if not field:  # a check of several fields (the validators above): its message names them
                    raise ConfigurationError(str(error["msg"]).removeprefix("Value error, ") + ".") from None
            raise
