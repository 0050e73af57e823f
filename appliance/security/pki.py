"""The box's own small PKI: a local CA, the server certificate and client certificates.

ECDSA P-256 everywhere: every TLS 1.3 client (browsers included) accepts it, which Ed25519
certificates cannot promise yet. The CA key never leaves ``secrets/tls``; certificates are
public (0644), keys 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.security.files import secret_dir, write_public, write_secret

CA_DAYS = 3650
LEAF_DAYS = 397
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class PkiError(Exception):
    """Something the operator must fix: phrased for them."""


@dataclass(frozen=True)
class TlsFiles:
    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    def client(self, name: str) -> tuple[Path, Path]:
        return self.root / "clients" / f"{name}.crt", self.root / "clients" / f"{name}.key"


def tls_files(secrets_dir: Path) -> TlsFiles:
    return TlsFiles(secrets_dir / "tls")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Edge AI appliance"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def init_ca(files: TlsFiles, force: bool = False) -> None:
    if files.ca_key.exists() and not force:
        raise PkiError(f"a CA already exists in {files.root}; use --force to replace it "
                       "(every issued certificate stops being trusted)")
    secret_dir(files.root)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"appliance CA {socket.gethostname()}")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    write_secret(files.ca_key, _key_pem(key))
    write_public(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(files: TlsFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if not files.ca_key.exists():
        raise PkiError(f"no CA in {files.root}: run 'appliance certs init' first")
    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{files.ca_key} is not an EC key")
    return key, x509.load_pem_x509_certificate(files.ca_cert.read_bytes())


def _leaf(common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName],
          days: int, files: TlsFiles) -> tuple[bytes, bytes]:
    ca_key, ca_cert = _load_ca(files)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(common_name))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(_now() - dt.timedelta(minutes=5))
               .not_valid_after(_now() + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server(files: TlsFiles, hosts: list[str], days: int = LEAF_DAYS) -> list[str]:
    """(Re)issue the server certificate. Written key first, then certificate, each atomically;
    the gateway reloads the pair once both have changed (see ``tls.ReloadingContext``)."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *hosts]
    unique = list(dict.fromkeys(n for n in names if n))
    cert, key = _leaf(socket.gethostname(), ExtendedKeyUsageOID.SERVER_AUTH,
                      [_san(n) for n in unique], days, files)
    write_secret(files.server_key, key)
    write_public(files.server_cert, cert)
    return unique


def issue_client(files: TlsFiles, name: str, days: int = LEAF_DAYS) -> tuple[Path, Path]:
    if not SAFE_NAME.match(name):
        raise PkiError(f"client name {name!r}: use 1-128 of A-Z a-z 0-9 . _ : -")
    cert, key = _leaf(name, ExtendedKeyUsageOID.CLIENT_AUTH, [], days, files)
    cert_path, key_path = files.client(name)
    write_secret(key_path, key)
    write_public(cert_path, cert)
    return cert_path, key_path


@dataclass(frozen=True)
class CertInfo:
    path: Path
    subject: str
    not_after: dt.datetime
    key_bits: int
    key_type: str

    def days_left(self) -> float:
        return (self.not_after - _now()).total_seconds() / 86400


def inspect(path: Path) -> CertInfo:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    public = cert.public_key()
    bits = getattr(public, "key_size", 256)
    return CertInfo(path, cert.subject.rfc4514_string(), cert.not_valid_after_utc, bits,
                    type(public).__name__.lstrip("_"))
