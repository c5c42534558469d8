"""The wiring: topics, agent types, consumer groups, retry tiers and table changelogs.

Loaded once at start-up from an app folder's ``topology.yaml`` (``$AGENTSTREAM_TOPOLOGY``,
default the repository's ``examples/support_desk``); every topic and group name a
service uses comes from here. The models are frozen and forbid unknown keys, so a
misspelt key fails loading with a message naming the key, its place and the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from agentstream.approvals.policy import ApprovalPolicy
from agentstream.controls.settings import ControlSettings
from agentstream.errors import ConfigurationError
from agentstream.models.config import ModelSettings
from agentstream.rollout.config import CANARY, CANDIDATE_TOPIC_SUFFIX, SHADOW, VARIANT_SUFFIX, CandidateSettings
from agentstream.settings import TOPOLOGY_ENV
from agentstream.transcripts import TRANSCRIPTS
from agentstream.yaml_mapping import yaml_mapping
from agentstream.topology_sections import (  # re-exported: the sections are part of the topology's API
    MAX_REVISIONS_LIMIT as MAX_REVISIONS_LIMIT,
    RoutingSettings as RoutingSettings,
    ScalingSettings as ScalingSettings,
    SessionSettings as SessionSettings,
    SupervisionSettings as SupervisionSettings,
    TierSignals as TierSignals,
    _Frozen,
    rule_expression as rule_expression,
)

APP_TOPOLOGY_FILE = "topology.yaml"  # the topology of an app folder
# The app every command runs unless AGENTSTREAM_TOPOLOGY or --app names another: the
# support desk of the repository (a checkout; an installed wheel has no examples/).
DEFAULT_APP = Path(__file__).resolve().parents[2] / "examples" / "support_desk"
DEFAULT_PATH = DEFAULT_APP / APP_TOPOLOGY_FILE
# Topic names whose logical name holds this placeholder exist once per specialist type.
TYPE_PLACEHOLDER = "{type}"
# The topics a human's answer travels on: requests, decisions, and cancels of waiting tasks.
ESCALATION_TOPICS = ("approvals", "approval_decisions", "control")
# What Kafka accepts in a topic or group name; the embedded broker accepts anything, so check here.
_LEGAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

CleanupPolicy = Literal["delete", "compact", "compact,delete"]
AgentKind = Literal["router", "specialist", "supervisor"]


@dataclass(frozen=True)
class TopicSpec:
    """One physical topic as it should exist on the cluster."""

    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)
    # Keyed by session_id and read together with other such topics: the partition count
    # must match theirs exactly, so more partitions is as wrong as fewer.
    per_session: bool = True

    @property
    def cleanup_policy(self) -> str:
        return self.config.get("cleanup.policy", "delete")


class TopicSettings(_Frozen):
    suffix: str
    partitions: PositiveInt | None = None  # None: the topology's default_partitions
    per_session: bool = True
    cleanup_policy: CleanupPolicy = Field("delete", alias="cleanup.policy")
    retention_ms: int | None = Field(None, alias="retention.ms", ge=-1)  # -1: keep forever

    def kafka_config(self) -> dict[str, str]:
        config: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


class ChangelogSettings(_Frozen):
    """Compaction of every table changelog (``<group>.<table>.changelog``), always compacted.

    Set in the topology file's ``changelogs`` section (why each value: the comments there);
    tests override them with ``load_topology(changelogs=...)`` to watch compaction happen.
    """

    min_compaction_lag_ms: int = Field(alias="min.compaction.lag.ms", ge=0)
    max_compaction_lag_ms: int = Field(alias="max.compaction.lag.ms", ge=1)
    segment_ms: int = Field(alias="segment.ms", ge=1)
    delete_retention_ms: int = Field(alias="delete.retention.ms", ge=0)
    min_cleanable_dirty_ratio: float = Field(alias="min.cleanable.dirty.ratio", ge=0, le=1)

    @model_validator(mode="after")
    def _lags_ordered(self) -> ChangelogSettings:
        if self.max_compaction_lag_ms < self.min_compaction_lag_ms:
            raise ValueError(
                f"max.compaction.lag.ms {self.max_compaction_lag_ms} is below min.compaction.lag.ms "
                f"{self.min_compaction_lag_ms}; Kafka refuses such a topic: raise the max or lower the min"
            )
        return self

    def kafka_config(self) -> dict[str, str]:
        # Keyed by the Kafka names (the aliases), values as Kafka's config strings.
        values = self.model_dump(by_alias=True)
        return {"cleanup.policy": "compact", **{key: str(value) for key, value in values.items()}}


class DedupeSettings(_Frozen):
    """Retention of the dedupe tables (router ``dedupe``, supervisor ``dedupe``, specialist
    done markers): an entry is deleted this long after it was written."""

    retention_s: PositiveInt = 7 * 24 * 3600


class AgentType(_Frozen):
    kind: AgentKind
    group: str  # suffix; the consumer group is "<prefix>.<group>"
    input: str  # logical topic name
    tables: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()  # allowlist of tool names
    tools_modules: tuple[str, ...] = ()  # this type's own tools modules, besides the app's (tools/loader.py)
    max_steps: PositiveInt | None = None
    model: ModelSettings | None = None  # specialists: model per tier, fallbacks, limits, budget
    controls: ControlSettings | None = None  # retries, breaker, quotas, cache around model calls
    routing: RoutingSettings | None = None  # routers only: rules, default, optional classifier model
    supervision: SupervisionSettings | None = None  # supervisors only: optional review by a model
    scaling: ScalingSettings = ScalingSettings()  # the generated KEDA ScaledObject (deploy/keda.py)
    approvals: dict[str, ApprovalPolicy] = {}  # specialists: tool -> when a human approves a call (approvals/policy.py)
    candidate: CandidateSettings | None = None  # specialists: a second version, canary or shadow (rollout/)

    @model_validator(mode="after")
    def _specialist_fields(self) -> AgentType:
        if self.kind == "specialist" and self.max_steps is None:
            raise ValueError("a specialist needs max_steps (the bound on its tool-using loop)")
        if self.kind != "specialist" and (self.tools or self.tools_modules or self.max_steps is not None or self.model or self.controls):
            raise ValueError(f"tools, tools_modules, max_steps, model and controls apply to specialists only, not to a {self.kind}")
        if self.kind != "router" and self.routing is not None:
            raise ValueError(f"routing applies to the router only, not to a {self.kind}")
        if self.kind != "supervisor" and self.supervision is not None:
            raise ValueError(f"supervision applies to the supervisor only, not to a {self.kind}")
        if self.kind != "specialist" and self.candidate is not None:
            raise ValueError(f"candidate applies to specialists only, not to a {self.kind}")
        if self.supervision is not None:
            _check_single_call_model("supervision.model", self.supervision.model)
        _check_approvals(self.kind, self.approvals, self.tools)
        unlisted = sorted({rule.call for rule in self.model.scripted} - set(self.tools)) if self.model else []
        if unlisted:
            raise ValueError(
                f"model.scripted calls {unlisted}, which are not in the agent's tools {list(self.tools)}; "
                "add them to tools or fix the rules' call"
            )
        return self


class RetryPolicy(_Frozen):
    delays_s: tuple[PositiveFloat, ...]  # delay of tier 1, 2, ... in seconds
    max_attempts: PositiveInt  # the first try included

    @model_validator(mode="after")
    def _enough_tiers(self) -> RetryPolicy:
        if self.max_attempts > len(self.delays_s) + 1:
            raise ValueError(
                f"max_attempts {self.max_attempts} needs {self.max_attempts - 1} retry tiers "
                f"but delays_s declares {len(self.delays_s)}"
            )
        return self

    @property
    def tiers(self) -> int:
        """How many retry topics each stage input has."""
        return self.max_attempts - 1


class Topology(_Frozen):
    prefix: str
    default_partitions: PositiveInt = 6
    replication_factor: PositiveInt = 1
    topics: dict[str, TopicSettings]
    changelogs: ChangelogSettings
    agents: dict[str, AgentType]
    retry: RetryPolicy
    dedupe: DedupeSettings = DedupeSettings()
    sessions: SessionSettings = SessionSettings()
    # Modules whose @tool functions every specialist may be allowed (tools/loader.py): a
    # .py file of the app folder, or a dotted module name.
    tools_modules: tuple[str, ...] = ()

    # The folder of the topology file: relative prompt and tools paths are read from it.
    _app_dir: Path | None = PrivateAttr(default=None)

    # Resolved at validation: logical name -> spec, with the {type} topics expanded.
    _topics: dict[str, TopicSpec] = PrivateAttr(default_factory=dict)
    # The candidates' workers ("<type>.candidate", "<type>.shadow") as agent types of their own.
    _variants: dict[str, AgentType] = PrivateAttr(default_factory=dict)
    _variant_of: dict[str, tuple[str, str]] = PrivateAttr(default_factory=dict)  # worker -> (live type, mode)

    @model_validator(mode="after")
    def _resolve(self) -> Topology:
        self._topics = {logical: self._spec(s) for logical, s in self._expanded()}
        self._resolve_candidates()
        self._check_agents()
        self._check_scaling()
        self._check_routing()
        self._check_co_partitioning()
        self._check_names()
        self._check_dedupe_retention()
        return self

    def _expanded(self) -> list[tuple[str, TopicSettings]]:
        out: list[tuple[str, TopicSettings]] = []
        for logical, settings in self.topics.items():
            if (TYPE_PLACEHOLDER in logical) != (TYPE_PLACEHOLDER in settings.suffix):
                raise ValueError(
                    f"topic {logical!r}: use {TYPE_PLACEHOLDER} in both the name and its suffix, or in neither"
                )
            if TYPE_PLACEHOLDER not in logical:
                out.append((logical, settings))
                continue
            for kind in self.specialist_types:
                suffix = settings.suffix.replace(TYPE_PLACEHOLDER, kind)
                out.append((logical.replace(TYPE_PLACEHOLDER, kind), settings.model_copy(update={"suffix": suffix})))
        return out

    def _spec(self, settings: TopicSettings) -> TopicSpec:
        return TopicSpec(
            name=f"{self.prefix}.{settings.suffix}",
            partitions=settings.partitions or self.default_partitions,
            replication=self.replication_factor,
            config=settings.kafka_config(),
            per_session=settings.per_session,
        )

    def _resolve_candidates(self) -> None:
        """A canary reads its own topic (rollout/__init__.py says why); a shadow reads the
        live runs' transcripts (rollout/shadow.py says why). Both need the rollout topics."""
        for name, agent in self.agents.items():
            if agent.candidate is None:
                continue
            needed = ["rollout"] + (["shadow_results", TRANSCRIPTS] if agent.candidate.mode == SHADOW else [])
            missing = [logical for logical in needed if logical not in self._topics]
            if missing:
                raise ValueError(
                    f"agent {name!r} declares a candidate, which needs the topics {missing}; declare them under "
                    "topics (README 'Rolling out a new agent version' shows them)"
                )
            variant = _variant(name, agent, agent.candidate)
            if agent.candidate.mode == CANARY:
                source = self._topics[agent.input]
                self._topics[variant.input] = _like(source, source.name + CANDIDATE_TOPIC_SUFFIX)
            self._variants[variant_name(name, agent.candidate.mode)] = variant
            self._variant_of[variant_name(name, agent.candidate.mode)] = (name, agent.candidate.mode)

    def _check_agents(self) -> None:
        for name, agent in self.agents.items():
            if agent.input not in self._topics:
                raise ValueError(
                    f"agent {name!r} reads topic {agent.input!r}, which is not declared; "
                    f"declared topics are {sorted(self._topics)}"
                )
            missing = [t for t in ESCALATION_TOPICS if t not in self._topics]
            if agent.supervision is not None and agent.supervision.escalate == "approval" and missing:
                raise ValueError(
                    f"agent {name!r} has supervision.escalate: approval, but the topics a human's answer "
                    f"travels on are not declared: {missing}; declare them (see examples/support_desk) "
                    "or set escalate: result"
                )

    def _check_scaling(self) -> None:
        for name, agent in self.agents.items():
            partitions = self._topics[agent.input].partitions
            scaling = agent.scaling
            if scaling.max_replicas is not None and scaling.max_replicas > partitions:
                raise ValueError(
                    f"agent {name!r}: scaling.max_replicas {scaling.max_replicas} is above the {partitions} partitions "
                    f"of its input {agent.input!r}; a replica beyond one per partition gets none: use at most {partitions}"
                )
            if scaling.min_replicas > (scaling.max_replicas or partitions):
                raise ValueError(
                    f"agent {name!r}: scaling.min_replicas {scaling.min_replicas} is above its max "
                    f"{scaling.max_replicas or partitions}; lower min_replicas"
                )

    def max_replicas(self, agent_name: str) -> int:
        """Replicas one agent type may scale to: its scaling.max_replicas, else its input's partitions."""
        agent = self.agent(agent_name)
        return agent.scaling.max_replicas or self.topic_spec(agent.input).partitions

    def _check_routing(self) -> None:
        specialists = self.specialist_types
        for name, agent in self.agents.items():
            if agent.kind != "router":
                continue
            if agent.routing is None:
                raise ValueError(
                    f"agent {name!r} needs a routing section with at least its default specialist, "
                    f"e.g. routing: {{default: {(specialists or ['<specialist>'])[0]}}}; specialists are {specialists}"
                )
            unknown = sorted({t for t in agent.routing.named_types() if t not in specialists})
            if unknown:
                raise ValueError(
                    f"agent {name!r}: routing names {unknown}, which are not specialists here; "
                    f"use one of {specialists} or declare the specialist under agents"
                )
            for agent_type, patterns in agent.routing.rules.items():
                _check_rules(name, f"routing.rules.{agent_type}", patterns)
            for kind, patterns in agent.routing.tiers.groups().items():
                _check_rules(name, f"routing.tiers.{kind}", patterns)
            _check_single_call_model(f"agent {name!r}: routing.model", agent.routing.model)

    def _check_co_partitioning(self) -> None:
        by_count: dict[int, list[str]] = {}
        for logical, spec in self._topics.items():
            if spec.per_session:
                by_count.setdefault(spec.partitions, []).append(logical)
        if len(by_count) > 1:
            found = "; ".join(f"{n} partitions: {names}" for n, names in sorted(by_count.items()))
            raise ValueError(
                "every per-session topic must have the same partition count, so one session's events "
                f"share a partition number in each (co-partitioning); found {found}"
            )

    def _check_names(self) -> None:
        names = [spec.name for spec in self.all_topics()] + [self.group(a) for a in self.workers]
        bad = [n for n in names if not _LEGAL_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"illegal topic or group names {bad}: use 1-249 of A-Z a-z 0-9 . _ -")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"names used twice: {dupes}")

    def _check_dedupe_retention(self) -> None:
        # A replay of an input topic must still find the marker of every task it repeats.
        retention_ms = self.dedupe.retention_s * 1000
        longer = {
            logical: self.topic_retention_ms(logical)
            for logical in self._stage_inputs()
            if (self.topic_retention_ms(logical) or 0) > retention_ms
        }
        if longer:
            raise ValueError(
                f"dedupe.retention_s {self.dedupe.retention_s} is shorter than the retention of the input "
                f"topics {longer} (ms): a replay of them would process old tasks again; raise it to at "
                f"least {max(longer.values()) // 1000}"
            )

    def topic_retention_ms(self, logical: str) -> int | None:
        """``retention.ms`` of a declared topic (None: the broker's default)."""
        raw = self._topics[logical].config.get("retention.ms")
        return None if raw is None else int(raw)

    # -- accessors -------------------------------------------------------------------

    def escalation(self, agent: str) -> str | None:
        """What the supervisor ``agent``'s escalate verdict does, ``approval`` or ``result``
        (None: it has no supervision); unset in the file, ``approval`` when the topics a
        human's answer travels on are declared."""
        supervision = self.agent(agent).supervision
        if supervision is None:
            return None
        if supervision.escalate is not None:
            return supervision.escalate
        return "approval" if all(self.declares(t) for t in ESCALATION_TOPICS) else "result"

    def declares(self, logical: str) -> bool:
        """Whether the topology has the topic ``logical`` (optional ones: approvals, control ...)."""
        return logical in self._topics

    def topic(self, logical: str) -> str:
        """The physical name of a declared topic, e.g. ``tasks`` -> ``agents.tasks.v1``."""
        return self.topic_spec(logical).name

    def topic_spec(self, logical: str) -> TopicSpec:
        try:
            return self._topics[logical]
        except KeyError:
            raise ConfigurationError(f"Unknown topic {logical!r}; valid topics are {sorted(self._topics)}") from None

    def agent(self, name: str) -> AgentType:
        """An agent type, or a candidate's worker (``<type>.candidate``, ``<type>.shadow``)."""
        try:
            return self.agents[name] if name in self.agents else self._variants[name]
        except KeyError:
            raise ConfigurationError(
                f"Unknown agent type {name!r}; valid agent types are {sorted(self.workers)}"
            ) from None

    @property
    def workers(self) -> dict[str, AgentType]:
        """Every consumer group's agent type: the declared ones and the candidates' workers."""
        return {**self.agents, **self._variants}

    def live_of(self, worker: str) -> tuple[str, str | None]:
        """The agent type a worker runs a version of, and its mode (None: the live version)."""
        self.agent(worker)  # an unknown name is refused, naming the valid ones
        return self._variant_of.get(worker, (worker, None))

    def candidate_of(self, agent_type: str) -> CandidateSettings | None:
        return self.agent(agent_type).candidate

    def candidate_topic(self, agent_type: str) -> str:
        """The physical input topic of ``agent_type``'s canary."""
        return self.topic(self.agent(variant_name(agent_type, CANARY)).input)

    def version_topic(self, agent_type: str, variant: str | None) -> str:
        """Where a task goes back to the version that ran it (a revision): the canary's
        topic for ``variant`` "candidate" while the topology has the canary, else the live one."""
        if variant == VARIANT_SUFFIX[CANARY] and variant_name(agent_type, CANARY) in self._variants:
            return self.candidate_topic(agent_type)
        return self.specialist_topic(agent_type)

    def app_dir(self) -> Path | None:
        """The folder of the topology file it was loaded from (None: built in code)."""
        return self._app_dir

    def tools_modules_of(self, agent_type: str) -> tuple[str, ...]:
        """The app's tools modules, then the agent type's own."""
        return (*self.tools_modules, *self.agent(agent_type).tools_modules)

    @property
    def specialist_types(self) -> list[str]:
        return [name for name, agent in self.agents.items() if agent.kind == "specialist"]

    def specialist_topic(self, agent_type: str) -> str:
        if agent_type not in self.specialist_types:
            raise ConfigurationError(f"Unknown specialist type {agent_type!r}; valid types are {self.specialist_types}")
        return self.topic(self.agents[agent_type].input)

    def group(self, agent_name: str) -> str:
        return f"{self.prefix}.{self.agent(agent_name).group}"

    def changelog_topic(self, agent_name: str, table: str) -> str:
        agent = self.agent(agent_name)
        if table not in agent.tables:
            raise ConfigurationError(
                f"Agent type {agent_name!r} has no table {table!r}; its tables are {list(agent.tables)}"
            )
        return f"{self.group(agent_name)}.{table}.changelog"

    @property
    def changelog_config(self) -> dict[str, str]:
        """The Kafka config of every table changelog: compact, with the ``changelogs`` settings."""
        return self.changelogs.kafka_config()

    def retry_topics(self, logical_input: str) -> list[str]:
        """``<input topic>.retry-1`` .. ``retry-N`` for a topic some agent type reads."""
        inputs = self._stage_inputs()
        if logical_input not in inputs:
            raise ConfigurationError(
                f"Topic {logical_input!r} is no agent's input, so it has no retry tiers; inputs are {inputs}"
            )
        base = self.topic(logical_input)
        return [f"{base}.retry-{tier}" for tier in range(1, self.retry.tiers + 1)]

    def all_topics(self) -> list[TopicSpec]:
        """Every topic the system needs: declared, retry tiers, table changelogs."""
        specs = list(self._topics.values())
        for logical in self._stage_inputs():
            source = self._topics[logical]
            specs += [_like(source, name) for name in self.retry_topics(logical)]
        for name, agent in self.workers.items():
            # A changelog partition restores the store of the same input partition.
            source = self._topics[agent.input]
            specs += [_like(source, self.changelog_topic(name, t), self.changelog_config) for t in agent.tables]
        return specs

    def _stage_inputs(self) -> list[str]:
        """The topics the stages read, each with retry tiers and marker retention to match:
        not a shadow's transcripts (a failed shadow run is not retried, and a shadow run of
        an old transcript again reaches nobody)."""
        shadows = {name for name, (_, mode) in self._variant_of.items() if mode == SHADOW}
        return list(dict.fromkeys(agent.input for name, agent in self.workers.items() if name not in shadows))


def variant_name(agent_type: str, mode: str) -> str:
    """The worker name of ``agent_type``'s candidate in ``mode``, e.g. ``billing.candidate``."""
    return f"{agent_type}.{VARIANT_SUFFIX[mode]}"


def _variant(name: str, live: AgentType, candidate: CandidateSettings) -> AgentType:
    """The candidate as an agent type: the live one's settings with the candidate's own,
    a group of its own and its own input (a canary's topic, a shadow the transcripts). A
    shadow asks no human: its side-effecting calls are answered from the live run's record
    or refused (rollout/dry_run.py), so it has no approvals."""
    suffix = VARIANT_SUFFIX[candidate.mode]
    tools = candidate.tools if candidate.tools is not None else live.tools
    approvals = {} if candidate.mode == SHADOW else {t: p for t, p in live.approvals.items() if t in tools}
    inherited = {key: getattr(live, key) for key in AgentType.model_fields if key != "candidate"}
    fields = {**inherited, **candidate.overrides(), "group": f"{live.group}.{suffix}", "approvals": approvals}
    if candidate.mode == CANARY:
        fields["input"] = live.input + CANDIDATE_TOPIC_SUFFIX
    else:  # a shadow runs each live run's task again once its transcript is written
        fields["input"] = TRANSCRIPTS
    try:
        return AgentType.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(f"agent {name!r}: its candidate is not a valid specialist: {exc}") from None


def _check_approvals(kind: str, approvals: Mapping[str, ApprovalPolicy], tools: tuple[str, ...]) -> None:
    if approvals and kind != "specialist":
        raise ValueError(f"approvals apply to specialists only (their tool calls), not to a {kind}")
    unknown = sorted(set(approvals) - set(tools))
    if unknown:
        raise ValueError(f"approvals name {unknown}, which are not in the agent's tools {list(tools)}; "
                         "add them to tools or fix the names")


def _check_rules(agent: str, where: str, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        if not pattern.strip():
            raise ValueError(f"agent {agent!r}: an empty pattern in {where} would match every task; remove it")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"agent {agent!r}: pattern {pattern!r} in {where} is not a regular expression ({exc}); "
                "fix it, or escape the characters meant literally with a backslash (e.g. \\( or \\?)"
            ) from None
    try:
        rule_expression(patterns)
    except re.error as exc:  # each compiles alone: a group name used twice, a back-reference
        raise ValueError(
            f"agent {agent!r}: the patterns in {where} cannot be combined into one expression ({exc}); "
            "use non-capturing groups (?:...) and no group names"
        ) from None


# ModelSettings keys that shape a specialist's tool loop; the router and the supervisor
# make one call per task.
_LOOP_ONLY_KEYS = ("tools", "max_steps", "budget_usd", "budget_tokens", "history_max_tokens", "history_keep_recent",
                   "system_prompt_file", "scripted")


def _check_single_call_model(where: str, model: ModelSettings | None) -> None:
    ignored = sorted(set(_LOOP_ONLY_KEYS) & (model.model_fields_set if model else set()))
    if ignored:
        raise ValueError(
            f"{where} sets {ignored}, which shape a specialist's loop and mean nothing to a single "
            "model call per task; remove them"
        )


def _like(source: TopicSpec, name: str, config: Mapping[str, str] | None = None) -> TopicSpec:
    return TopicSpec(name, source.partitions, source.replication, dict(config or source.config), source.per_session)


def app_folder(app: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The app folder a command works on: ``app``, else ``$AGENTSTREAM_TOPOLOGY`` (a folder,
    or a topology file: its folder), else ``DEFAULT_APP``."""
    if app is not None:
        return app
    named = (os.environ if environ is None else environ).get(TOPOLOGY_ENV)
    if not named:
        return DEFAULT_APP
    return Path(named) if Path(named).is_dir() or not named.endswith((".yaml", ".yml")) else Path(named).parent


def load_topology(
    path: Path | None = None, *, prefix: str | None = None, changelogs: Mapping[str, Any] | None = None
) -> Topology:
    """Load and check the topology.

    ``path`` (a file, or an app folder holding ``topology.yaml``) defaults to
    ``$AGENTSTREAM_TOPOLOGY``, else the repository's support-desk app (``DEFAULT_APP``).
    ``prefix`` replaces the file's prefix, renaming every topic
    and group consistently (tests use a unique one each). ``changelogs`` replaces keys of
    the file's ``changelogs`` section, by their Kafka names (tests use small segments and a
    dirty ratio near 0 to see compaction); the values are checked like the file's.
    """
    source = path or Path(os.environ.get(TOPOLOGY_ENV) or DEFAULT_PATH)
    if source.is_dir():  # an app folder: its topology.yaml
        source = source / APP_TOPOLOGY_FILE
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        default = " (the default app is in a checkout of the repository only)" if source == DEFAULT_PATH else ""
        raise ConfigurationError(
            f"Cannot read the topology file {source}: {exc.strerror}{default}. Set {TOPOLOGY_ENV} to an app "
            "folder holding topology.yaml (or to the file itself), or pass the command's --app DIR."
        ) from exc
    return parse_topology(text, source, prefix=prefix, changelogs=changelogs)


def parse_topology(
    yaml_text: str, source: Path, *, prefix: str | None = None, changelogs: Mapping[str, Any] | None = None
) -> Topology:
    """Check the topology ``yaml_text`` as if read from ``source`` (see load_topology)."""
    raw = yaml_mapping(yaml_text, source, "topology")
    if prefix is not None:
        raw["prefix"] = prefix
    if changelogs:
        section = raw.get("changelogs")
        raw["changelogs"] = {**(section if isinstance(section, dict) else {}), **changelogs}
    try:
        topology = Topology.model_validate(raw)
    except ValidationError as exc:
        where = f"{source} with changelogs overrides {dict(changelogs)}" if changelogs else str(source)
        raise ConfigurationError(_describe(exc, where)) from None
    topology._app_dir = source.resolve().parent
    return topology


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"Invalid topology in {source}:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            key, where = loc[-1], _render(loc[:-1]) or "the top level"
            lines.append(f"  unknown key {key!r} in {where}; valid keys are {_valid_keys(loc[:-1])}")
        else:
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {_render(loc) or 'topology'}: {message}")
    return "\n".join(lines)


def _render(loc: tuple[Any, ...]) -> str:
    return ".".join(f"[{p!r}]" if "." in str(p) else str(p) for p in loc).replace(".[", "[")


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts, walking through dict values by their annotation."""
    current: Any = Topology
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or n: f for n, f in current.model_fields.items()}
            current = _optional_model(fields[part].annotation) if part in fields else None
        else:  # a dict key or list index: step into the value type
            args = get_args(current)
            current = args[-1] if args else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return []


def _optional_model(annotation: Any) -> Any:
    """The model of an optional section (``RoutingSettings | None``), else ``annotation``."""
    models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 and type(None) in get_args(annotation) else annotation
