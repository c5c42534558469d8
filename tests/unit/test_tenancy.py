"""The tenants file, API keys and roles (tenancy/config.py, keys.py, tenants.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import get_args

import pytest

import agentstream.tenancy as tenancy
from agentstream.errors import ConfigurationError
from agentstream.tenancy import AuthError, Principal, Tenants, TenantLimits, hash_api_key
from agentstream.tenancy.commands import hash_key_from
from agentstream.tenancy.config import Role, parse_tenants
from agentstream.tenancy.identity import ROLES
from agentstream.tenancy.keys import check_strength, matches

SOURCE = Path("/etc/agentstream/tenants.yaml")
ACME_KEY = "acme-0123456789abcdefghijklmnopqrstuv"
GLOBEX_KEY = "globex-0123456789abcdefghijklmnopqrstu"


def tenants_yaml(extra: str = "") -> str:
    return f"""
tenants:
  acme:
    limits: {{requests_per_minute: 60, daily_cost_usd: 2.5, max_running_tasks: 3}}
    api_keys:
      - {{name: ci, hash: "{hash_api_key(ACME_KEY)}", roles: [submitter, operator]}}
  globex:
    api_keys:
      - {{name: bot, hash: "{hash_api_key(GLOBEX_KEY)}"}}
{extra}"""


def load(text: str) -> Tenants:
    return Tenants.from_file(parse_tenants(text, SOURCE), SOURCE.parent, environ={})


def test_hash_is_sha256_hex_and_matches_only_its_key() -> None:
    stored = hash_api_key(ACME_KEY)
    assert stored.startswith("sha256:") and len(stored) == len("sha256:") + 64
    assert ACME_KEY not in stored
    assert matches(ACME_KEY, stored)
    assert not matches(GLOBEX_KEY, stored)
    assert hash_api_key(ACME_KEY) == stored  # no salt: one key, one hash (see keys.py)


def test_a_short_key_is_refused_with_the_way_to_make_one() -> None:
    with pytest.raises(ConfigurationError, match=r"at least 32 characters, this one has 5.*token_urlsafe"):
        check_strength("short")


def test_limits_and_ids_load() -> None:
    tenants = load(tenants_yaml())
    assert tenants.ids == {"acme", "globex"}
    assert tenants.tenant("acme").limits == TenantLimits(60, 2.5, 3)
    assert tenants.tenant("globex").limits == TenantLimits(None, None, None)
    assert tenants.get("initech") is None


def test_an_api_key_names_its_tenant_subject_and_roles() -> None:
    tenants = load(tenants_yaml())
    assert tenants.authenticate(None, ACME_KEY) == Principal("acme", "key:ci", frozenset({"submitter", "operator"}))
    assert tenants.authenticate(None, GLOBEX_KEY) == Principal("globex", "key:bot", frozenset({"submitter"}))


@pytest.mark.parametrize(
    ("authorization", "api_key", "message"),
    [
        (None, None, "No credential"),
        (None, "not-a-key-0123456789abcdefghijklmnop", "API key is not valid"),
        ("Bearer abc", ACME_KEY, "not both"),
        ("Basic dXNlcjpwdw==", None, "must be `Bearer <token>`"),
        ("Bearer x.y.z", None, "no jwt section"),
    ],
)
def test_bad_or_missing_credentials_are_401(authorization: str | None, api_key: str | None, message: str) -> None:
    with pytest.raises(AuthError, match=message) as raised:
        load(tenants_yaml()).authenticate(authorization, api_key)
    assert raised.value.status == 401
    assert ACME_KEY not in str(raised.value)


def test_roles_and_unknown_tenants_are_403() -> None:
    tenants = load(tenants_yaml())
    submitter = tenants.authenticate(None, GLOBEX_KEY)
    tenants.require_role(submitter, "submitter")
    with pytest.raises(AuthError, match=r"key:bot of tenant 'globex' lacks the 'operator' role") as raised:
        tenants.require_role(submitter, "operator")
    assert raised.value.status == 403
    with pytest.raises(AuthError, match="Unknown tenant 'initech'") as unknown:
        tenants.tenant("initech")
    assert unknown.value.status == 403


def test_a_plain_key_in_the_file_is_refused_and_not_echoed() -> None:
    text = tenants_yaml().replace(hash_api_key(ACME_KEY), ACME_KEY)
    with pytest.raises(ConfigurationError) as raised:
        parse_tenants(text, SOURCE)
    message = str(raised.value)
    assert "tenants.acme.api_keys.0.hash: must be sha256:<64 lower-case hex digits>" in message
    assert "agentstream tenants hash-key" in message and str(SOURCE) in message
    assert ACME_KEY not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (tenants_yaml().replace("max_running_tasks", "max_running"),
         "unknown key 'tenants.acme.limits.max_running'; valid keys there are "
         "['daily_cost_usd', 'max_running_tasks', 'requests_per_minute']"),
        (tenants_yaml().replace("roles: [submitter, operator]", "roles: [admin]"),
         "tenants.acme.api_keys.0.roles.0: Input should be 'submitter' or 'operator'"),
        (tenants_yaml().replace("name: bot", "name: ci").replace("globex:", "acme2:") + "", None),
        (tenants_yaml().replace(hash_api_key(GLOBEX_KEY), hash_api_key(ACME_KEY)),
         "the key 'bot' of tenant 'globex' has the same hash as a key of tenant 'acme'"),
        (tenants_yaml().replace("daily_cost_usd: 2.5", "daily_cost_usd: -1"),
         "tenants.acme.limits.daily_cost_usd: Input should be greater than or equal to 0 (got -1)"),
        (tenants_yaml("jwt: {issuer: https://id.example, audience: agentstream}"),
         "jwt: needs hs256_secret_env"),
        (tenants_yaml("jwt: {issuer: i, audience: a, hs256_secret: x}"),
         "unknown key 'jwt.hs256_secret'; valid keys there are ['audience', 'hs256_secret_env', 'issuer', "
         "'leeway_s', 'roles_claim', 'rs256_public_key_file', 'tenant_claim']"),
        ("tenants: {'acme corp': {}}", "tenant ids ['acme corp'] are not valid"),
        ("- acme", "must hold a mapping with a `tenants:` section"),
    ],
)
def test_mistakes_name_the_field_and_the_fix(text: str, expected: str | None) -> None:
    if expected is None:  # the same key name in two tenants is fine: names are per tenant
        parse_tenants(text, SOURCE)
        return
    with pytest.raises(ConfigurationError) as raised:
        parse_tenants(text, SOURCE)
    assert expected in str(raised.value)


def test_a_key_name_used_twice_in_one_tenant_is_refused() -> None:
    text = tenants_yaml().replace("roles: [submitter, operator]}", f"roles: [submitter]}}\n      - {{name: ci, hash: \"{hash_api_key('x' * 40)}\"}}")
    with pytest.raises(ConfigurationError, match=r"api key names \['ci'\] are used twice"):
        parse_tenants(text, SOURCE)


def test_all_lists_the_public_names() -> None:
    public = {name for name in vars(tenancy) if not name.startswith("_") and name not in {"annotations"}}
    modules = {name for name in public if type(getattr(tenancy, name)).__name__ == "module"}
    assert set(tenancy.__all__) == public - modules


def test_hash_key_reads_one_key_from_stdin_without_its_newline() -> None:
    assert hash_key_from(io.StringIO(ACME_KEY + "\n")) == hash_api_key(ACME_KEY)
    with pytest.raises(ConfigurationError, match="No API key on stdin"):
        hash_key_from(io.StringIO(""))
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        hash_key_from(io.StringIO("abc\n"))


def test_the_roles_the_file_accepts_are_the_known_roles() -> None:
    assert set(get_args(Role)) == set(ROLES) == {"submitter", "operator"}
