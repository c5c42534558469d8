"""The tenants file (YAML): tenants, their hashed API keys with roles, their limits, and
the JWT settings. Checked whole at load; a mistake names the field, the file and the fix.

    tenants:
      acme:
        limits: {requests_per_minute: 600, daily_cost_usd: 25.0, max_running_tasks: 20}
        api_keys:
          - {name: ci, hash: "sha256:<64 hex digits>", roles: [submitter]}
    jwt:
      issuer: https://login.example.com/
      audience: agentstream
      tenant_claim: tenant            # the claim naming the tenant (default "tenant")
      roles_claim: roles              # a list of roles, or a space-separated string
      hs256_secret_env: AGENTSTREAM_JWT_SECRET   # HS256: the secret is in this variable
      rs256_public_key_file: jwt-public.pem      # RS256: a PEM public key, relative to this file
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt, ValidationError, field_validator, model_validator

from agentstream.errors import ConfigurationError
from agentstream.tenancy.keys import SCHEME, is_key_hash
from agentstream.yaml_mapping import yaml_mapping

Role = Literal["submitter", "operator"]  # identity.ROLES, as a type pydantic checks (a unit test keeps them equal)
_ID = r"^[A-Za-z0-9._-]{1,128}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LimitsSection(_Frozen):
    requests_per_minute: PositiveInt | None = None
    daily_cost_usd: NonNegativeFloat | None = None  # 0: the tenant's tasks are all refused
    max_running_tasks: NonNegativeInt | None = None  # 0: the tenant's tasks are all refused


class ApiKeySection(_Frozen):
    name: str = Field(pattern=_ID)  # names the key in logs and audit records (the key itself never appears)
    hash: str
    roles: tuple[Role, ...] = ("submitter",)

    @field_validator("hash")
    @classmethod
    def _hashed(cls, value: str) -> str:
        if not is_key_hash(value):
            raise ValueError(f"must be {SCHEME}<64 lower-case hex digits>, never the key itself; "
                             "print it with `agentstream tenants hash-key` (the key on stdin)")
        return value


class TenantSection(_Frozen):
    limits: LimitsSection = LimitsSection()
    api_keys: tuple[ApiKeySection, ...] = ()

    @model_validator(mode="after")
    def _names_unique(self) -> TenantSection:
        names = [key.name for key in self.api_keys]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"api key names {twice} are used twice; give each key its own name")
        return self


class JwtSection(_Frozen):
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    tenant_claim: str = Field("tenant", min_length=1)
    roles_claim: str = Field("roles", min_length=1)
    hs256_secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    rs256_public_key_file: Path | None = None
    leeway_s: NonNegativeInt = 30  # clock skew allowed on exp/nbf/iat

    @model_validator(mode="after")
    def _a_key(self) -> JwtSection:
        if self.hs256_secret_env is None and self.rs256_public_key_file is None:
            raise ValueError("needs hs256_secret_env (the variable holding an HS256 secret), "
                             "rs256_public_key_file (a PEM public key) or both")
        return self


class TenantsFile(_Frozen):
    tenants: dict[str, TenantSection]
    jwt: JwtSection | None = None

    @model_validator(mode="after")
    def _checks(self) -> TenantsFile:
        bad = sorted(tenant for tenant in self.tenants if not _valid_id(tenant))
        if bad:
            raise ValueError(f"tenant ids {bad} are not valid: use 1-128 of A-Z a-z 0-9 . _ -")
        owners: dict[str, str] = {}
        for tenant, section in self.tenants.items():
            for key in section.api_keys:
                if key.hash in owners:
                    raise ValueError(f"the key {key.name!r} of tenant {tenant!r} has the same hash as a key of tenant "
                                     f"{owners[key.hash]!r}: one key must name one tenant; generate another key")
                owners[key.hash] = tenant
        return self


def _valid_id(value: str) -> bool:
    return re.fullmatch(_ID, value) is not None


def read_tenants_file(path: Path) -> TenantsFile:
    """Parse and check the tenants file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the tenants file {path}: {exc.strerror}; fix the path "
                                 "(AGENTSTREAM_TENANTS or --tenants).") from exc
    return parse_tenants(text, path)


def parse_tenants(yaml_text: str, source: Path) -> TenantsFile:
    """Check the tenants file ``yaml_text`` as if read from ``source`` (named in errors)."""
    raw = yaml_mapping(yaml_text, source, "tenants", "a mapping with a `tenants:` section")
    try:
        return TenantsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc, source)) from None


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"Invalid tenants file {path}:"]
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "the top level"
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key {where!r}; valid keys there are {_valid_keys(err['loc'][:-1])}")
        else:
            # A bad api key hash may be the key itself, pasted by mistake: never echo it.
            got = "" if err["loc"][-1:] == ("hash",) else f" (got {_short(err.get('input'))})"
            lines.append(f"  {where}: {err['msg'].removeprefix('Value error, ')}{got}")
    return "\n".join(lines)


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at ``loc`` accepts (a tenant id or list index steps into the values)."""
    model: Any = TenantsFile
    for part in loc:
        if _is_model(model) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
        elif not _is_model(model):
            model = _model_in(model)
    return sorted(model.model_fields) if _is_model(model) else []


def _model_in(annotation: Any) -> Any:
    """The section model an annotation holds (``X | None``, ``dict[str, X]``, ``tuple[X, ...]``)."""
    if _is_model(annotation):
        return annotation
    return next((found for arg in get_args(annotation) if (found := _model_in(arg)) is not None), None)


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
