"""JWT bearer tokens (tenancy/tokens.py): HS256 and RS256 through the Tenants front door."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agentstream.errors import ConfigurationError
from agentstream.tenancy import AuthError, Principal, Tenants
from agentstream.tenancy.config import parse_tenants

ISSUER = "https://login.example.com/"
AUDIENCE = "agentstream"
SECRET = "s" * 48
SECRET_ENV = "TEST_JWT_SECRET"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def tenants(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Tenants:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "issuer.pem").write_bytes(pem)
    return _tenants(tmp_path, f"hs256_secret_env: {SECRET_ENV}, rs256_public_key_file: issuer.pem")


def _tenants(base: Path, keys: str, environ: dict[str, str] | None = None) -> Tenants:
    text = f"""
tenants:
  acme: {{}}
jwt: {{issuer: "{ISSUER}", audience: {AUDIENCE}, tenant_claim: org, roles_claim: roles, {keys}}}
"""
    return Tenants.from_file(parse_tenants(text, base / "tenants.yaml"), base, {SECRET_ENV: SECRET} if environ is None else environ)


def _claims(**changes: Any) -> dict[str, Any]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "org": "acme", "roles": ["operator", "billing-admin"],
              "exp": int(time.time()) + 300}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256(**changes: Any) -> str:
    return "Bearer " + jwt.encode(_claims(**changes), SECRET, algorithm="HS256")


def test_hs256_token_gives_tenant_subject_and_known_roles(tenants: Tenants) -> None:
    assert tenants.authenticate(_hs256(), None) == Principal("acme", "alice", frozenset({"operator"}))


def test_rs256_token_verifies_with_the_public_key(tenants: Tenants, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(roles="submitter operator"), rsa_key, algorithm="RS256")
    assert tenants.authenticate(f"bearer {token}", None) == Principal("acme", "alice", frozenset({"submitter", "operator"}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "The token has expired"),
        ({"iss": "https://evil.example/"}, f"issuer is not {ISSUER!r}"),
        ({"aud": "someone-else"}, f"audience is not {AUDIENCE!r}"),
        ({"exp": None}, 'Token is missing the "exp" claim'),
        ({"sub": None}, 'Token is missing the "sub" claim'),
        ({"org": None}, "no 'org' claim naming its tenant"),
    ],
)
def test_bad_claims_are_401(tenants: Tenants, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthError, match=message) as raised:
        tenants.authenticate(_hs256(**changes), None)
    assert raised.value.status == 401


def test_a_forged_or_garbled_token_is_401(tenants: Tenants) -> None:
    forged = "Bearer " + jwt.encode(_claims(), "f" * 48, algorithm="HS256")
    with pytest.raises(AuthError, match="Signature verification failed"):
        tenants.authenticate(forged, None)
    with pytest.raises(AuthError, match="The token is not valid") as raised:
        tenants.authenticate("Bearer not.a.token", None)
    assert "not.a.token" not in str(raised.value)


def test_an_algorithm_without_a_configured_key_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    hs_only = _tenants(tmp_path, f"hs256_secret_env: {SECRET_ENV}")
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    with pytest.raises(AuthError, match=r"signed with 'RS256'; this deployment accepts \['HS256'\]"):
        hs_only.authenticate(f"Bearer {token}", None)
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    with pytest.raises(AuthError, match="signed with 'none'"):
        hs_only.authenticate(f"Bearer {unsigned}", None)


def test_a_token_of_a_tenant_not_in_the_file_is_403(tenants: Tenants) -> None:
    with pytest.raises(AuthError, match="tenant 'initech' is not in the tenants file") as raised:
        tenants.authenticate(_hs256(org="initech"), None)
    assert raised.value.status == 403


@pytest.mark.parametrize(
    ("environ", "message"),
    [({}, "names TEST_JWT_SECRET, which is not set"), ({SECRET_ENV: "short"}, "which holds 5 bytes")],
)
def test_a_missing_or_short_secret_is_a_configuration_error(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _tenants(tmp_path, f"hs256_secret_env: {SECRET_ENV}", environ)


def test_a_bad_public_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"Cannot read jwt.rs256_public_key_file .*missing.pem"):
        _tenants(tmp_path, "rs256_public_key_file: missing.pem")
    (tmp_path / "garbage.pem").write_text("not a key")
    with pytest.raises(ConfigurationError, match="is not a PEM public key"):
        _tenants(tmp_path, "rs256_public_key_file: garbage.pem")
