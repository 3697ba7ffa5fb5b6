"""The appliance's interception CA: name-constrained to the catalogued sharing domains.

A stolen key can then only impersonate the domains the catalog intercepts, never a bank or a
government site: the CA carries a critical X.509 NameConstraints extension whose permitted DNS
subtrees are `Catalog.inspected_domains()` and whose excluded subtrees are every IPv4 and IPv6
address. Clients (OpenSSL, BoringSSL/Chrome, Apple, Windows) reject any leaf outside them.

The files are written where mitmproxy's CertStore reads them (`<confdir>/mitmproxy-ca.pem`, key then
certificate), so mitmproxy uses this CA instead of generating an unconstrained one. The key file is
0600 in a 0700 directory. This module knows nothing of mitmproxy beyond those file names.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import plistlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schoolgate.errors import SchoolgateError
from schoolgate.files import write_atomic

# mitmproxy's CONF_BASENAME: CertStore.from_store() loads `<confdir>/mitmproxy-ca.pem`.
KEY_AND_CERT: Final = "mitmproxy-ca.pem"
CERT_PEM: Final = "mitmproxy-ca-cert.pem"
CERT_CER: Final = "mitmproxy-ca-cert.cer"  # PEM again, the name Android's installer expects
CERT_P12: Final = "mitmproxy-ca-cert.p12"  # certificate only, for Windows' import wizard
# Files mitmproxy itself may have left beside an unconstrained CA: removed when the CA is replaced,
# because `mitmproxy-ca.p12` holds a second copy of the old private key.
STALE_FILES: Final = ("mitmproxy-ca.p12",)

DEFAULT_VALIDITY_DAYS: Final = 1825
# Devices with a slightly wrong clock must still accept the CA the day it is made.
BACKDATE: Final = datetime.timedelta(days=1)
# RSA 2048 is mitmproxy's own key size and the path its TLS code is tested with; every leaf reuses
# this key, so its cost is paid on each handshake (3072 is ~3x slower to sign on a Pi).
KEY_SIZE: Final = 2048
EXCLUDED_NETWORKS: Final = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
PROFILE_IDENTIFIER: Final = "org.schoolgate.ca"

type ExportFormat = Literal["pem", "der", "mobileconfig"]
EXPORT_FORMATS: Final[tuple[ExportFormat, ...]] = ("pem", "der", "mobileconfig")


class CaError(SchoolgateError):
    """The CA is missing, unusable or unsafe; the message says what to run."""


@dataclass(frozen=True)
class NamePolicy:
    """What a CA's name constraints allow: DNS names under `permitted`, no IP addresses."""

    permitted: tuple[str, ...]
    excluded_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    constrained: bool = True

    def permits_dns(self, name: str) -> bool:
        """RFC 5280 dNSName subtrees: a constraint covers itself and every subdomain."""
        if not self.constrained:
            return True
        host = name.lower().rstrip(".").removeprefix("*.")
        return any(host == base or host.endswith("." + base) for base in self.permitted)

    def permits_ip(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return not any(address in network for network in self.excluded_networks)

    def permits(self, name: x509.GeneralName) -> bool:
        """Whether a client would accept this subjectAltName under the CA."""
        if isinstance(name, x509.DNSName):
            return self.permits_dns(name.value)
        if isinstance(name, x509.IPAddress):
            value = name.value
            if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                return self.permits_ip(value)
            return False
        # Other kinds (URI, e-mail) never appear in a TLS server leaf; leave them out.
        return False

    def uncovered(self, domains: Iterable[str]) -> list[str]:
        """Domains a catalog intercepts that this CA cannot sign for."""
        return sorted({d for d in domains if not self.permits_dns(d)})


def _normalize_domain(domain: str) -> str:
    name = domain.strip().lower().rstrip(".").removeprefix("*.")
    if not name or "*" in name or " " in name:
        raise CaError(f"{domain!r} is not a domain name for a name constraint")
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError as error:
        raise CaError(f"{domain!r} is not a valid domain name: {error}") from None


def minimal_domains(domains: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated, without names another entry already covers."""
    names = {_normalize_domain(d) for d in domains}
    return sorted(n for n in names if not any(n.endswith("." + other) for other in names))


def name_policy(cert: x509.Certificate) -> NamePolicy:
    """The names a CA certificate may vouch for (unconstrained without NameConstraints)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return NamePolicy(permitted=(), constrained=False)
    constraints = ext.value
    permitted = tuple(
        str(name.value).lower().lstrip(".")
        for name in constraints.permitted_subtrees or ()
        if isinstance(name, x509.DNSName)
    )
    networks = tuple(
        name.value
        for name in constraints.excluded_subtrees or ()
        if isinstance(name, x509.IPAddress)
        and isinstance(name.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
    )
    # Without a permitted DNS subtree, RFC 5280 leaves DNS names unconstrained.
    return NamePolicy(permitted, networks, constrained=bool(permitted))


@dataclass(frozen=True)
class CertificateAuthority:
    """A loaded CA: its key, its certificate and what its constraints allow."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def policy(self) -> NamePolicy:
        return name_policy(self.cert)

    @property
    def constrained(self) -> bool:
        """Whether the CA has name constraints a client enforces (critical, with DNS subtrees)."""
        try:
            ext = self.cert.extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound:
            return False
        return ext.critical and bool(self.policy.permitted)

    def fingerprint(self, algorithm: hashes.HashAlgorithm | None = None) -> str:
        digest = self.cert.fingerprint(algorithm or hashes.SHA256())
        return ":".join(f"{byte:02X}" for byte in digest)

    def expired(self, now: datetime.datetime | None = None) -> bool:
        moment = now or datetime.datetime.now(datetime.UTC)
        return not self.cert.not_valid_before_utc <= moment <= self.cert.not_valid_after_utc

    def days_left(self, now: datetime.datetime | None = None) -> float:
        moment = now or datetime.datetime.now(datetime.UTC)
        return (self.cert.not_valid_after_utc - moment).total_seconds() / 86400

    def describe(self) -> dict[str, Any]:
        """What IT needs to check a device's trust store: `schoolgate ca show`."""
        policy = self.policy
        return {
            "subject": self.cert.subject.rfc4514_string(),
            "serial": f"{self.cert.serial_number:X}",
            "sha256_fingerprint": self.fingerprint(),
            # Windows and Intune show the SHA-1 "thumbprint".
            "sha1_fingerprint": self.fingerprint(hashes.SHA1()),
            "not_before": self.cert.not_valid_before_utc.isoformat(),
            "not_after": self.cert.not_valid_after_utc.isoformat(),
            "days_left": round(self.days_left(), 1),
            "key": f"RSA {self.key.key_size}",
            "name_constraints": self.constrained,
            "permitted_dns": list(policy.permitted) if policy.constrained else None,
            "excluded_ip": [str(n) for n in policy.excluded_networks],
        }


def generate_ca(
    domains: Sequence[str],
    *,
    organization: str = "schoolgate",
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime.datetime | None = None,
) -> CertificateAuthority:
    """A new RSA CA whose critical name constraints permit `domains` (and their subdomains) only."""
    permitted = minimal_domains(domains)
    if not permitted:
        raise CaError("no domains to permit: the catalog intercepts nothing, so no CA is needed")
    if validity_days < 1:
        raise CaError("the CA's validity must be at least one day")
    moment = now or datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    # The date in the name tells rotated CAs apart in a device's trust store.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"schoolgate CA {moment:%Y-%m-%d}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization[:64] or "schoolgate"),
        ]
    )
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(domain) for domain in permitted],
        excluded_subtrees=[x509.IPAddress(network) for network in EXCLUDED_NETWORKS],
    )
    key_usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - BACKDATE)
        .not_valid_after(moment + datetime.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(constraints, critical=True)
        # Clients that honour EKU in CAs then refuse code-signing or e-mail certificates from it.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, cert)


# ---------------------------------------------------------------------------------------------
# Files


@contextlib.contextmanager
def _secret_umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def save_ca(ca: CertificateAuthority, confdir: Path) -> None:
    """Write the CA in mitmproxy's confdir layout; the key file last, so it commits the change."""
    with _secret_umask():
        confdir.mkdir(parents=True, exist_ok=True)
    os.chmod(confdir, 0o700)
    for stale in STALE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (confdir / stale).unlink()
    cert_pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    key_pem = ca.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    p12 = pkcs12.serialize_key_and_certificates(
        name=b"schoolgate CA",
        key=None,
        cert=ca.cert,
        cas=None,
        encryption_algorithm=serialization.NoEncryption(),
    )
    write_atomic(confdir / CERT_PEM, cert_pem, 0o644)
    write_atomic(confdir / CERT_CER, cert_pem, 0o644)
    write_atomic(confdir / CERT_P12, p12, 0o644)
    write_atomic(confdir / KEY_AND_CERT, key_pem + cert_pem, 0o600)


def load_ca(confdir: Path) -> CertificateAuthority | None:
    """The CA in `confdir`, or None when there is none. Raises CaError for an unreadable one."""
    path = confdir / KEY_AND_CERT
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CaError(f"{path}: cannot be read: {error.strerror or error}") from None
    try:
        key = serialization.load_pem_private_key(raw, password=None)
        cert = x509.load_pem_x509_certificates(raw)[0]
    except (ValueError, TypeError) as error:
        raise CaError(f"{path}: not a PEM private key and certificate: {error}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CaError(f"{path}: the key is not an RSA key (mitmproxy signs with RSA keys)")
    if cert.public_key() != key.public_key():
        raise CaError(f"{path}: the private key does not belong to the certificate")
    return CertificateAuthority(key, cert)


def check_usable(ca: CertificateAuthority, path: Path) -> None:
    """Raise CaError if the CA must not be used: no name constraints, not a CA, or expired."""
    fix = "`schoolgate ca init --force` makes a new one; then roll it out to devices again"
    if not ca.constrained:
        raise CaError(
            f"{path}: this CA has no name constraints, so its key could impersonate any site "
            f"(a CA mitmproxy generated itself?). {fix}"
        )
    try:
        basic = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise CaError(f"{path}: this certificate is not a CA. {fix}")
    now = datetime.datetime.now(datetime.UTC)
    if now < ca.cert.not_valid_before_utc:
        # Made while this box's clock ran ahead (adversarial pass a41 F5): a new CA is not
        # the fix, the clock is, and the devices keep the CA they have.
        raise CaError(
            f"{path}: the CA is valid from {ca.cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC, "
            f"and this box's clock reads {now:%Y-%m-%d %H:%M} UTC: it was made while the clock "
            "ran ahead. Correct the clock (timedatectl; NTP) or wait until then; `schoolgate "
            "ca init --force` would make a new CA that every device must be given again"
        )
    if ca.expired(now):
        raise CaError(f"{path}: the CA expired on {ca.cert.not_valid_after_utc:%Y-%m-%d}. {fix}")


def ensure_ca(
    confdir: Path,
    domains: Sequence[str],
    *,
    force: bool = False,
    organization: str = "schoolgate",
    validity_days: int = DEFAULT_VALIDITY_DAYS,
) -> tuple[CertificateAuthority, bool]:
    """Keep a usable CA or make one: (ca, created). With `force`, always make a new one.

    An existing CA that is unsafe or unusable raises CaError unless `force` is given: replacing it
    silently would break every device that trusts it without anyone knowing why.
    """
    if not force:
        existing = load_ca(confdir)
        if existing is not None:
            check_usable(existing, confdir / KEY_AND_CERT)
            return existing, False
    ca = generate_ca(domains, organization=organization, validity_days=validity_days)
    save_ca(ca, confdir)
    return ca, True


def prepare_for_proxy(
    confdir: Path,
    domains: Sequence[str],
    *,
    allow_unconstrained: bool = False,
    organization: str = "schoolgate",
    validity_days: int = DEFAULT_VALIDITY_DAYS,
) -> tuple[CertificateAuthority, bool, list[str]]:
    """What `schoolgate run` does before mitmproxy reads the confdir: (ca, created, warnings).

    Creates the CA when there is none. Refuses (CaError) an unconstrained CA unless
    `allow_unconstrained`, which turns that into a warning. Warns about each catalogued domain the
    CA cannot sign for, and about a CA that expires within 30 days.
    """
    path = confdir / KEY_AND_CERT
    existing = load_ca(confdir)
    if existing is None:
        ca, created = ensure_ca(
            confdir, domains, organization=organization, validity_days=validity_days
        )
    else:
        ca, created = existing, False
    warnings: list[str] = []
    if not ca.constrained and allow_unconstrained:
        warnings.append(
            f"{path}: this CA has NO name constraints: its key can impersonate any site. "
            "ca.allow_unconstrained is set, so it is used anyway; replace it with "
            "`schoolgate ca init --force` and roll the new one out to devices"
        )
    else:
        check_usable(ca, path)
        warnings += coverage_warnings(ca, domains)
    if not ca.expired() and ca.days_left() < 30:
        warnings.append(
            f"{path}: the CA expires on {ca.cert.not_valid_after_utc:%Y-%m-%d}; "
            "`schoolgate ca init --force` makes a new one (then roll it out)"
        )
    return ca, created, warnings


def coverage_warnings(ca: CertificateAuthority, domains: Iterable[str]) -> list[str]:
    """One warning per catalogued domain the CA's name constraints do not cover."""
    return [
        f"catalogued domain {domain} is not covered by the CA's name constraints, so devices "
        "will reject its intercepted connections; re-issue the CA with "
        "`schoolgate ca init --force` and roll it out to devices again"
        for domain in ca.policy.uncovered(domains)
    ]


def reload_warnings(confdir: Path, domains: Iterable[str]) -> list[str]:
    """What a configuration reload should say about the CA (which it never changes)."""
    try:
        ca = load_ca(confdir)
    except CaError as error:
        return [str(error)]
    if ca is None or not ca.constrained:
        return []  # the start refused or already warned; a reload does not touch the CA
    return coverage_warnings(ca, domains)


def chown_tree(confdir: Path, uid: int, gid: int) -> None:
    """Give the CA directory and its files to the service user (run as root by the installer)."""
    os.chown(confdir, uid, gid)
    for path in confdir.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chown(path, uid, gid)


# ---------------------------------------------------------------------------------------------
# Export for device roll-out


def export_ca(
    ca: CertificateAuthority, fmt: ExportFormat, organization: str = "schoolgate"
) -> bytes:
    """The CA certificate (never the key) as PEM, DER, or an Apple configuration profile."""
    if fmt == "pem":
        return ca.cert.public_bytes(serialization.Encoding.PEM)
    if fmt == "der":
        return ca.cert.public_bytes(serialization.Encoding.DER)
    if fmt == "mobileconfig":
        return mobileconfig(ca.cert, organization)
    raise CaError(f"unknown export format {fmt!r} (use one of {', '.join(EXPORT_FORMATS)})")


def mobileconfig(cert: x509.Certificate, organization: str = "schoolgate") -> bytes:
    """An unsigned .mobileconfig with one com.apple.security.root payload (Jamf, Intune, manual).

    The profile's identifier is fixed, so installing a rotated CA's profile replaces the old one;
    the UUIDs derive from the certificate, so exporting the same CA twice gives the same profile.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    display = str(name[0].value) if name else "schoolgate CA"
    payload = {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{PROFILE_IDENTIFIER}.root",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"schoolgate-ca-root:{fingerprint}")),
        "PayloadDisplayName": display,
        "PayloadDescription": "Lets the school's filter inspect uploads to media-sharing apps.",
        "PayloadCertificateFileName": "schoolgate-ca.cer",
        "PayloadContent": der,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": PROFILE_IDENTIFIER,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"schoolgate-ca-profile:{fingerprint}")),
        "PayloadDisplayName": f"{organization} web filter certificate",
        "PayloadDescription": (
            "Trusts the school web filter's certificate authority. It is name-constrained: it can "
            "only vouch for the media-sharing services the filter inspects."
        ),
        "PayloadOrganization": organization,
        "PayloadScope": "System",
        "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
