"""Verification of LibreChat-minted bearer JWTs (EdDSA/Ed25519 or RS256 only).

Keys come from configuration: one PEM public key (text or a file path), a JWKS
document (a JSON file), or a directory of ``<kid>.pem`` public keys. They are loaded
once at construction, so configuration errors surface at start-up as ``ValueError``.
Each key fixes its algorithm (Ed25519 -> EdDSA, RSA -> RS256); the token header may
not choose another, which rules out ``alg: none`` and HS256 key confusion. A token
that fails any check raises ``JwtError`` with a short message that reveals no key
material or claim values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .jwt_auth import JwtConfig, JwtError, JwtIdentity, looks_like_jwt

__all__ = ["JwtVerifier"]

PublicKey = Ed25519PublicKey | RSAPublicKey

_TENANT_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_TOKEN_LENGTH = 16384
_MIN_RSA_BITS = 2048

# Checked in order: subclasses before their bases (InvalidSignatureError is a DecodeError).
_ERRORS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "unsupported algorithm"),
    (jwt.InvalidIssuedAtError, "bad issued-at time"),
    (jwt.DecodeError, "malformed token"),
)


def _with_algorithm(key: object, where: str) -> tuple[PublicKey, str]:
    """The key and the one algorithm it may verify: Ed25519 -> EdDSA, RSA -> RS256."""
    if isinstance(key, Ed25519PublicKey):
        return key, "EdDSA"
    if isinstance(key, RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"{where}: RSA key shorter than {_MIN_RSA_BITS} bits")
        return key, "RS256"
    raise ValueError(f"{where}: not an Ed25519 or RSA public key")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_pem(data: bytes, where: str) -> tuple[PublicKey, str]:
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not a valid PEM public key") from exc
    return _with_algorithm(key, where)


def _load_jwks(path: Path) -> dict[str | None, tuple[PublicKey, str]]:
    where = f"JWKS {path}"
    data = _read(path, "JWKS file")
    try:
        entries = json.loads(data).get("keys")
    except (ValueError, AttributeError):
        entries = None
    if not isinstance(entries, list):
        raise ValueError(f"{where}: not a JSON document with a 'keys' list") from None
    keys: dict[str | None, tuple[PublicKey, str]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "d" in entry or entry.get("use", "sig") != "sig":
            raise ValueError(f"{where}: every key must be a public signing key")
        kid = entry.get("kid")
        if (kid is not None and not isinstance(kid, str)) or kid in keys:
            raise ValueError(f"{where}: 'kid' {kid!r} is not a string or is a duplicate")
        try:
            key: object = jwt.PyJWK(entry).key
        except jwt.PyJWTError as exc:
            raise ValueError(f"{where}: unusable key {kid!r}") from exc
        keys[kid] = _with_algorithm(key, f"{where} key {kid!r}")
        if entry.get("alg", keys[kid][1]) != keys[kid][1]:
            raise ValueError(f"{where}: key {kid!r} declares another alg")
    return keys


def _load_keys(config: JwtConfig) -> dict[str | None, tuple[PublicKey, str]]:
    sources = [config.public_key_pem, config.jwks_path, config.keys_dir]
    if sum(s is not None for s in sources) != 1:
        raise ValueError("JWT auth needs exactly one of: a PEM public key, a JWKS file, a key dir")
    if config.public_key_pem is not None:
        pem = config.public_key_pem
        if pem.lstrip().startswith("-----BEGIN"):
            return {None: _load_pem(pem.encode(), "JWT public key")}
        path = Path(pem)
        return {None: _load_pem(_read(path, "JWT public key file"), f"JWT public key {path}")}
    if config.jwks_path is not None:
        keys = _load_jwks(config.jwks_path)
    else:
        assert config.keys_dir is not None
        if not config.keys_dir.is_dir():
            raise ValueError(f"JWT key directory {config.keys_dir} is not a readable directory")
        keys = {
            p.stem: _load_pem(_read(p, "JWT key file"), f"JWT key {p}")
            for p in sorted(config.keys_dir.glob("*.pem"))
        }
    if not keys:
        raise ValueError("JWT key source holds no keys")
    return keys


class JwtVerifier:
    """Verifies bearer JWTs against keys loaded once from a ``JwtConfig``."""

    def __init__(self, config: JwtConfig) -> None:
        if not config.issuer or not config.audience:
            raise ValueError("JWT issuer and audience must not be empty")
        if config.leeway_seconds < 0:
            raise ValueError("JWT leeway must not be negative")
        if _TENANT_SHAPE.fullmatch(config.default_tenant) is None:
            raise ValueError("JWT default tenant has an invalid shape")
        self._config = config
        self._keys = _load_keys(config)

    def _select(self, kid: object) -> tuple[str | None, PublicKey, str]:
        if len(self._keys) == 1 and (kid is None or None in self._keys):
            kid = next(iter(self._keys))  # a lone key (a PEM key: whatever the header says)
        elif not isinstance(kid, str) or kid not in self._keys:
            raise JwtError("unknown key id")
        return (kid, *self._keys[kid])

    def verify(self, token: str) -> JwtIdentity:
        """Check ``token`` and return its identity, or raise ``JwtError``."""
        if len(token) > _MAX_TOKEN_LENGTH or not looks_like_jwt(token):
            raise JwtError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise JwtError("malformed token") from None
        if header.get("alg") not in ("EdDSA", "RS256"):
            raise JwtError("unsupported algorithm")
        kid, key, alg = self._select(header.get("kid"))
        if header["alg"] != alg:
            raise JwtError("algorithm does not match key")
        claims = self._decode(token, key, alg)
        sub, tenant = claims.get("sub"), claims.get("tenant_id", self._config.default_tenant)
        if not isinstance(sub, str) or not sub:
            raise JwtError("missing subject")
        if not isinstance(tenant, str) or _TENANT_SHAPE.fullmatch(tenant) is None:
            raise JwtError("invalid tenant_id")
        return JwtIdentity(tenant=tenant, user_id=sub, key_id=kid)

    def _decode(self, token: str, key: PublicKey, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, key, algorithms=[alg], audience=self._config.audience,
                issuer=self._config.issuer, leeway=self._config.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise JwtError(f"missing claim: {exc.claim}") from None
        except jwt.PyJWTError as exc:
            message = next((m for kind, m in _ERRORS if isinstance(exc, kind)), "invalid token")
            raise JwtError(message) from None
