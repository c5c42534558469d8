"""The whole pipeline on one machine: a broker, the topology applied, and every worker
as its own process (router, one per specialist type, supervisor). Used by
``agentstream dev`` and ``agentstream demo``."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

from agentstream.broker import BOOTSTRAP_ENV, TANSU, bootstrap_servers
from agentstream.clients import admin_config
from agentstream.errors import ConfigurationError
from agentstream.rollout.control import canary_types
from agentstream.settings import PREFIX_ENV, STATE_DIR_ENV, TOPOLOGY_ENV
from agentstream.topology import Topology, load_topology
from agentstream.topology_admin import apply

log = logging.getLogger(__name__)

STACK_LOCK_FILE = "stack.lock"  # in the state directory, locked while a stack runs on it


class Stack:
    def __init__(
        self,
        state_dir: Path,
        *,
        topology_path: Path | None = None,
        prefix: str | None = None,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        bootstrap: str | None = None,
        broker: str = TANSU,
    ) -> None:
        self.state_dir = state_dir
        self.topology_path = topology_path
        # The workers read AGENTSTREAM_PREFIX from the environment they inherit: the stack's
        # own topology (what it applies, where the demo submits) must use the same one.
        self.prefix = prefix if prefix is not None else (os.environ.get(PREFIX_ENV) or None)
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        self.topology: Topology = load_topology(topology_path, prefix=self.prefix)
        self.bootstrap = bootstrap or ""
        self.broker = broker  # the kind to start when neither bootstrap nor KAFKA_BOOTSTRAP_SERVERS is given
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._exit = contextlib.ExitStack()

    def worker_commands(self) -> dict[str, list[str]]:
        base = [sys.executable, "-m", "agentstream", "worker"]
        commands = {"router": [*base, "router"], "supervisor": [*base, "supervisor"]}
        for name, agent in self.topology.workers.items():  # candidates' workers too
            if agent.kind == "specialist":
                commands[name] = [*base, "specialist", "--type", name]
        if canary_types(self.topology):  # the rollback rules of the canaries, checked continuously
            commands["rollout-watch"] = [sys.executable, "-m", "agentstream", "rollout", "watch"]
        return commands

    def start(self) -> Stack:
        # A state directory left by an earlier broker is fine: with a broker of its own the
        # stack clears the stores (_clear_stores); on a given cluster a store whose recorded
        # changelog offset that cluster lacks is wiped and restored (runtime.changelog).
        self._hold_state_dir()
        if not self.bootstrap:
            own_broker = not os.environ.get(BOOTSTRAP_ENV, "").strip()  # else bootstrap_servers gives that cluster
            self.bootstrap = self._exit.enter_context(bootstrap_servers(self.broker))
            if own_broker:
                self._clear_stores()
        plan = apply(AdminClient(admin_config(self.bootstrap)), self.topology)
        log.info("topology applied: %d topics created, %d already there", len(plan.to_create), len(plan.ok))
        env = {**os.environ, **self.extra_env, BOOTSTRAP_ENV: self.bootstrap, STATE_DIR_ENV: str(self.state_dir)}
        if self.topology_path is not None:
            env[TOPOLOGY_ENV] = str(self.topology_path)
        if self.prefix is not None:
            env[PREFIX_ENV] = self.prefix
        for name, command in self.worker_commands().items():
            output = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                output = self._exit.enter_context(open(self.log_dir / f"{name}.log", "wb"))
            self.workers[name] = subprocess.Popen(command, env=env, stdout=output, stderr=output)
        return self

    def _hold_state_dir(self) -> None:
        """Take the state directory for as long as the stack runs (a lock its process holds,
        gone with it, even after a kill): two stacks on one directory would share the
        workers' stores, and the second would clear the first's."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = self._exit.enter_context(open(self.state_dir / STACK_LOCK_FILE, "a"))  # noqa: SIM115 (closed by stop)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"Another `agentstream dev` or demo runs with the state directory {self.state_dir}: stop it, or give "
                f"this one another (--state-dir or {STATE_DIR_ENV})."
            ) from None

    def _clear_stores(self) -> None:
        """The broker was just started here, empty: the workers' stores an earlier one left in
        the state directory hold records it does not have. Cleared at once, in one line (each
        worker would wipe each of its stores on its first assignment, a warning per store)."""
        stale = [path for name in self.topology.workers
                 if (path := self.state_dir / name / self.topology.group(name)).is_dir()]  # as service.py lays them out
        for path in stale:
            shutil.rmtree(path)
        if stale:
            log.info("cleared the stores of %d consumer groups in %s: they were of an earlier broker", len(stale), self.state_dir)

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every worker, wait for them to drain, then stop the broker."""
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for name, proc in self.workers.items():
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        self._exit.close()
        return codes

    def dead_workers(self) -> dict[str, int]:
        return {name: code for name, proc in self.workers.items() if (code := proc.poll()) is not None}

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
