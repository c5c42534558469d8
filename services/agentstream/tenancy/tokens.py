"""JWT bearer tokens: HS256 or RS256, checked for signature, expiry, issuer and audience.

PyJWT (``pyjwt[crypto]``, the ``tenancy`` extra) does the verification: it is the most
used JWT library for Python, small, maintained, and refuses the classic pitfalls (the
"none" algorithm, an RSA public key used as an HMAC secret) when given an explicit
algorithm list, which this module always passes: the algorithm comes from the deployment's
keys, never from the token alone. It is imported when a jwt section is configured, so a
router that enforces limits needs no JWT library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from agentstream.errors import ConfigurationError
from agentstream.tenancy.config import JwtSection
from agentstream.tenancy.errors import AuthError
from agentstream.tenancy.identity import ROLES

HS256 = "HS256"
RS256 = "RS256"
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash output
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


@dataclass(frozen=True)
class Claims:
    tenant_id: str
    subject: str
    roles: frozenset[str]


@dataclass(frozen=True)
class TokenVerifier:
    section: JwtSection
    keys: Mapping[str, Any]  # algorithm -> its key: the HS256 secret, the RS256 public key

    @classmethod
    def from_section(cls, section: JwtSection, base: Path, environ: Mapping[str, str] | None = None) -> TokenVerifier:
        """Read the keys the section names (``base``: the tenants file's folder)."""
        keys: dict[str, Any] = {}
        if section.hs256_secret_env is not None:
            keys[HS256] = _secret(section.hs256_secret_env, os.environ if environ is None else environ)
        if section.rs256_public_key_file is not None:
            keys[RS256] = _public_key(base / section.rs256_public_key_file)
        return cls(section, keys)

    def verify(self, token: str) -> Claims:
        """The token's tenant, subject and roles; AuthError 401 if it does not verify."""
        jwt = _pyjwt()
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if algorithm not in self.keys:
                raise AuthError(f"The token is signed with {algorithm!r}; this deployment accepts {sorted(self.keys)}.")
            claims = jwt.decode(token, self.keys[algorithm], algorithms=[algorithm], audience=self.section.audience,
                                issuer=self.section.issuer, leeway=self.section.leeway_s,
                                options={"require": _REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise AuthError("The token has expired; get a new one.") from None
        except jwt.InvalidIssuerError:
            raise AuthError(f"The token's issuer is not {self.section.issuer!r}.") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"The token's audience is not {self.section.audience!r}.") from None
        except jwt.InvalidTokenError as exc:  # PyJWT's messages name the problem, never the token
            raise AuthError(f"The token is not valid: {exc}.") from None
        return self._claims(claims)

    def _claims(self, claims: Mapping[str, Any]) -> Claims:
        tenant = claims.get(self.section.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise AuthError(f"The token has no {self.section.tenant_claim!r} claim naming its tenant.")
        return Claims(tenant, str(claims["sub"]), _roles(claims.get(self.section.roles_claim)))


def _roles(value: object) -> frozenset[str]:
    """The known roles a claim grants: a list, or a space-separated string (the OAuth scope
    style). Roles of other systems in the same claim are not ours and are ignored."""
    names = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(name for name in names if name in ROLES)


def _secret(variable: str, environ: Mapping[str, str]) -> str:
    secret = environ.get(variable, "")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        state = "is not set" if not secret else f"holds {len(secret.encode())} bytes"
        raise ConfigurationError(
            f"jwt.hs256_secret_env names {variable}, which {state}; set it to a secret of at least "
            f"{MIN_SECRET_BYTES} bytes (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)."
        )
    return secret


def _public_key(path: Path) -> Any:
    _pyjwt()  # its crypto extra brings `cryptography`
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"Cannot read jwt.rs256_public_key_file {path}: {exc.strerror}; fix the path "
                                 "(relative paths are read from the tenants file's folder).") from exc
    except ValueError as exc:
        raise ConfigurationError(f"jwt.rs256_public_key_file {path} is not a PEM public key ({exc}); export the "
                                 "issuer's public key, e.g. `openssl rsa -in private.pem -pubout`.") from exc
    if not isinstance(key, RSAPublicKey):
        raise ConfigurationError(f"jwt.rs256_public_key_file {path} holds a {type(key).__name__}; RS256 needs an RSA key.")
    return key


def _pyjwt() -> ModuleType:
    try:
        import jwt
    except ImportError:
        raise ConfigurationError("The tenants file has a jwt section, which needs PyJWT: "
                                 "pip install 'agentstream[tenancy]'.") from None
    return jwt
