"""TLS material of the local stack: one private CA, one server certificate for loopback.

``paylake stack up`` calls :func:`ensure` once: the CA (EC P-256, ten years) and a
server certificate it signs (SAN ``IP:127.0.0.1``, ``DNS:localhost``, one year,
re-issued a month before it expires or when it no longer chains to the CA) are
written under ``<state>/tls/``. Private keys are files of mode 0600; the CA's key
never leaves that folder. Every paylake client verifies servers against
``ca.pem`` (``PAYLAKE_TLS_CA_FILE``); nothing disables verification.

Production uses the certificates of the managed services (RDS, DocumentDB,
S3, Snowflake, ElastiCache) and an ACM/cert-manager issued one for the cluster's
ingress; only the CA file a client trusts changes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def trust_bundle(self) -> Path:
        """The public CAs plus the stack's CA: for clients that take one process-wide file (delta-rs,
        requests), so that trusting the stack does not distrust the rest of the world."""
        return self.folder / "trust-bundle.pem"



def ensure(folder: Path) -> tuple[TlsFiles, list[str]]:
    """Create what is missing or due; return the files and what was done."""
    files = TlsFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # certificates are public; the keys below are 0600
    actions = []
    now = dt.datetime.now(dt.UTC)
    if not (files.ca_cert.is_file() and files.ca_key.is_file()) or _expires(files.ca_cert) - now < RENEW_BEFORE:
        _write_ca(files, now)
        actions.append("created the local CA")
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    if not files.server_cert.is_file() or not files.server_key.is_file() \
            or _expires(files.server_cert) - now < RENEW_BEFORE or not _issued_by(files.server_cert, ca_cert):
        _write_server(files, ca_cert, now)
        actions.append("issued the server certificate")
    public = _public_cas()
    files.trust_bundle.write_bytes((public.read_bytes() if public else b"") + b"\n" + files.ca_cert.read_bytes())
    return files, actions


def _public_cas() -> Path | None:
    try:
        import certifi

        return Path(certifi.where())
    except ImportError:
        import ssl

        found = ssl.get_default_verify_paths().openssl_cafile
        return Path(found) if found and Path(found).is_file() else None


def trust(ca_file: str | None) -> None:
    """Make this process's clients that read the environment (delta-rs' object_store, MLflow's requests, the
    Snowflake connector) verify servers against the stack's CA as well as the public ones. Idempotent; a no-op
    without a CA file (production: the system's trust store)."""
    if not ca_file:
        return
    bundle = Path(ca_file).with_name("trust-bundle.pem")
    if not bundle.is_file():
        return
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
        os.environ[name] = str(bundle)
    os.environ.pop("SSL_CERT_DIR", None)  # else OpenSSL-based clients also read a directory of other CAs


def _expires(path: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def _issued_by(path: Path, ca_cert: x509.Certificate) -> bool:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # noqa: BLE001 - any failure: re-issue
        return False
    return True


def _write_ca(files: TlsFiles, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "paylake local stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "paylake local CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(files.ca_key, key)
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.unlink(missing_ok=True)  # a new CA re-issues the server certificate


def _write_server(files: TlsFiles, ca_cert: x509.Certificate, now: dt.datetime) -> None:
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "paylake local stack"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    names = [x509.DNSName(n) for n in SERVER_NAMES] + [x509.IPAddress(ipaddress.ip_address(i)) for i in SERVER_IPS]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(files.server_key, key)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)
