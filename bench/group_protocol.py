"""Group protocol benchmark: classic (eager range) against KIP-848 (``group.protocol=consumer``,
server-side range assignor) on bare confluent-kafka consumers.

    python -m bench.group_protocol [--trials 3] [--protocols classic,consumer]
                                   [--scenarios takeover,scaleup,copartition] [--rate 600]
                                   [--broker kafka|tansu] [--quick]

Every member is a child process (``python -m bench.group_protocol member``) with
``clients.consumer_config(..., protocol=P)``: for classic ``partition.assignment.strategy=range``,
``session.timeout.ms=6000``, heartbeat 1.5 s; for ``consumer`` the broker owns those (the
cluster agentstream starts sets ``group.consumer.session.timeout.ms=6000`` and heartbeat 1.5 s,
so both protocols detect a dead member after the same silence) and assigns with ``range``.
Members subscribe to two 6-partition topics, as a runtime worker subscribes to its input and
its retry tiers: ``stream`` gets a steady load from this process (``--rate`` records/s, round
robin over its partitions) and ``other`` stays idle. A member commits what it consumed every
second and, synchronously, the partitions it gives up in its revoke callback (as the runtime
does). It prints its ownership after every assign / revoke / lost callback (eager callbacks
name everything, incremental ones only the change; applying each as a change covers both),
and what it consumed per 20 ms, all stamped with the wall clock, so times of different
processes compare on one machine.

Scenarios, per protocol and trial, each on fresh topics and a fresh group:

- ``takeover``: two members settle (3 + 3), one gets SIGKILL at a random phase against the
  heartbeats. Measured from the kill: until
  the survivor owns every partition, and how long the survivor's *own* partitions went
  without a record (eager revokes them too; incremental keeps them).
- ``scaleup``: one member owns all 6 partitions and consumes the stream; a second starts.
  Measured from the second's ``subscribe()``: until it is assigned, until the group settles
  (3 + 3, nothing moving for 1.5 s), the incumbent's pause (the longest stretch in which it
  consumed nothing at all) and the longest gap on a partition that changed owner (last record
  by the old owner → first record by the new one).
- ``copartition``: three members settle (2 + 2 + 2), then one gets SIGKILL and two settle.

Every settled state of every scenario (2 members, 3 members, after a join, after a kill) is
checked for co-partitioning: partition p of ``stream`` and of ``other`` on the same member,
for every p. The runtime relies on it (a worker's tables and retry tiers are keyed by the
input partition). Results: a table on stdout and ``bench/out/group_protocol-<timestamp>.json``.
KIP-848 needs Apache Kafka 4 (``--broker kafka``, the default where ``java`` and ``mvn`` exist);
Tansu speaks the classic protocol only.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from agentstream.clients import GROUP_PROTOCOLS, admin_config, consumer_config, producer_config
from bench._procs import REPO, Proc, group_type, machine, write_report
from bench.relay import add_broker_argument, broker, broker_kind, create_topics, delete_topics, wait_for_quiet

PARTITIONS = 6
TOPICS = ("stream", "other")  # index 0 gets the load; both are subscribed
SCENARIOS = ("takeover", "scaleup", "copartition")
BUCKET_S = 0.02  # a member reports what it consumed at most this often
SETTLE_QUIET_S = 1.5  # settled: complete, balanced, and no member's ownership changed for this long
TP = tuple[int, int]  # (topic index, partition)


# -- the member process --------------------------------------------------------------------
def member_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.group_protocol member")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated; reported by index")
    parser.add_argument("--group", required=True)
    parser.add_argument("--protocol", choices=GROUP_PROTOCOLS, required=True)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    topics = args.topics.split(",")
    index = {name: i for i, name in enumerate(topics)}
    owned: set[TP] = set()
    positions: dict[TP, int] = {}  # next offset to commit, per partition consumed since the last commit
    bucket: dict[TP, int] = {}
    bucket_start = 0.0

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def flush_bucket() -> None:
        nonlocal bucket_start
        if bucket:
            emit(f"C {time.time():.4f} " + " ".join(f"{t}:{p}={n}" for (t, p), n in sorted(bucket.items())))
            bucket.clear()
        bucket_start = 0.0

    def commit(tps: set[TP] | None = None) -> None:
        chosen = [tp for tp in positions if tps is None or tp in tps]
        if not chosen:
            return
        offsets = [TopicPartition(topics[t], p, positions[(t, p)]) for t, p in chosen]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. a stale member epoch mid-rebalance: reported, not fatal
            emit(f"COMMITERR {time.time():.4f} {exc.args[0]}")
        for tp in chosen:
            positions.pop(tp, None)

    def changed(event: str, partitions: list[TopicPartition], apply: Callable[[set[TP]], None]) -> None:
        flush_bucket()
        tps = {(index[p.topic], p.partition) for p in partitions}
        if event == "REVOKE":
            commit(tps)
        apply(tps)
        now = time.time()
        emit(f"{event} {now:.4f} " + ",".join(f"{t}:{p}" for t, p in sorted(tps)))
        emit(f"OWNS {now:.4f} " + ",".join(f"{t}:{p}" for t, p in sorted(owned)))

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    consumer = Consumer(consumer_config(args.bootstrap, args.group, protocol=args.protocol))
    consumer.subscribe(
        topics,
        on_assign=lambda c, ps: changed("ASSIGN", ps, owned.update),
        on_revoke=lambda c, ps: changed("REVOKE", ps, owned.difference_update),
        on_lost=lambda c, ps: changed("LOST", ps, owned.difference_update),
    )
    emit(f"SUB {time.time():.4f}")
    next_commit = time.monotonic() + args.commit_interval
    try:
        while True:
            # poll() returns at the first record; consume(n, timeout) alone would sit out its
            # timeout for every batch smaller than n and blur the gaps measured here.
            first = consumer.poll(0.05)
            for msg in [first, *consumer.consume(499, 0)] if first is not None else []:
                if msg.error() is not None:
                    continue
                tp = (index[msg.topic()], msg.partition())
                bucket[tp] = bucket.get(tp, 0) + 1
                positions[tp] = msg.offset() + 1
                if not bucket_start:
                    bucket_start = time.monotonic()
            if bucket and time.monotonic() - bucket_start >= BUCKET_S:
                flush_bucket()
            if time.monotonic() >= next_commit:
                commit()
                next_commit = time.monotonic() + args.commit_interval
    except KeyboardInterrupt:
        pass
    finally:
        flush_bucket()
        with contextlib.suppress(KafkaException):
            commit()
        consumer.close()
    return 0


# -- reading a member's output ---------------------------------------------------------------
def _tps(text: str) -> set[TP]:
    return {(int(t), int(p)) for t, p in (item.split(":") for item in text.split(",") if item)}


class Member:
    def __init__(self, name: str, bootstrap: str, topics: list[str], group: str, protocol: str) -> None:
        self.name = name
        self.proc = Proc(name, ["-m", "bench.group_protocol", "member", "--bootstrap", bootstrap, "--topics",
                                ",".join(topics), "--group", group, "--protocol", protocol], {})
        self.killed_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.killed_at is None and self.proc.proc.poll() is None

    def ownership(self) -> list[tuple[float, set[TP]]]:
        """Every ownership the member reported, with its wall-clock time."""
        out = []
        for _, line in self.proc.matching(r"^OWNS "):
            _, at, *rest = line.split(" ")
            out.append((float(at), _tps(rest[0] if rest else "")))
        return out

    def owns(self) -> set[TP]:
        history = self.ownership()
        return history[-1][1] if history else set()

    def subscribed_at(self) -> float:
        _, line = self.proc.wait_for_line(r"^SUB ", 60)
        return float(line.split()[1])

    def consumed(self) -> dict[TP, list[float]]:
        """Wall-clock times of the buckets in which the member consumed from each partition."""
        times: dict[TP, list[float]] = {}
        for _, line in self.proc.matching(r"^C "):
            _, at, *counts = line.split(" ")
            for item in counts:
                tp = _tps(item.split("=")[0]).pop()
                times.setdefault(tp, []).append(float(at))
        return times

    def events(self, kind: str) -> list[tuple[float, set[TP]]]:
        out = []
        for _, line in self.proc.matching(rf"^{kind} "):
            _, at, *rest = line.split(" ")
            out.append((float(at), _tps(rest[0] if rest else "")))
        return out

    def kill(self) -> float:
        at = time.time()
        self.proc.proc.send_signal(signal.SIGKILL)
        self.killed_at = at
        self.proc.proc.wait(10)
        return at

    def stop(self) -> None:
        if self.killed_at is None:
            self.proc.stop(15)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch within [start, end] without a consumption time, counted from the last
    time before ``start`` (a stream that ends before ``end`` is not charged for its tail)."""
    ordered = sorted(times)
    before = [t for t in ordered if t < start]
    inside = [t for t in ordered if start <= t <= end]
    points = ([before[-1]] if before else []) + inside
    return max((b - a for a, b in zip(points, points[1:])), default=float("nan"))


# -- the settled state -----------------------------------------------------------------------
@dataclass
class Settled:
    at: float  # wall clock of the last ownership change that led to it
    owners: dict[str, list[str]]  # member -> ["topic:partition", ...]
    co_partitioned: bool
    split: str  # partitions of the stream topic per member, e.g. "3+3"


def settle(members: list[Member], timeout: float = 60.0) -> Settled:
    """Wait until the live members own every partition of both topics exactly once, each its
    fair share of each topic, and no ownership has changed for SETTLE_QUIET_S."""
    live = [m for m in members if m.alive]
    everything = {(t, p) for t in range(len(TOPICS)) for p in range(PARTITIONS)}
    deadline = time.monotonic() + timeout
    fair = {PARTITIONS // len(live), -(-PARTITIONS // len(live))}
    while time.monotonic() < deadline:
        owned = {m.name: m.owns() for m in live}
        union = set().union(*owned.values())
        disjoint = sum(len(o) for o in owned.values()) == len(union)
        balanced = all(len({p for t, p in o if t == topic}) in fair for o in owned.values() for topic in range(len(TOPICS)))
        if union == everything and disjoint and balanced:
            last = max(m.ownership()[-1][0] for m in live)
            if time.time() - last >= SETTLE_QUIET_S:
                by_partition = all(
                    any((0, p) in o and (1, p) in o for o in owned.values()) for p in range(PARTITIONS)
                )
                split = "+".join(str(len({p for t, p in o if t == 0})) for o in owned.values())
                return Settled(last, {n: [f"{TOPICS[t]}:{p}" for t, p in sorted(o)] for n, o in owned.items()},
                               by_partition, split)
        time.sleep(0.05)
    state = {m.name: sorted(m.owns()) for m in live}
    raise TimeoutError(f"the group did not settle within {timeout:.0f} s; last ownership {state}")


# -- load -------------------------------------------------------------------------------------
class Stream(threading.Thread):
    """``rate`` records/s round robin over the stream topic's partitions until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(name="stream", daemon=True)
        self.producer = Producer(producer_config(bootstrap, {"linger.ms": 5}))
        self.topic, self.rate = topic, rate
        self.halt = threading.Event()
        self.sent = 0

    def run(self) -> None:
        began = time.monotonic()
        while not self.halt.is_set():
            while True:
                try:
                    self.producer.produce(self.topic, str(time.time()).encode(), partition=self.sent % PARTITIONS)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.sent += 1
            if self.sent % 10 == 0:
                self.producer.poll(0)
                ahead = self.sent / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        self.producer.flush(30)

    def stop(self) -> None:
        self.halt.set()
        self.join(40)


# -- scenarios --------------------------------------------------------------------------------
@dataclass
class TrialResult:
    protocol: str
    trial: int
    # takeover
    takeover_s: float = float("nan")  # kill -> survivor owns every partition
    takeover_first_event_s: float = float("nan")  # kill -> the survivor's first callback (detection)
    survivor_own_pause_s: float = float("nan")  # longest gap on the survivor's own partitions
    survivor_baseline_gap_s: float = float("nan")  # the same, in the 2 s before the kill (the floor)
    # scale-up
    scaleup_assigned_s: float = float("nan")  # joiner's subscribe -> its first partitions
    scaleup_settled_s: float = float("nan")  # joiner's subscribe -> 3 + 3, stable
    incumbent_pause_s: float = float("nan")  # longest stretch the incumbent consumed nothing
    incumbent_baseline_gap_s: float = float("nan")  # the same, in the 2 s before the joiner subscribed
    incumbent_kept_pause_s: float = float("nan")  # longest gap on partitions the incumbent kept
    moved_gap_s: float = float("nan")  # longest old owner's last record -> new owner's first, moved partitions
    incumbent_revoked: int = -1  # partitions the incumbent revoked during the scale-up
    # every settled state, by scenario step
    settled: dict[str, dict[str, Any]] = field(default_factory=dict)
    commit_errors: int = 0
    group_types: list[str] = field(default_factory=list)  # as the broker describes each scenario's group
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def co_partitioned(self) -> bool | None:
        checks = [s["co_partitioned"] for s in self.settled.values()]
        return all(checks) if checks else None


class Scenario:
    """Fresh topics and group; members started on demand; everything cleaned up on exit."""

    def __init__(self, bootstrap: str, protocol: str, name: str, rate: float) -> None:
        run = uuid.uuid4().hex[:6]
        self.bootstrap, self.protocol = bootstrap, protocol
        self.topics = [f"bench.group-protocol.{name}.{run}.{t}" for t in TOPICS]
        self.group = f"bench-group-protocol-{name}-{run}"
        self.admin = AdminClient(admin_config(bootstrap))
        create_topics(self.admin, self.topics, 1)
        self.members: list[Member] = []
        self.stream = Stream(bootstrap, self.topics[0], rate)

    def start(self, name: str) -> Member:
        member = Member(name, self.bootstrap, self.topics, self.group, self.protocol)
        self.members.append(member)
        return member

    def __enter__(self) -> Scenario:
        self.stream.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for member in self.members:
            member.stop()
        self.stream.stop()
        delete_topics(self.admin, self.topics)

    def commit_errors(self) -> int:
        return sum(len(m.proc.matching(r"^COMMITERR ")) for m in self.members)


def takeover(bootstrap: str, protocol: str, rate: float, result: TrialResult) -> None:
    with Scenario(bootstrap, protocol, "takeover", rate) as sc:
        victim, survivor = sc.start("a"), sc.start("b")
        result.settled["takeover: 2 members"] = asdict(settle(sc.members))
        result.group_types.append(group_type(bootstrap, sc.group))
        # A quiet stretch (the floor of the gap measure), then a random phase against the
        # heartbeats: detection takes the session timeout minus the time since the victim's
        # last heartbeat, plus up to one heartbeat of the survivor's; a fixed delay after the
        # join would pin that phase and make one protocol look faster than the other.
        time.sleep(2.0 + random.uniform(0.0, 1.5))
        own = survivor.owns()
        mark = survivor.proc.line_count()
        killed = victim.kill()
        deadline = time.monotonic() + 60
        everything = {(t, p) for t in range(len(TOPICS)) for p in range(PARTITIONS)}
        while not any(o == everything for at, o in survivor.ownership() if at >= killed):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the survivor did not own every partition within 60 s: {sorted(survivor.owns())}")
            time.sleep(0.02)
        whole = min(at for at, o in survivor.ownership() if at >= killed and o == everything)
        result.takeover_s = whole - killed
        callbacks = [float(line.split()[1]) for _, line in survivor.proc.matching(r"^(ASSIGN|REVOKE|LOST) ", after=mark)]
        result.takeover_first_event_s = min(callbacks) - killed
        result.settled["takeover: after the kill"] = asdict(settle(sc.members))
        time.sleep(1.0)
        consumed = survivor.consumed()
        result.survivor_own_pause_s = max(longest_gap(consumed.get(tp, []), killed, whole + 1.0)
                                          for tp in own if tp[0] == 0)
        result.survivor_baseline_gap_s = max(longest_gap(consumed.get(tp, []), killed - 2.0, killed)
                                             for tp in own if tp[0] == 0)
        result.commit_errors += sc.commit_errors()


def scaleup(bootstrap: str, protocol: str, rate: float, result: TrialResult) -> None:
    with Scenario(bootstrap, protocol, "scaleup", rate) as sc:
        incumbent = sc.start("a")
        settle(sc.members)
        time.sleep(2.5)  # consuming the steady stream, not a backlog; the last 2 s give the gap measure's floor
        joiner = sc.start("b")
        subscribed = joiner.subscribed_at()
        state = settle(sc.members)
        result.settled["scale-up: 1 -> 2 members"] = asdict(state)
        result.group_types.append(group_type(bootstrap, sc.group))
        time.sleep(2.0)
        first = [at for at, o in joiner.ownership() if o]
        result.scaleup_assigned_s = min(first) - subscribed
        result.scaleup_settled_s = state.at - subscribed
        window_end = state.at + 1.0
        before = incumbent.consumed()
        all_times = sorted(t for times in before.values() for t in times)
        result.incumbent_pause_s = longest_gap(all_times, subscribed, window_end)
        result.incumbent_baseline_gap_s = longest_gap(all_times, subscribed - 2.0, subscribed)
        kept = [tp for tp in incumbent.owns() if tp[0] == 0]
        result.incumbent_kept_pause_s = max((longest_gap(before.get(tp, []), subscribed, window_end) for tp in kept),
                                            default=float("nan"))
        moved = [tp for tp in joiner.owns() if tp[0] == 0]
        after = joiner.consumed()
        gaps = []
        for tp in moved:
            last_old = max((t for t in before.get(tp, []) if t <= window_end), default=subscribed)
            first_new = min((t for t in after.get(tp, []) if t >= subscribed), default=float("nan"))
            gaps.append(first_new - last_old)
        result.moved_gap_s = max(gaps, default=float("nan"))
        result.incumbent_revoked = sum(len(o) for at, o in incumbent.events("REVOKE") if at >= subscribed)
        result.commit_errors += sc.commit_errors()


def copartition(bootstrap: str, protocol: str, rate: float, result: TrialResult) -> None:
    with Scenario(bootstrap, protocol, "copartition", rate) as sc:
        for name in ("a", "b", "c"):
            sc.start(name)
        result.settled["co-partition: 3 members"] = asdict(settle(sc.members))
        result.group_types.append(group_type(bootstrap, sc.group))
        sc.members[0].kill()
        result.settled["co-partition: 3 -> 2 after a kill"] = asdict(settle(sc.members))
        result.commit_errors += sc.commit_errors()


RUNNERS: dict[str, Callable[[str, str, float, TrialResult], None]] = {
    "takeover": takeover, "scaleup": scaleup, "copartition": copartition,
}


# -- report -----------------------------------------------------------------------------------
def _f(value: float, width: int = 8) -> str:
    return f"{'—':>{width}}" if value != value else f"{value:>{width}.2f}"


def print_report(results: list[TrialResult], broker_name: str) -> None:
    print(f"\nbroker: {broker_name}")
    print(f"\n{'protocol':<10}{'trial':>6}{'takeover':>10}{'detect':>8}{'own pause':>10}{'(floor)':>8}"
          f"{'join→asg':>10}{'join→settled':>13}{'inc. pause':>11}{'(floor)':>8}{'kept pause':>11}{'moved gap':>10}"
          f"{'revoked':>8}  co-partitioned")
    for r in results:
        co = {True: "yes", False: "NO", None: "—"}[r.co_partitioned]
        splits = ", ".join(f"{k.split(': ')[1]} {v['split']}{'' if v['co_partitioned'] else ' (NOT co-partitioned)'}"
                           for k, v in r.settled.items())
        print(f"{r.protocol:<10}{r.trial:>6}{_f(r.takeover_s, 10)}{_f(r.takeover_first_event_s)}{_f(r.survivor_own_pause_s, 10)}"
              f"{_f(r.survivor_baseline_gap_s)}{_f(r.scaleup_assigned_s, 10)}{_f(r.scaleup_settled_s, 13)}"
              f"{_f(r.incumbent_pause_s, 11)}{_f(r.incumbent_baseline_gap_s)}"
              f"{_f(r.incumbent_kept_pause_s, 11)}{_f(r.moved_gap_s, 10)}{r.incumbent_revoked if r.incumbent_revoked >= 0 else '—':>8}"
              f"  {co} ({splits})")
        for scenario, error in r.errors.items():
            print(f"    {scenario} ERROR: {error.splitlines()[0]}")
        if r.commit_errors:
            print(f"    {r.commit_errors} commits failed (reported by the members; not fatal)")
    print("(seconds. takeover: SIGKILL of one of 2 members → the survivor owns all 6 partitions (of both topics);\n"
          " detect: → the survivor's first rebalance callback; own pause: longest gap on the survivor's own partitions;\n"
          " (floor): the same measure in the 2 s before the event, with nothing moving;\n"
          " join→asg / join→settled: the second member's subscribe() → its first partitions / 3 + 3 stable;\n"
          " inc. pause: longest stretch the incumbent consumed nothing; kept pause: longest gap on partitions it kept;\n"
          " moved gap: old owner's last record → new owner's first, worst moved partition; revoked: partitions the\n"
          " incumbent revoked; co-partitioned: partition p of both topics on one member in every settled state)")


def summarize(results: list[TrialResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    metrics = ("takeover_s", "takeover_first_event_s", "survivor_own_pause_s", "survivor_baseline_gap_s",
               "scaleup_assigned_s", "scaleup_settled_s", "incumbent_pause_s", "incumbent_baseline_gap_s",
               "incumbent_kept_pause_s", "moved_gap_s")
    for protocol in dict.fromkeys(r.protocol for r in results):
        mine = [r for r in results if r.protocol == protocol]
        summary: dict[str, Any] = {}
        for metric in metrics:
            values = [getattr(r, metric) for r in mine if getattr(r, metric) == getattr(r, metric)]
            if values:
                summary[metric] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        checks = [s["co_partitioned"] for r in mine for s in r.settled.values()]
        summary["co_partitioned"] = f"{sum(checks)}/{len(checks)} settled states"
        summary["errors"] = sum(len(r.errors) for r in mine)
        out[protocol] = summary
    return out


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{'protocol':<10}{'takeover':>16}{'own pause':>16}{'join→settled':>16}{'inc. pause':>16}{'moved gap':>16}"
          "  co-partitioned   (median [min–max] s)")
    for protocol, s in summary.items():
        def cell(metric: str) -> str:
            m = s.get(metric)
            return f"{'—':>16}" if m is None else f"{m['median']:>6.2f} [{m['min']:.2f}–{m['max']:.2f}]".rjust(16)
        print(f"{protocol:<10}{cell('takeover_s')}{cell('survivor_own_pause_s')}{cell('scaleup_settled_s')}"
              f"{cell('incumbent_pause_s')}{cell('moved_gap_s')}  {s['co_partitioned']}"
              + (f"; {s['errors']} scenario errors" if s["errors"] else ""))


def main(argv: list[str]) -> int:
    if argv[:1] == ["member"]:
        return member_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.group_protocol", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="trials of every scenario per protocol (default 3)")
    parser.add_argument("--protocols", default=",".join(GROUP_PROTOCOLS), help="comma-separated (default classic,consumer)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated (default {','.join(SCENARIOS)})")
    parser.add_argument("--rate", type=float, default=600.0, help="records/s on the stream topic (default 600)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 trial")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="before each trial wait up to this many s for other load to settle (default 10; 0: off)")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if bad := [p for p in protocols if p not in GROUP_PROTOCOLS] + [s for s in scenarios if s not in SCENARIOS]:
        parser.error(f"unknown protocols or scenarios {bad}")
    if args.quick:
        args.trials = 1
    if args.trials < 1 or args.rate <= 0:
        parser.error("--trials must be >= 1 and --rate > 0")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    started = time.monotonic()
    results: list[TrialResult] = []
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"group protocol bench: {', '.join(protocols)}; {', '.join(scenarios)}; {args.trials} trial(s); "
              f"{PARTITIONS} partitions x {len(TOPICS)} topics, {args.rate:g} records/s; broker {broker_name}; "
              f"{host['nproc']} x {host['cpu_model']}", flush=True)
        for trial in range(1, args.trials + 1):
            for protocol in protocols:  # alternating, so drifting machine load hits both alike
                if args.quiet_wait:
                    wait_for_quiet(args.quiet_wait)
                result = TrialResult(protocol, trial)
                for scenario in scenarios:
                    try:
                        RUNNERS[scenario](bootstrap, protocol, args.rate, result)
                    except (TimeoutError, RuntimeError, KafkaException) as exc:
                        result.errors[scenario] = str(exc)
                results.append(result)
                print(f"  {protocol} #{trial}: takeover {_f(result.takeover_s, 0)} s, scale-up settled "
                      f"{_f(result.scaleup_settled_s, 0)} s with the incumbent paused {_f(result.incumbent_pause_s, 0)} s, "
                      f"co-partitioned {result.co_partitioned}"
                      + (f"; errors in {', '.join(result.errors)}" if result.errors else ""), flush=True)
    print_report(results, broker_name)
    for protocol in dict.fromkeys(r.protocol for r in results):
        types = sorted({t for r in results if r.protocol == protocol for t in r.group_types})
        print(f"{protocol}: the broker describes the groups as {', '.join(types) or '?'}")
    summary = summarize(results)
    print_summary(summary)
    report = {
        "benchmark": "group_protocol", "started": stamp, "command": "python -m bench.group_protocol " + " ".join(argv),
        "machine": host, "broker": broker_name, "broker_kind": broker_kind(broker_name),
        "client": {"confluent_kafka": confluent_kafka.version()[0], "librdkafka": confluent_kafka.libversion()[0]},
        "config": {"protocols": protocols, "scenarios": scenarios, "trials": args.trials, "rate": args.rate,
                   "partitions": PARTITIONS, "topics": list(TOPICS),
                   "classic": consumer_config("-", "-", protocol="classic"),
                   "consumer": consumer_config("-", "-", protocol="consumer")},
        "trials": [{**asdict(r), "co_partitioned": r.co_partitioned} for r in results],
        "summary": summary, "runtime_s": round(time.monotonic() - started, 1),
    }
    out = write_report("group_protocol", stamp, report)
    print(f"\nwrote {out.relative_to(REPO)} ({report['runtime_s']:.0f} s in all)")
    return 0 if results and not any(r.errors for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
