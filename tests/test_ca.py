"""The name-constrained CA: its extensions, real clients enforcing them, files, export, CLI."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import plistlib
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs

from schoolgate.addons.certnames import constrained_names
from schoolgate.cli import main
from schoolgate.endpoints.loader import load_catalog
from schoolgate.gateway.ca import (
    CERT_PEM,
    KEY_AND_CERT,
    CaError,
    CertificateAuthority,
    ensure_ca,
    export_ca,
    generate_ca,
    load_ca,
    minimal_domains,
    prepare_for_proxy,
    save_ca,
)

DOMAINS = ["share.test", "cdn.share.test", "photos.example.net"]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return generate_ca(DOMAINS, organization="Test School", validity_days=30)


def leaf(ca_: CertificateAuthority, *names: str) -> certs.Cert:
    """The leaf mitmproxy itself would serve for these names (its own dummy_cert)."""
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return certs.dummy_cert(ca_.key, ca_.cert, names[0], sans)


# ---------------------------------------------------------------------------------------------
# The certificate


def test_ca_carries_critical_name_constraints_and_ca_extensions(ca: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(export_ca(ca, "pem"))
    ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    permitted = [n.value for n in ext.value.permitted_subtrees or ()]
    # cdn.share.test is under share.test, so the minimal list leaves it out.
    assert permitted == ["photos.example.net", "share.test"]
    excluded = {n.value for n in ext.value.excluded_subtrees or ()}
    assert excluded == {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert not usage.value.key_encipherment
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=30) < lifetime <= datetime.timedelta(days=32)
    assert ca.constrained


def test_minimal_domains_drops_covered_names_and_normalises() -> None:
    names = ["*.Share.Test.", "a.share.test", "other.test", "xshare.test"]
    assert minimal_domains(names) == ["other.test", "share.test", "xshare.test"]
    with pytest.raises(CaError):
        minimal_domains(["bad name"])


def test_name_policy_follows_rfc5280_subtree_rules(ca: CertificateAuthority) -> None:
    policy = ca.policy
    assert policy.permits_dns("share.test")
    assert policy.permits_dns("upload.SHARE.test")
    assert policy.permits_dns("*.cdn.share.test")
    assert not policy.permits_dns("evilshare.test")  # a suffix, not a subdomain
    assert not policy.permits_dns("example.org")
    assert not policy.permits(x509.IPAddress(ipaddress.ip_address("192.0.2.1")))
    assert not policy.permits(x509.IPAddress(ipaddress.ip_address("2001:db8::1")))
    assert policy.uncovered(["share.test", "new-app.test", "x.photos.example.net"]) == [
        "new-app.test"
    ]


# ---------------------------------------------------------------------------------------------
# Real clients enforce the constraints


class TlsServer:
    """A TLS server on 127.0.0.1 presenting one certificate; handshakes only."""

    def __init__(self, cert_pem: bytes, key: CertificateAuthority, tmp: Path) -> None:
        chain = tmp / "server-chain.pem"
        keyfile = tmp / "server-key.pem"
        chain.write_bytes(cert_pem)
        keyfile.write_bytes(
            key.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain, keyfile)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass  # the client refused us: that is what some tests expect

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


def handshake(ca_: CertificateAuthority, served: certs.Cert, hostname: str, tmp: Path) -> None:
    """A Python ssl client with `ca_` as its only trust anchor connects; raises if it refuses."""
    server = TlsServer(served.to_pem(), ca_, tmp)
    try:
        client = ssl.create_default_context(cadata=export_ca(ca_, "pem").decode())
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            tls.sendall(b"x")
    finally:
        server.close()


def test_python_ssl_accepts_a_catalogued_name(ca: CertificateAuthority, tmp_path: Path) -> None:
    handshake(ca, leaf(ca, "upload.share.test"), "upload.share.test", tmp_path)


def test_python_ssl_refuses_a_name_outside_the_constraints(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="subtree"):
        handshake(ca, leaf(ca, "example.org"), "example.org", tmp_path)


def test_python_ssl_refuses_an_ip_address_name(ca: CertificateAuthority, tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="subtree"):
        handshake(ca, leaf(ca, "upload.share.test", "127.0.0.1"), "upload.share.test", tmp_path)


def test_an_unconstrained_ca_would_have_been_accepted(tmp_path: Path) -> None:
    """Control: the refusal above is the constraints' doing, not some other flaw of the leaf."""
    key, cert = certs.create_ca("plain", "plain", 2048)
    plain = CertificateAuthority(key, cert)
    handshake(plain, leaf(plain, "example.org"), "example.org", tmp_path)


def openssl_verify(ca_: CertificateAuthority, served: certs.Cert, tmp: Path) -> str:
    (tmp / "ca.pem").write_bytes(export_ca(ca_, "pem"))
    (tmp / "leaf.pem").write_bytes(served.to_pem())
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp / "ca.pem"), str(tmp / "leaf.pem")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout + result.stderr


def test_openssl_verify_agrees(ca: CertificateAuthority, tmp_path: Path) -> None:
    assert ": OK" in openssl_verify(ca, leaf(ca, "x.photos.example.net"), tmp_path)
    refused = openssl_verify(ca, leaf(ca, "www.example.org"), tmp_path)
    assert "permitted subtree violation" in refused


def test_leaf_names_filter_keeps_mitmproxy_leaves_valid(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """mitmproxy copies the upstream certificate's names and adds the server IP; filter them."""
    upstream_names = ["upload.share.test", "www.example.org", "192.0.2.7", "share.test"]
    unfiltered = leaf(ca, *upstream_names)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ca, unfiltered, "upload.share.test", tmp_path)
    cn, kept = constrained_names(ca.policy, "www.example.org", unfiltered.altnames)
    assert cn == "upload.share.test"
    assert [str(n.value) for n in kept] == ["upload.share.test", "share.test"]
    filtered = certs.dummy_cert(ca.key, ca.cert, cn, kept)
    handshake(ca, filtered, "upload.share.test", tmp_path)


# ---------------------------------------------------------------------------------------------
# Files in mitmproxy's layout


def test_files_are_where_mitmproxy_reads_them_and_the_key_is_private(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    confdir = tmp_path / "ca"
    save_ca(ca, confdir)
    assert stat.S_IMODE(confdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((confdir / KEY_AND_CERT).stat().st_mode) == 0o600
    store = certs.CertStore.from_store(confdir, "mitmproxy", 2048)
    assert store.default_ca.to_cryptography() == ca.cert
    assert store.default_privatekey.public_key() == ca.key.public_key()
    # Certificate-only files hold no key.
    for name in ("mitmproxy-ca-cert.pem", "mitmproxy-ca-cert.cer"):
        assert b"PRIVATE KEY" not in (confdir / name).read_bytes()
    loaded = load_ca(confdir)
    assert loaded is not None
    assert loaded.fingerprint() == ca.fingerprint()


def test_ensure_ca_is_idempotent_and_force_rotates(tmp_path: Path) -> None:
    confdir = tmp_path / "ca"
    first, created = ensure_ca(confdir, DOMAINS, validity_days=10)
    assert created
    again, created = ensure_ca(confdir, DOMAINS, validity_days=10)
    assert not created
    assert again.fingerprint() == first.fingerprint()
    rotated, created = ensure_ca(confdir, DOMAINS, force=True, validity_days=10)
    assert created
    assert rotated.fingerprint() != first.fingerprint()
    loaded = load_ca(confdir)
    assert loaded is not None
    assert loaded.fingerprint() == rotated.fingerprint()


def mitmproxy_default_ca(confdir: Path) -> None:
    """The unconstrained CA mitmproxy generates on its own first start."""
    certs.CertStore.create_store(confdir, "mitmproxy", 2048)


def test_an_unconstrained_ca_is_refused_and_force_replaces_it_with_its_key_copies(
    tmp_path: Path,
) -> None:
    confdir = tmp_path / "ca"
    mitmproxy_default_ca(confdir)
    assert (confdir / "mitmproxy-ca.p12").exists()  # mitmproxy's second copy of the key
    with pytest.raises(CaError, match="no name constraints"):
        ensure_ca(confdir, DOMAINS)
    with pytest.raises(CaError, match="no name constraints"):
        prepare_for_proxy(confdir, DOMAINS)
    ca_, created = ensure_ca(confdir, DOMAINS, force=True)
    assert created
    assert ca_.constrained
    assert not (confdir / "mitmproxy-ca.p12").exists()


def test_allow_unconstrained_keeps_the_old_ca_with_a_loud_warning(tmp_path: Path) -> None:
    confdir = tmp_path / "ca"
    mitmproxy_default_ca(confdir)
    before = (confdir / KEY_AND_CERT).read_bytes()
    _, created, warnings = prepare_for_proxy(confdir, DOMAINS, allow_unconstrained=True)
    assert not created
    assert any("NO name constraints" in w for w in warnings)
    assert (confdir / KEY_AND_CERT).read_bytes() == before


def test_prepare_creates_a_missing_ca_and_names_uncovered_catalog_domains(tmp_path: Path) -> None:
    confdir = tmp_path / "ca"
    _, created, warnings = prepare_for_proxy(confdir, DOMAINS)
    assert created
    assert warnings == []
    _, created, warnings = prepare_for_proxy(confdir, [*DOMAINS, "newapp.test"])
    assert not created
    assert len(warnings) == 1
    assert "newapp.test" in warnings[0]
    assert "schoolgate ca init --force" in warnings[0]


def test_expired_and_broken_cas_are_refused(tmp_path: Path) -> None:
    confdir = tmp_path / "ca"
    old = generate_ca(
        DOMAINS, validity_days=1, now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(10)
    )
    save_ca(old, confdir)
    with pytest.raises(CaError, match="expired"):
        ensure_ca(confdir, DOMAINS)
    other = generate_ca(DOMAINS)
    key_pem = other.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (confdir / KEY_AND_CERT).write_bytes(key_pem + (confdir / CERT_PEM).read_bytes())
    with pytest.raises(CaError, match="does not belong"):
        load_ca(confdir)


def test_a_ca_made_while_the_clock_ran_ahead_says_so_not_expired(tmp_path: Path) -> None:
    """a41 F5: the refusal said "the CA expired" and sent IT to re-issue it to every device."""
    confdir = tmp_path / "ca"
    ahead = generate_ca(DOMAINS, now=datetime.datetime.now(datetime.UTC) + datetime.timedelta(3))
    save_ca(ahead, confdir)
    with pytest.raises(CaError, match="made while the clock ran ahead") as refused:
        ensure_ca(confdir, DOMAINS)
    assert "expired" not in str(refused.value)
    assert "Correct the clock" in str(refused.value)


# ---------------------------------------------------------------------------------------------
# Export


def test_exports_parse_and_hold_the_certificate_only(ca: CertificateAuthority) -> None:
    pem = export_ca(ca, "pem")
    der = export_ca(ca, "der")
    assert x509.load_pem_x509_certificate(pem) == ca.cert
    assert x509.load_der_x509_certificate(der) == ca.cert
    profile_bytes = export_ca(ca, "mobileconfig", "Test School")
    for blob in (pem, der, profile_bytes):
        assert b"PRIVATE KEY" not in blob
    profile = plistlib.loads(profile_bytes)
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadOrganization"] == "Test School"
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    assert payload["PayloadVersion"] == 1
    assert x509.load_der_x509_certificate(payload["PayloadContent"]) == ca.cert
    for item in (profile, payload):
        assert {"PayloadIdentifier", "PayloadUUID", "PayloadDisplayName"} <= item.keys()
    # The same CA exports to the same profile; a new CA keeps the identifier (so it replaces the
    # old profile on a device) but not the UUIDs.
    assert export_ca(ca, "mobileconfig", "Test School") == profile_bytes
    other = plistlib.loads(export_ca(generate_ca(DOMAINS), "mobileconfig", "Test School"))
    assert other["PayloadIdentifier"] == profile["PayloadIdentifier"]
    assert other["PayloadUUID"] != profile["PayloadUUID"]


# ---------------------------------------------------------------------------------------------
# Command line


def write_site_config(tmp: Path, extra_domains: Sequence[str] = ()) -> Path:
    catalog = tmp / "endpoints.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "apps": {
                    "testshare": {
                        "hosts": ["media.share.test", *extra_domains],
                        "inspection": "full",
                        "when_not_inspectable": "allow_and_log",
                    }
                },
            }
        )
    )
    config = tmp / "schoolgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "classifier": {"models": []},
                "proxy": {"endpoints_files": [str(catalog)], "listen_port": 1},
            }
        )
    )
    return config


@pytest.fixture
def site(tmp_path: Path, data_dir: Path) -> Path:
    return write_site_config(tmp_path)


def test_cli_init_show_export(
    site: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ca", "init", "--config", str(site), "--days", "400"]) == 0
    assert "created CA" in capsys.readouterr().out
    key_file = data_dir / "ca" / KEY_AND_CERT
    first = key_file.read_bytes()
    assert main(["ca", "init", "--config", str(site)]) == 0
    assert "kept the existing CA" in capsys.readouterr().out
    assert key_file.read_bytes() == first

    assert main(["ca", "show", "--config", str(site), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name_constraints"] is True
    assert "media.share.test" in shown["permitted_dns"]
    assert "instagram.com" in shown["permitted_dns"]  # the packaged catalog is included
    assert shown["uncovered_catalog_domains"] == []
    assert 398 < shown["days_left"] <= 400

    out = tmp_path / "ca.mobileconfig"
    assert (
        main(["ca", "export", "--config", str(site), "--format", "mobileconfig", "--out", str(out)])
        == 0
    )
    assert plistlib.loads(out.read_bytes())["PayloadContent"][0]["PayloadType"] == (
        "com.apple.security.root"
    )
    der = tmp_path / "ca.cer"
    assert main(["ca", "export", "--config", str(site), "--format", "der", "--out", str(der)]) == 0
    assert x509.load_der_x509_certificate(der.read_bytes()).fingerprint is not None

    assert main(["ca", "init", "--config", str(site), "--force"]) == 0
    assert key_file.read_bytes() != first


def test_cli_show_warns_about_an_app_added_after_the_ca(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ca", "init", "--config", str(write_site_config(tmp_path))]) == 0
    capsys.readouterr()
    grown = write_site_config(tmp_path, ["uploads.newapp.test"])
    assert main(["ca", "show", "--config", str(grown), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["uncovered_catalog_domains"] == [
        "uploads.newapp.test"
    ]
    assert main(["ca", "init", "--config", str(grown)]) == 0
    assert "uploads.newapp.test is not covered" in capsys.readouterr().err


def test_cli_export_without_a_ca_explains(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "export", "--config", str(site)]) == 2
    assert "schoolgate ca init" in capsys.readouterr().err


def test_run_refuses_an_unconstrained_ca_before_starting(
    site: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mitmproxy_default_ca(data_dir / "ca")
    assert main(["run", "--config", str(site)]) == 2
    err = capsys.readouterr().err
    assert "no name constraints" in err
    assert "schoolgate ca init --force" in err


def test_ca_init_owner_gives_the_files_to_the_service_user(site: Path, data_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    assert main(["ca", "init", "--config", str(site), "--owner", "nobody"]) == 0
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    assert (data_dir / "ca").stat().st_uid == nobody
    assert (data_dir / "ca" / KEY_AND_CERT).stat().st_uid == nobody


def test_default_catalog_domains_fit_in_a_ca() -> None:
    domains = load_catalog().inspected_domains()
    ca_ = generate_ca(domains)
    assert ca_.policy.uncovered(domains) == []


def test_ca_config_section_is_validated() -> None:
    from schoolgate.config import parse_config
    from schoolgate.errors import ConfigError

    config = parse_config("ca: {validity_days: 90, allow_unconstrained: true}", "site.yaml")
    assert config.ca.validity_days == 90
    assert config.ca.allow_unconstrained
    assert parse_config("", "site.yaml").ca.validity_days == 1825
    with pytest.raises(ConfigError, match=r"site.yaml: ca.validity_days"):
        parse_config("ca: {validity_days: 0}", "site.yaml")
    with pytest.raises(ConfigError, match=r"ca.rotate"):
        parse_config("ca: {rotate: yes}", "site.yaml")


def test_a_reload_that_adds_an_app_warns_about_the_ca(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from mitmproxy import options

    from schoolgate.addons.reload import ConfigReloader
    from schoolgate.addons.runtime import Runtime, RuntimeRef
    from schoolgate.config import load_config

    config_path = write_site_config(tmp_path)
    config = load_config(config_path)
    ensure_ca(data_dir / "ca", load_catalog(list(config.proxy.endpoints_files)).inspected_domains())
    ref = RuntimeRef(Runtime.from_config(config))
    write_site_config(tmp_path, ["uploads.newapp.test"])  # same file, one more host

    async def reload() -> bool:
        reloader = ConfigReloader(ref, options.Options(), lambda config: {})
        ok = await reloader.reload()
        await reloader.close()
        return ok

    with caplog.at_level("WARNING", logger="schoolgate.proxy"):
        assert asyncio.run(reload())
    ref.get().close()
    warnings = [r.getMessage() for r in caplog.records if "not covered" in r.getMessage()]
    assert len(warnings) == 1
    assert "uploads.newapp.test" in warnings[0]
