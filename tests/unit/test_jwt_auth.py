"""JWT verification with real Ed25519 and RSA keys: accepted tokens and every refusal."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.jwt_auth import JwtConfig, JwtError, JwtIdentity, looks_like_jwt
from app.jwt_verify import JwtVerifier

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
ALGS = ["EdDSA", "RS256"]


def new_key(alg: str) -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: PrivateKey) -> str:
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "librechat", "aud": "codeapi", "sub": "user-1", "iat": now, "exp": now + 300}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: PrivateKey, alg: str, kid: str | None = None, **over: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**over), key, algorithm=alg, headers=headers)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(JwtError) as info:
        verifier.verify(token)
    return info.value.message


@pytest.fixture(params=ALGS)
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key(alg: str) -> PrivateKey:
    return new_key(alg)


@pytest.fixture
def verifier(key: PrivateKey) -> JwtVerifier:
    return JwtVerifier(JwtConfig(public_key_pem=public_pem(key)))


def test_valid_token_with_tenant_claim(verifier: JwtVerifier, key: PrivateKey, alg: str) -> None:
    identity = verifier.verify(sign(key, alg, tenant_id="acme_1"))
    assert identity == JwtIdentity(tenant="acme_1", user_id="user-1", key_id=None)


def test_valid_token_default_tenant(verifier: JwtVerifier, key: PrivateKey, alg: str) -> None:
    assert verifier.verify(sign(key, alg)).tenant == "default"
    custom = JwtVerifier(JwtConfig(public_key_pem=public_pem(key), default_tenant="t0"))
    assert custom.verify(sign(key, alg)).tenant == "t0"


def test_pem_from_file(tmp_path: Path, key: PrivateKey, alg: str) -> None:
    (tmp_path / "pub.pem").write_text(public_pem(key))
    verifier = JwtVerifier(JwtConfig(public_key_pem=str(tmp_path / "pub.pem")))
    assert verifier.verify(sign(key, alg)).user_id == "user-1"


def test_time_checks(verifier: JwtVerifier, key: PrivateKey, alg: str) -> None:
    now = int(time.time())
    assert refused(verifier, sign(key, alg, exp=now - 120)) == "token expired"
    assert refused(verifier, sign(key, alg, nbf=now + 600)) == "token not yet valid"
    assert refused(verifier, sign(key, alg, iat=now + 600)) == "token not yet valid"
    assert refused(verifier, sign(key, alg, exp=None)) == "missing claim: exp"
    # Within the leeway both ways.
    assert verifier.verify(sign(key, alg, exp=now - 10, nbf=now + 10, iat=now + 10))


def test_audience_and_issuer(verifier: JwtVerifier, key: PrivateKey, alg: str) -> None:
    assert refused(verifier, sign(key, alg, aud="other")) == "wrong audience"
    assert refused(verifier, sign(key, alg, iss="someone")) == "wrong issuer"
    assert refused(verifier, sign(key, alg, aud=None)) == "missing claim: aud"
    custom = JwtVerifier(JwtConfig(public_key_pem=public_pem(key), issuer="i", audience="a"))
    assert custom.verify(sign(key, alg, iss="i", aud="a"))
    assert refused(custom, sign(key, alg, iss="i")) == "wrong audience"
    assert refused(custom, sign(key, alg, aud="a")) == "wrong issuer"


def test_signed_with_another_key(verifier: JwtVerifier, alg: str) -> None:
    assert refused(verifier, sign(new_key(alg), alg)) == "bad signature"


def test_tampered_payload(verifier: JwtVerifier, key: PrivateKey, alg: str) -> None:
    head, _, sig = sign(key, alg).split(".")
    forged = f"{head}.{b64(claims(sub='admin'))}.{sig}"
    assert refused(verifier, forged) == "bad signature"


def test_alg_none_refused(verifier: JwtVerifier) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    assert looks_like_jwt(token)
    assert refused(verifier, token) == "unsupported algorithm"
    assert refused(verifier, token + "AAAA") == "unsupported algorithm"


def test_hs256_key_confusion_refused(verifier: JwtVerifier, key: PrivateKey) -> None:
    secret = public_pem(key).encode()
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims())}"
    mac = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
    sig = base64.urlsafe_b64encode(mac.sign(signing_input.encode(), secret)).rstrip(b"=")
    assert refused(verifier, f"{signing_input}.{sig.decode()}") == "unsupported algorithm"


def test_other_supported_alg_with_wrong_key_type(verifier: JwtVerifier, alg: str) -> None:
    other = "RS256" if alg == "EdDSA" else "EdDSA"
    assert refused(verifier, sign(new_key(other), other)) == "algorithm does not match key"


def test_subject_and_tenant_claims(verifier: JwtVerifier, key: PrivateKey, alg: str) -> None:
    assert refused(verifier, sign(key, alg, sub=None)) == "missing claim: sub"
    assert refused(verifier, sign(key, alg, sub="")) == "missing subject"
    for bad in ["../etc", "a b", "x" * 65, "", 7, "ten\n"]:
        assert refused(verifier, sign(key, alg, tenant_id=bad)) == "invalid tenant_id"


def test_malformed_tokens(verifier: JwtVerifier, key: PrivateKey, alg: str) -> None:
    for token in ["garbage", "a.b", "", "a.b.c.d", "a!.b.c", "x" * 20000 + ".a.b"]:
        assert not looks_like_jwt(token) or len(token) > 16384
        assert refused(verifier, token) == "malformed token"
    assert refused(verifier, "abc.def.ghi") == "malformed token"
    not_json = jwt.api_jws.encode(b"not json", key, algorithm=alg)  # signed, but no claims
    assert refused(verifier, not_json) == "malformed token"
    not_object = jwt.api_jws.encode(b"[1]", key, algorithm=alg)
    assert refused(verifier, not_object) == "malformed token"


def test_looks_like_jwt(key: PrivateKey, alg: str) -> None:
    assert looks_like_jwt(sign(key, alg))
    assert not looks_like_jwt("k8si_0123456789abcdef")
    assert not looks_like_jwt("a.b")


def _jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "RS256"
    algorithm = jwt.get_algorithm_by_name(alg)
    data: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig"}


def test_jwks_selects_by_kid(tmp_path: Path) -> None:
    ed, rs = new_key("EdDSA"), new_key("RS256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(ed, "ed-1"), _jwk(rs, "rs-1")]}))
    verifier = JwtVerifier(JwtConfig(jwks_path=path))
    assert verifier.verify(sign(ed, "EdDSA", kid="ed-1")).key_id == "ed-1"
    assert verifier.verify(sign(rs, "RS256", kid="rs-1")).key_id == "rs-1"
    assert refused(verifier, sign(ed, "EdDSA", kid="rs-1")) == "algorithm does not match key"
    assert refused(verifier, sign(ed, "EdDSA", kid="nope")) == "unknown key id"
    assert refused(verifier, sign(ed, "EdDSA")) == "unknown key id"


def test_keys_dir_selects_by_kid(tmp_path: Path, alg: str) -> None:
    first, second = new_key(alg), new_key(alg)
    (tmp_path / "k1.pem").write_text(public_pem(first))
    (tmp_path / "k2.pem").write_text(public_pem(second))
    verifier = JwtVerifier(JwtConfig(keys_dir=tmp_path))
    assert verifier.verify(sign(first, alg, kid="k1")).key_id == "k1"
    assert verifier.verify(sign(second, alg, kid="k2")).key_id == "k2"
    assert refused(verifier, sign(first, alg, kid="k2")) == "bad signature"
    assert refused(verifier, sign(first, alg, kid="k3")) == "unknown key id"
    assert refused(verifier, sign(first, alg, kid="../k1")) == "unknown key id"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (JwtConfig(), "exactly one"),
        (JwtConfig(public_key_pem="/nonexistent/key.pem"), "cannot read"),
        (JwtConfig(jwks_path=Path("/nonexistent/jwks.json")), "cannot read"),
        (JwtConfig(keys_dir=Path("/nonexistent/keys")), "not a readable directory"),
        (JwtConfig(public_key_pem="-----BEGIN PUBLIC KEY-----\nAAAA\n"), "not a valid PEM"),
    ],
)
def test_bad_configuration(config: JwtConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JwtVerifier(config)


def test_bad_configuration_files(tmp_path: Path) -> None:
    ed = new_key("EdDSA")
    both = JwtConfig(public_key_pem=public_pem(ed), keys_dir=tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        JwtVerifier(both)
    with pytest.raises(ValueError, match="no keys"):
        JwtVerifier(JwtConfig(keys_dir=tmp_path))
    (tmp_path / "jwks.json").write_text("not json")
    with pytest.raises(ValueError, match="'keys' list"):
        JwtVerifier(JwtConfig(jwks_path=tmp_path / "jwks.json"))
    private = {**_jwk(ed, "k"), "d": "AAAA"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [private]}))
    with pytest.raises(ValueError, match="public signing key"):
        JwtVerifier(JwtConfig(jwks_path=tmp_path / "jwks.json"))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="shorter than"):
        JwtVerifier(JwtConfig(public_key_pem=public_pem(small)))
    with pytest.raises(ValueError, match="leeway"):
        JwtVerifier(JwtConfig(public_key_pem=public_pem(ed), leeway_seconds=-1))
