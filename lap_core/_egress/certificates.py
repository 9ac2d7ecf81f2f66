"""The egress gateway's certificate authority: one per deployment, and the leaf certificates it signs.

Where the gateway must see inside HTTPS (to put a secret's real value in place of its stub), it
terminates TLS with a certificate for the host, signed by this CA, which sandboxes trust (its
certificate is in their CA bundle; its private key never enters a sandbox). The CA is made once
and kept in `<data>/secrets/egress-ca.crt` and `egress-ca.key` (0600), or read from
`LAP_EGRESS_CA_CERT` / `LAP_EGRESS_CA_KEY` (every worker of a deployment needs the same one).
A leaf's issuer is the CA's subject byte for byte (GnuTLS, which Debian's git uses, checks that).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Authority"]

LEAF_DAYS = 7
CA_YEARS = 10


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_ca() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LAP"),
            x509.NameAttribute(NameOID.COMMON_NAME, "LAP egress gateway CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


class Authority:
    """Signs leaf certificates for the hosts whose HTTPS the gateway terminates."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, *, work_dir: Path) -> None:
        self.cert_pem = cert_pem
        self._cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the egress CA's key must be an EC key")
        self._key = key
        # One key for every leaf: making a key per host costs more and protects nothing more.
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        # ssl loads certificates from files only: a directory of this process's alone.
        work_dir.mkdir(parents=True, exist_ok=True)
        work_dir.chmod(0o700)
        self._dir = Path(tempfile.mkdtemp(prefix="leaves-", dir=work_dir))
        self._leaf_key_path = self._dir / "leaf.key"
        _write_private(
            self._leaf_key_path,
            self._leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        self._contexts = lru_cache(maxsize=1024)(self._context_for)

    @classmethod
    def load(cls, data_dir: Path, *, cert_path: str | None = None, key_path: str | None = None) -> Authority:
        """Load the deployment's CA (made on first use unless both paths are given)."""
        if cert_path and key_path:
            cert, key = Path(cert_path).read_bytes(), Path(key_path).read_bytes()
        else:
            cert_file, key_file = data_dir / "secrets" / "egress-ca.crt", data_dir / "secrets" / "egress-ca.key"
            if not key_file.exists():
                cert, key = _new_ca()
                try:
                    _write_private(key_file, key)
                    cert_file.write_bytes(cert)
                except FileExistsError:
                    pass  # another process made it first
            for _ in range(50):  # the other process may still be writing the certificate
                if cert_file.exists() and cert_file.stat().st_size:
                    break
                time.sleep(0.02)
            cert, key = cert_file.read_bytes(), key_file.read_bytes()
        return cls(cert, key, work_dir=data_dir / "run" / "egress")

    def leaf(self, host: str) -> bytes:
        """Return a certificate (PEM) for `host`, signed by the CA."""
        try:
            subject_alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            subject_alternative = x509.DNSName(host)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1))
            .not_valid_after(_now() + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([subject_alternative]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def context_for(self, host: str) -> ssl.SSLContext:
        """Return a server-side TLS context presenting `host`'s certificate (HTTP/1.1 only).

        Made once a day per host: a leaf lives `LEAF_DAYS`, so a long-running process never serves
        an expired one.
        """
        return self._contexts(host, int(time.time() // 86400))

    def _context_for(self, host: str, day: int) -> ssl.SSLContext:
        path = self._dir / f"{len(os.listdir(self._dir))}.pem"
        path.write_bytes(self.leaf(host) + self.cert_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(path, self._leaf_key_path)
        context.set_alpn_protocols(["http/1.1"])
        return context
