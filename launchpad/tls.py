"""TLS for the embedded server: a private CA and a server certificate in the data directory.

``ensure_certificates`` makes, once, a CA (``tls/ca.pem`` + ``tls/ca.key``) and a server
certificate signed by it (``tls/server.pem`` + ``tls/server.key``) whose SubjectAltName
covers the names clients use to reach the server. Clients verify the server against
``ca.pem`` alone: copying it (never ``ca.key``) to a worker machine is all a worker needs
besides ``my_launchpad.yaml``. Keys are written mode 0600 in a mode-0700 directory and are
never logged. The certificates are made with the ``cryptography`` library.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nft_fw.launchpad.server import WILDCARD_HOSTS

logger = logging.getLogger(__name__)

TLS_SUBDIR = "tls"
CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
CA_DAYS = 10 * 365
SERVER_DAYS = 5 * 365


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files the server is started with, and the CA its clients verify it against."""

    cert_file: str
    key_file: str
    ca_file: str | None  # None: clients use their system trust store


def server_names(host: str) -> list[str]:
    """The SubjectAltName entries for a server listening on ``host``: the host itself (or,
    for a wildcard address, the machine's host names), plus localhost and 127.0.0.1."""
    names = [host] if host not in WILDCARD_HOSTS else []
    if host in WILDCARD_HOSTS:
        names += [socket.gethostname(), socket.getfqdn()]
    names += ["localhost", "127.0.0.1"]
    return list(dict.fromkeys(n for n in names if n))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (created 0600, not chmod-ed afterwards)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _new_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nft-fw"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"nft-fw CA {socket.gethostname()}"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(tls_dir / CA_KEY, _key_pem(key))
    _write_public(tls_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    logger.info("created a private CA in %s (%s stays on this machine)", tls_dir, CA_KEY)
    return cert, key


def _load_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((tls_dir / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((tls_dir / CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{tls_dir / CA_KEY} is not the EC key nft-fw writes")
    return cert, key


def certificate_names(cert_file: str | os.PathLike[str]) -> set[str]:
    """The DNS names and IP addresses in the SubjectAltName of a PEM certificate (the first
    one of the file, the server's own in a chain)."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(n) for n in san.get_values_for_type(x509.IPAddress)
    }


def _new_server_cert(
    tls_dir: Path, names: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(tls_dir / SERVER_KEY, _key_pem(key))
    _write_public(tls_dir / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM))
    logger.info("issued a server certificate for %s in %s", ", ".join(names), tls_dir)


def ensure_certificates(data_dir: str | os.PathLike[str], host: str) -> TlsFiles:
    """The CA and server certificate for a server on ``data_dir`` listening on ``host``.

    Made on the first call and reused afterwards. The CA is never replaced (workers hold a
    copy of ``ca.pem``); the server certificate is issued again, by the same CA, only when
    it does not cover the names of ``host`` (the server moved to another interface).
    """
    tls_dir = Path(data_dir).expanduser().resolve() / TLS_SUBDIR
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert_file, ca_key_file = tls_dir / CA_CERT, tls_dir / CA_KEY
    cert_file, key_file = tls_dir / SERVER_CERT, tls_dir / SERVER_KEY
    names = server_names(host)
    fresh_ca = False
    if ca_cert_file.exists() and ca_key_file.exists():
        ca_cert, ca_key = _load_ca(tls_dir)
    elif ca_cert_file.exists() or ca_key_file.exists():
        present = ca_cert_file if ca_cert_file.exists() else ca_key_file
        raise FileNotFoundError(
            f"{present} exists but its pair ({CA_KEY if present == ca_cert_file else CA_CERT}) "
            f"does not: restore it, or remove {tls_dir} to make a new CA (and copy the new "
            f"{CA_CERT} to every worker machine)"
        )
    else:
        ca_cert, ca_key = _new_ca(tls_dir)
        fresh_ca = True
    current = (
        not fresh_ca
        and cert_file.exists()
        and key_file.exists()
        and set(names) <= certificate_names(cert_file)
    )
    if not current:
        _new_server_cert(tls_dir, names, ca_cert, ca_key)
    return TlsFiles(cert_file=str(cert_file), key_file=str(key_file), ca_file=str(ca_cert_file))
