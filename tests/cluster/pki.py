"""Key material for the test control plane: a CA, the apiserver's serving cert, the
service-account signing key, and the static tokens of the harness's own users.

Everything is generated fresh per control plane (``cryptography``, which PyJWT's
``crypto`` extra already brings) into the control plane's directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["Pki", "write_pki"]


@attrs.frozen
class Pki:
    """Paths of the generated files and the tokens of the harness's users."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_private_key: Path
    sa_public_key: Path
    token_file: Path
    #: ``system:masters``: the harness, the node agent, controller-manager, scheduler.
    admin_token: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def write_pki(directory: Path) -> Pki:
    """Generate the CA, the serving cert for 127.0.0.1/localhost, the SA key, tokens."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("k8si-test-ca"))
          .issuer_name(_name("k8si-test-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
             x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
    serving = (x509.CertificateBuilder().subject_name(_name("kube-apiserver"))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.SubjectAlternativeName(names), critical=False)
               .sign(ca_key, hashes.SHA256()))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = Pki(ca_cert=directory / "ca.crt", serving_cert=directory / "apiserver.crt",
              serving_key=directory / "apiserver.key", sa_private_key=directory / "sa.key",
              sa_public_key=directory / "sa.pub", token_file=directory / "tokens.csv",
              admin_token=secrets.token_urlsafe(32))
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    pki.serving_key.write_bytes(_pem_key(key))
    pki.sa_private_key.write_bytes(_pem_key(sa_key))
    pki.sa_public_key.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    pki.token_file.write_text(f'{pki.admin_token},k8si-harness-admin,0,"system:masters"\n')
    for path in (pki.serving_key, pki.sa_private_key, pki.token_file):
        path.chmod(0o600)
    return pki
