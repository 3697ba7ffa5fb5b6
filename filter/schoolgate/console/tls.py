"""The console's HTTPS certificate: the school's own, or a separate one the appliance makes.

The interception CA cannot serve here: its name constraints limit it to the sharing domains, on
purpose. A made certificate is self-signed (ECDSA P-256, 397 days, the longest browsers accept),
names the console's address and host name, and is made again when those change or it nears
expiry. Staff devices trust it by its fingerprint or by installing it (docs/dsl.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schoolgate.console.settings import ConsoleConfig
from schoolgate.errors import SchoolgateError

VALID_DAYS = 397
RENEW_DAYS = 30


class ConsoleTlsError(SchoolgateError):
    """The console's certificate or key cannot be read or made."""


def certificate(settings: ConsoleConfig, listen_host: str) -> tuple[Path, Path]:
    """The certificate and key files to serve with (made or renewed when needed)."""
    if settings.cert_file is not None and settings.key_file is not None:
        for path in (settings.cert_file, settings.key_file):
            if not os.access(path, os.R_OK):
                raise ConsoleTlsError(f"console.tls: {path} cannot be read")
        _load(settings.cert_file)
        return settings.cert_file, settings.key_file
    names = _names(settings, listen_host)
    cert_path = settings.made_cert_dir / "console.crt"
    key_path = settings.made_cert_dir / "console.key"
    if cert_path.exists() and key_path.exists() and _still_good(_load(cert_path), names):
        return cert_path, key_path
    _make(cert_path, key_path, names)
    return cert_path, key_path


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint, as browsers show it, for staff to compare when trusting it."""
    digest = _load(cert_path).fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _names(settings: ConsoleConfig, listen_host: str) -> list[str]:
    names = ["localhost", socket.gethostname()]
    if settings.base_url:
        names.insert(0, urlsplit(settings.base_url).hostname or "")
    if listen_host not in ("0.0.0.0", "::"):
        names.append(listen_host)
    return [n for n in dict.fromkeys(names) if n]


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _still_good(cert: x509.Certificate, names: list[str]) -> bool:
    renew_at = cert.not_valid_after_utc - dt.timedelta(days=RENEW_DAYS)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return dt.datetime.now(dt.UTC) < renew_at and set(san) == set(_san(names))


def _make(cert_path: Path, key_path: Path, names: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "schoolgate console"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConsoleTlsError(f"cannot write the console certificate: {exc}") from exc


def _load(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConsoleTlsError(f"{path} is not a readable PEM certificate: {exc}") from exc
