"""The tenants of a deployment, from the tenants file: who a credential is, and what it may do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentstream.tenancy.config import TenantsFile, read_tenants_file
from agentstream.tenancy.errors import FORBIDDEN, AuthError
from agentstream.tenancy.identity import Principal, Tenant, TenantLimits
from agentstream.tenancy.keys import matches
from agentstream.tenancy.tokens import TokenVerifier

BEARER = "bearer "


@dataclass(frozen=True)
class _Key:
    tenant_id: str
    name: str
    hash: str
    roles: frozenset[str]


class Tenants:
    """Tenants, their API keys and the JWT settings; built by ``load``."""

    def __init__(self, tenants: Mapping[str, Tenant], keys: tuple[_Key, ...], verifier: TokenVerifier | None) -> None:
        self._tenants = dict(tenants)
        self._keys = keys
        self._verifier = verifier

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> Tenants:
        """Read and check the tenants file (ConfigurationError names the bad field and the fix).
        ``environ`` (default os.environ) holds the HS256 secret the file's jwt section names."""
        return cls.from_file(read_tenants_file(path), path.parent, environ)

    @classmethod
    def from_file(cls, file: TenantsFile, base: Path, environ: Mapping[str, str] | None = None) -> Tenants:
        tenants = _tenants_of(file)
        keys = tuple(_Key(tid, key.name, key.hash, frozenset(key.roles))
                     for tid, section in file.tenants.items() for key in section.api_keys)
        verifier = TokenVerifier.from_section(file.jwt, base, environ) if file.jwt is not None else None
        return cls(tenants, keys, verifier)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._tenants)

    def get(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    def tenant(self, tenant_id: str) -> Tenant:
        """The tenant ``tenant_id``; AuthError 403 when the file has no such tenant."""
        found = self._tenants.get(tenant_id)
        if found is None:
            raise AuthError(f"Unknown tenant {tenant_id!r}; add it to the tenants file.", FORBIDDEN)
        return found

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """Who sends a request: an ``Authorization: Bearer <jwt>`` header or an ``X-API-Key``
        header's value (one of them). AuthError 401 when neither verifies, 403 when a token
        names a tenant the file does not have."""
        if authorization and api_key:
            raise AuthError("Send one credential: an Authorization bearer token or an X-API-Key, not both.")
        if api_key:
            return self._by_key(api_key)
        if authorization:
            return self._by_token(authorization)
        raise AuthError("No credential: send an X-API-Key header or Authorization: Bearer <token>.")

    def require_role(self, principal: Principal, role: str) -> None:
        """AuthError 403 unless ``principal`` has ``role``."""
        if role not in principal.roles:
            raise AuthError(f"{principal.subject} of tenant {principal.tenant_id!r} lacks the {role!r} role "
                            f"(it has {sorted(principal.roles)}).", FORBIDDEN)

    def _by_key(self, api_key: str) -> Principal:
        # Every stored hash is compared (no early exit): the time taken does not say which matched.
        found = [key for key in self._keys if matches(api_key, key.hash)]
        if not found:
            raise AuthError("The API key is not valid.")
        key = found[0]
        return Principal(key.tenant_id, f"key:{key.name}", key.roles)

    def _by_token(self, authorization: str) -> Principal:
        if not authorization[: len(BEARER)].lower() == BEARER or not authorization[len(BEARER):].strip():
            raise AuthError("The Authorization header must be `Bearer <token>`.")
        if self._verifier is None:
            raise AuthError("Bearer tokens are not accepted here (the tenants file has no jwt section); use an API key.")
        claims = self._verifier.verify(authorization[len(BEARER):].strip())
        if claims.tenant_id not in self._tenants:
            raise AuthError(f"The token's tenant {claims.tenant_id!r} is not in the tenants file.", FORBIDDEN)
        return Principal(claims.tenant_id, claims.subject, claims.roles)


def load_tenant_limits(path: Path) -> dict[str, Tenant]:
    """Only the tenants and their limits of the tenants file: what the router enforces. It
    reads no key and no JWT secret, so the router needs none of the gateway's secrets."""
    return _tenants_of(read_tenants_file(path))


def _tenants_of(file: TenantsFile) -> dict[str, Tenant]:
    return {tid: Tenant(tid, TenantLimits(**section.limits.model_dump())) for tid, section in file.tenants.items()}
