"""A running gateway for integration tests: a tenants file with keys per tenant and role,
the real ``agentstream gateway`` process on a free port, and SSE read over httpx."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from agentstream.gateway_client import GatewayEvent, SseParser
from agentstream.tenancy import hash_api_key

from .harness import WorkerProcess, free_port, wait_for


@dataclass
class TenantsFile:
    """Tenants and one API key per (tenant, role); ``key(tenant, role)`` gives the key itself."""

    path: Path
    keys: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def write(cls, path: Path, tenants: dict[str, dict[str, Any]], jwt: dict[str, Any] | None = None) -> TenantsFile:
        """``tenants``: tenant id -> its limits; every tenant gets a submitter and an operator key.
        ``jwt``: the file's jwt section, if any."""
        made = cls(path)
        sections = {}
        for tenant, limits in tenants.items():
            keys = []
            for role in ("submitter", "operator"):
                key = secrets.token_urlsafe(32)
                made.keys[(tenant, role)] = key
                keys.append({"name": f"{tenant}-{role}", "hash": hash_api_key(key), "roles": [role]})
            sections[tenant] = {"limits": limits, "api_keys": keys}
        path.write_text(yaml.safe_dump({"tenants": sections, **({"jwt": jwt} if jwt else {})}))
        return made

    def headers(self, tenant: str, role: str = "submitter") -> dict[str, str]:
        return {"X-API-Key": self.keys[(tenant, role)]}


class GatewayProcess:
    """``agentstream gateway`` as a subprocess, ready once its view has caught up."""

    def __init__(self, env: dict[str, str], tenants: Path, name: str = "gateway") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = WorkerProcess(["-m", "agentstream", "gateway", "--port", str(self.port), "--tenants", str(tenants)],
                                     name, env)
        wait_for(self._ready, 90, f"{name} answering 200 on /readyz")

    def _ready(self) -> bool:
        if self.process.proc.poll() is not None:
            raise AssertionError(f"the gateway exited ({self.process.proc.returncode}):\n{self.process.tail()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(30)


def sse_events(response: httpx.Response) -> Iterator[GatewayEvent]:
    """The messages of an open SSE response, as they come (the client's parser)."""
    parser = SseParser()
    for line in response.iter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event
