"""The gateway ruleset: rendered from config, accepted by nft, and right on a real network.

The unit tests check rendering and `nft -c` (inside a throwaway network namespace, so the host's
ruleset is never read or touched). The end-to-end tests load `schoolgate nft apply` into the
gateway namespace of tests/support/netns.py's client ⇄ gateway ⇄ server topology (TEST-NET
addresses only) with a real transparent `schoolgate run`, and prove who is redirected, who goes
direct and what is rejected.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from schoolgate.config import load_config, parse_config
from schoolgate.errors import ConfigError
from schoolgate.gateway.nft import GatewayRuleset
from tests.e2e.test_proxy_transparent import PROXY_PORT, NsProxy, start_proxy_in
from tests.support.netns import (
    CLIENT_IP,
    GATEWAY_CLIENT_IP,
    GATEWAY_SERVER_IP,
    SERVER_IP,
    Topology,
    _ip,
    build_topology,
    call_in_netns,
    nft_counter_packets,
    probe_netns,
    run_in,
)
from tests.support.proxy_harness import (
    MEDIA_HOST,
    UPSTREAM_CA_NAME,
    VENV_BIN,
    NsUpstream,
    issuer_common_name,
    make_upstream_pki,
    start_upstream_in,
    write_config,
)

# What schoolgate.service grants the proxy: no capability at all (CapabilityBoundingSet=).
NO_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all",
                   "--no-new-privs", "--"]  # fmt: skip
EXEMPT_IP = "192.0.2.3"  # a second client on the student interface, in an exempt subnet
TABLE = "schoolgate"
GATEWAY_YAML = """
proxy: {mode: transparent, listen_host: 0.0.0.0, listen_port: 8080}
policy:  # exempt ranges need a default group that does not block (see the config errors)
  groups: [{name: pupils, subnets: [10.30.0.0/16]}, {name: unknown, mode: monitor}]
  default_group: unknown
gateway:
  student_interfaces: [wlan0]
  vlan_parent: eth0
  student_vlans: [20, 21]
  exempt_subnets: [10.10.0.0/16, 10.20.99.0/24, "2001:db8:10::/48"]
"""


def nft_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`nft -c -f` in a network namespace of its own: validates without touching any ruleset."""
    path = tmp_path / "ruleset.nft"
    path.write_text(text)
    return subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def test_rendered_ruleset_names_interfaces_exemptions_and_port(data_dir: Path) -> None:
    text = GatewayRuleset(parse_config(GATEWAY_YAML, "site.yaml")).render()
    assert 'elements = { "wlan0", "eth0.20", "eth0.21" }' in text
    assert "elements = { 10.10.0.0/16, 10.20.99.0/24 }" in text
    assert "elements = { 2001:db8:10::/48 }" in text
    assert "redirect to :8080" in text
    assert 'udp dport 443 counter reject comment "quic"' in text
    assert 'tcp dport 853 counter reject with tcp reset comment "dot"' in text
    # The gateway's own traffic: no output hook, and one table that `nft delete table` removes.
    assert "hook output" not in text
    assert text.count("table inet schoolgate {") == 1


def test_rejections_can_be_switched_off(data_dir: Path) -> None:
    config = parse_config(GATEWAY_YAML + "  reject_quic: false\n  reject_dot: false\n", "site.yaml")
    text = GatewayRuleset(config).render()
    assert "dport 443 counter reject" not in text
    assert "853" not in text
    assert "redirect to :8080" in text


@pytest.mark.parametrize(
    "text",
    [
        GATEWAY_YAML,
        GATEWAY_YAML + "  reject_quic: false\n  reject_dot: false\n",
        # No exemptions (empty sets), one interface, another port.
        "proxy: {mode: transparent, listen_host: 0.0.0.0, listen_port: 3129}\n"
        "gateway: {student_interfaces: [wlan1]}\n",
        # The resolver on: pupils' DNS redirected to it.
        GATEWAY_YAML + "resolver: {enabled: true, listen_port: 8053}\n",
    ],
)
def test_rendered_ruleset_passes_nft_check(text: str, data_dir: Path, tmp_path: Path) -> None:
    result = nft_check(GatewayRuleset(parse_config(text, "site.yaml")).render(), tmp_path)
    assert result.returncode == 0, result.stderr


def test_nft_check_rejects_a_broken_ruleset(data_dir: Path, tmp_path: Path) -> None:
    # The check above means something: a damaged rendering fails it.
    text = GatewayRuleset(parse_config(GATEWAY_YAML, "site.yaml")).render()
    result = nft_check(text.replace("redirect to :8080", "redirect to :eighty"), tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("text", "key_path", "problem"),
    [
        ("proxy: {mode: transparent, listen_host: 0.0.0.0}\n", "gateway.student_interfaces",
         "no student interface"),
        ("gateway: {student_interfaces: [wlan0]}\nproxy: {listen_host: 0.0.0.0}\n",
         "proxy.mode", "set it to transparent"),
        ("gateway: {student_interfaces: [wlan0]}\nproxy: {mode: transparent}\n",
         "proxy.listen_host", "use 0.0.0.0"),
    ],
)  # fmt: skip
def test_render_refuses_a_config_the_gateway_cannot_serve(
    text: str, key_path: str, problem: str, data_dir: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        GatewayRuleset(parse_config(text, "site.yaml")).render()
    assert caught.value.source == "site.yaml"
    assert caught.value.key_path == key_path
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("text", "key_path", "problem"),
    [
        ('gateway: {student_interfaces: ["wlan0; flush ruleset"]}\n',
         "gateway.student_interfaces[0]", "not a network interface name"),
        ("gateway: {student_interfaces: [averyveryverylongname0]}\n",
         "gateway.student_interfaces[0]", "at most 15 characters"),
        ("gateway: {student_vlans: [20]}\n", "gateway.vlan_parent", "is required"),
        ("gateway: {vlan_parent: eth0, student_vlans: [5000]}\n", "gateway.student_vlans[0]",
         "above the maximum"),
        ("gateway: {exempt_subnets: [staff]}\n", "gateway.exempt_subnets[0]",
         "not an IP address or network"),
        ("gateway: {exempt_subnets: [10.20.99.0/24]}\n"
         "policy: {groups: [{name: students, subnets: [10.20.0.0/16]}], default_group: students}\n",
         "gateway.exempt_subnets", "default group 'students' blocks"),
        ("gateway: {exempt_subnets: [10.20.99.0/24]}\n"
         "policy: {groups: [{name: students, subnets: [10.20.0.0/16]},"
         " {name: guests, mode: monitor}], default_group: guests}\n",
         "gateway.exempt_subnets", "overlaps 10.20.0.0/16 of group 'students', which blocks"),
        ("gateway: {exempt_subnets: [\"2001:db8::/32\"]}\n"
         "policy: {groups: [{name: students, subnets: [\"::/0\"], mode: monitor,"
         " schedule: [{days: [mon], start: \"08:00\", end: \"16:00\"}]},"
         " {name: guests, mode: monitor}], default_group: guests}\n",
         "gateway.exempt_subnets", "overlaps ::/0 of group 'students'"),
        ("gateway: {reject_quic: sometimes}\n", "gateway.reject_quic", "expected true or false"),
        ("gateway: {student_interface: [wlan0]}\n", "gateway.student_interface", "unknown key"),
    ],
)  # fmt: skip
def test_gateway_config_errors_name_key_and_problem(
    text: str, key_path: str, problem: str, data_dir: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yaml")
    assert (caught.value.source, caught.value.key_path) == ("site.yaml", key_path)
    assert problem in caught.value.problem


def test_embedded_default_has_no_student_interface_yet(data_dir: Path) -> None:
    # A laptop `make run` never filters anyone's network; install.sh names the interface.
    config = load_config()
    assert config.gateway.interfaces == ()
    assert config.gateway.reject_quic
    assert config.gateway.reject_dot


def test_cli_render_prints_the_ruleset_and_explains_a_bad_config(
    data_dir: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GATEWAY_YAML)
    result = subprocess.run(
        [str(VENV_BIN / "schoolgate"), "nft", "render", "--config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == GatewayRuleset(load_config(good)).render()
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {student_interfaces: [wlan0]}\n")
    result = subprocess.run(
        [str(VENV_BIN / "schoolgate"), "nft", "render", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{bad}: proxy.mode: is 'regular'" in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------------------------------------
# End to end in network namespaces


def schoolgate_in(ns: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The schoolgate CLI inside namespace `ns` (as schoolgate-nft.service runs it)."""
    env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(data_dir)}
    env.pop("SCHOOLGATE_CONFIG", None)
    return subprocess.run(
        ["ip", "netns", "exec", ns, str(VENV_BIN / "schoolgate"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@dataclass
class Gateway:
    topo: Topology
    upstream: NsUpstream
    proxy: NsProxy
    config: Path
    upstream_ca: Path

    def counter(self, chain: str, comment: str) -> int:
        return nft_counter_packets(self.topo.gateway, TABLE, chain, f'comment "{comment}"')

    def schoolgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return schoolgate_in(self.topo.gateway, self.proxy.data_dir, *args)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    reason = probe_netns()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    work = tmp_path_factory.mktemp("gateway")
    data_dir = work / "data"
    data_dir.mkdir()
    pki = make_upstream_pki(work / "pki")
    with contextlib.ExitStack() as cleanup:
        topo = build_topology()
        cleanup.callback(topo.destroy)
        # A second device on the student interface whose address is exempt.
        _ip("-n", topo.client, "addr", "add", f"{EXEMPT_IP}/24", "dev", f"sg{topo.tag}cl")
        # The pupils' group names the pupil's address, not the exempt one: an exempt range
        # inside a blocking group's range is a config error (a pupil could take it).
        config = write_config(
            work,
            PROXY_PORT,
            pki,
            proxy={"mode": "transparent", "listen_host": "0.0.0.0"},
            # Exempt ranges are refused while the default group blocks (any address on a
            # student interface is a pupil's to take): this site monitors unknown devices.
            groups=[
                {"name": "pupils", "subnets": [f"{CLIENT_IP}/32"], "mode": "block"},
                {"name": "unknown", "subnets": [], "mode": "monitor"},
            ],
        )
        site = yaml.safe_load(config.read_text())
        site["gateway"] = {
            "student_interfaces": [topo.gw_client_if],
            "exempt_subnets": [f"{EXEMPT_IP}/32"],
        }
        site["policy"]["default_group"] = "unknown"
        config.write_text(yaml.safe_dump(site))
        applied = schoolgate_in(topo.gateway, data_dir, "nft", "apply", "--config", str(config))
        assert applied.returncode == 0, applied.stderr
        upstream = start_upstream_in(topo.server, pki)
        cleanup.callback(upstream.stop)
        proxy = start_proxy_in(topo.gateway, config, data_dir, work, prefix=NO_CAPABILITIES)
        cleanup.callback(proxy.stop)
        yield Gateway(topo, upstream, proxy, config, pki.ca_pem)


def tls_issuer(ns: str, cafile: Path, source: str | None = None, host: str = MEDIA_HOST) -> str:
    """Handshake from `ns` (optionally from `source`) to SERVER_IP:443 as `host`: issuer CN."""

    def handshake() -> str:
        context = ssl.create_default_context(cafile=str(cafile))
        bind = (source, 0) if source else None
        with (
            socket.create_connection((SERVER_IP, 443), timeout=10, source_address=bind) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            return issuer_common_name(tls.getpeercert())  # type: ignore[arg-type]

    return call_in_netns(ns, handshake, timeout=30)


def _socket(kind: int, source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(5)
    if source:
        sock.bind((source, 0))
    return sock


def _listener(kind: int, port: int) -> socket.socket:
    sock = _socket(kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((SERVER_IP, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(8)
    return sock


def in_ns[T](ns: str, fn: Callable[..., T], *args: object) -> T:
    return call_in_netns(ns, functools.partial(fn, *args))


@pytest.mark.slow
@pytest.mark.netns
def test_student_tls_is_redirected_into_the_proxy(gateway: Gateway) -> None:
    before = gateway.counter("prerouting", "proxy")
    issuer = tls_issuer(gateway.topo.client, gateway.proxy.ca_pem, source=CLIENT_IP)
    # Trusting only the proxy's CA, the handshake succeeds: the proxy answered, not the server.
    assert issuer not in ("", UPSTREAM_CA_NAME)
    assert gateway.counter("prerouting", "proxy") > before


@pytest.mark.slow
@pytest.mark.netns
def test_transparent_proxy_runs_without_any_capability(gateway: Gateway) -> None:
    # Everything above and below is served by a proxy holding no capability: SO_ORIGINAL_DST
    # and a high port need none, so the unit's empty CapabilityBoundingSet= is enough.
    status = Path(f"/proc/{gateway.proxy.process.pid}/status").read_text()
    caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert "schoolgate" in Path(f"/proc/{gateway.proxy.process.pid}/cmdline").read_text()
    assert (caps["CapEff"], caps["CapPrm"], caps["CapBnd"]) == ("0" * 16,) * 3


@pytest.mark.slow
@pytest.mark.netns
def test_exempt_client_goes_direct(gateway: Gateway) -> None:
    before = gateway.counter("prerouting", "proxy")
    issuer = tls_issuer(gateway.topo.client, gateway.upstream_ca, source=EXEMPT_IP)
    assert issuer == UPSTREAM_CA_NAME
    assert gateway.counter("prerouting", "proxy") == before


@pytest.mark.slow
@pytest.mark.netns
def test_gateway_own_connections_go_direct(gateway: Gateway) -> None:
    before = gateway.counter("prerouting", "proxy")
    assert tls_issuer(gateway.topo.gateway, gateway.upstream_ca) == UPSTREAM_CA_NAME
    assert gateway.counter("prerouting", "proxy") == before


@pytest.mark.slow
@pytest.mark.netns
def test_student_quic_is_rejected_and_exempt_quic_forwarded(gateway: Gateway) -> None:
    server = in_ns(gateway.topo.server, _listener, socket.SOCK_DGRAM, 443)
    student = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, CLIENT_IP)
    exempt = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, EXEMPT_IP)
    with server, student, exempt:
        exempt.connect((SERVER_IP, 443))
        exempt.send(b"exempt")
        data, peer = server.recvfrom(2048)
        assert (data, peer[0]) == (b"exempt", EXEMPT_IP)  # UDP 443 itself is carried

        before = gateway.counter("forward", "quic")
        student.connect((SERVER_IP, 443))
        student.send(b"\xc0quic-initial-stand-in")
        with pytest.raises(ConnectionRefusedError):  # the gateway's ICMP port unreachable
            student.recv(2048)
        assert gateway.counter("forward", "quic") > before
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.recvfrom(2048)  # nothing from the student reached the server


@pytest.mark.slow
@pytest.mark.netns
def test_student_dns_over_tls_is_rejected_and_exempt_allowed(gateway: Gateway) -> None:
    listener = in_ns(gateway.topo.server, _listener, socket.SOCK_STREAM, 853)
    student = in_ns(gateway.topo.client, _socket, socket.SOCK_STREAM, CLIENT_IP)
    exempt = in_ns(gateway.topo.client, _socket, socket.SOCK_STREAM, EXEMPT_IP)
    with listener, student, exempt:
        exempt.connect((SERVER_IP, 853))  # the server does listen on 853
        accepted, peer = listener.accept()
        accepted.close()
        assert peer[0] == EXEMPT_IP
        before = gateway.counter("forward", "dot")
        with pytest.raises(ConnectionRefusedError):  # TCP reset from the gateway
            student.connect((SERVER_IP, 853))
        assert gateway.counter("forward", "dot") > before

    udp = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, CLIENT_IP)
    with udp:  # DNS over QUIC uses UDP 853
        udp.connect((SERVER_IP, 853))
        udp.send(b"doq")
        with pytest.raises(ConnectionRefusedError):
            udp.recv(2048)


@pytest.mark.slow
@pytest.mark.netns
def test_direct_connection_to_the_proxy_port_is_refused(gateway: Gateway) -> None:
    before = gateway.counter("input", "direct")
    student = in_ns(gateway.topo.client, _socket, socket.SOCK_STREAM, CLIENT_IP)
    with student, pytest.raises(ConnectionRefusedError):
        student.connect((GATEWAY_CLIENT_IP, PROXY_PORT))
    assert gateway.counter("input", "direct") > before
    # The proxy does listen there: the refusal is the rule's.
    listening = run_in(gateway.topo.gateway, ["ss", "-Hltn", f"sport = :{PROXY_PORT}"])
    assert listening.stdout.strip()


def _gateway_listener(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))  # as a service bound to every interface would be
    if kind == socket.SOCK_STREAM:
        sock.listen(8)
    return sock


@pytest.mark.slow
@pytest.mark.netns
def test_pupils_reach_only_dhcp_dns_and_the_proxy_on_the_gateway(gateway: Gateway) -> None:
    """A Prometheus (or anything) on 0.0.0.0 of the gateway was readable from student Wi-Fi
    (issue 17): the student interface now lets through only DHCP, DNS and the proxy."""
    service = in_ns(gateway.topo.gateway, _gateway_listener, socket.SOCK_STREAM, 9090)
    dns = in_ns(gateway.topo.gateway, _gateway_listener, socket.SOCK_DGRAM, 53)
    student = in_ns(gateway.topo.client, _socket, socket.SOCK_STREAM, CLIENT_IP)
    asker = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, CLIENT_IP)
    with service, dns, student, asker:
        before = gateway.counter("input", "gateway")
        with pytest.raises(ConnectionRefusedError):
            student.connect((GATEWAY_CLIENT_IP, 9090))
        assert gateway.counter("input", "gateway") > before
        asker.sendto(b"dns query", (GATEWAY_CLIENT_IP, 53))
        data, peer = dns.recvfrom(2048)
        assert (data, peer[0]) == (b"dns query", CLIENT_IP)
        # The gateway itself (its management side) still reaches the service.
        local = in_ns(gateway.topo.gateway, _socket, socket.SOCK_STREAM)
        with local:
            local.connect(("127.0.0.1", 9090))
            accepted, _ = service.accept()
            accepted.close()


@pytest.mark.slow
@pytest.mark.netns
def test_web_ports_of_the_gateway_itself_are_refused_not_proxied(gateway: Gateway) -> None:
    """Adversarial pass a12: a console IT put on port 443 of the gateway's management address
    was reachable from student Wi-Fi, because the redirect sent the connection to the proxy,
    which passed it through to its original destination, the gateway itself."""
    service = in_ns(gateway.topo.gateway, _gateway_listener, socket.SOCK_STREAM, 443)
    with service:
        service.settimeout(1)
        before = gateway.counter("prerouting", "own address")
        for address in (GATEWAY_CLIENT_IP, GATEWAY_SERVER_IP):
            student = in_ns(gateway.topo.client, _socket, socket.SOCK_STREAM, CLIENT_IP)
            with student, pytest.raises(ConnectionRefusedError):
                student.connect((address, 443))
        with pytest.raises(TimeoutError):
            service.accept()  # nothing reached the service
        assert gateway.counter("prerouting", "own address") >= before + 2
    # Sites elsewhere are still redirected into the proxy.
    issuer = tls_issuer(gateway.topo.client, gateway.proxy.ca_pem, source=CLIENT_IP)
    assert issuer not in ("", UPSTREAM_CA_NAME)


ZERO_DESTINATION = """
table ip sgzero {
  chain out {
    type filter hook output priority -300;
    ip daddr 198.51.100.99 tcp dport 443 notrack ip daddr set 0.0.0.0
  }
  chain back {
    type filter hook prerouting priority -300;
    ip saddr 0.0.0.0 tcp sport 443 notrack ip saddr set 198.51.100.99
  }
}
"""


@pytest.mark.slow
@pytest.mark.netns
def test_a_pupil_cannot_send_to_this_host_or_loopback_through_the_gateway(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Adversarial pass a13: a laptop that rewrote its packets to destination 0.0.0.0:443 was
    redirected into the proxy, which connected to the gateway's own loopback."""
    service = in_ns(gateway.topo.gateway, _listener_on, "127.0.0.1", 443)
    rewrite = tmp_path / "zero.nft"
    rewrite.write_text(ZERO_DESTINATION)
    run_in(gateway.topo.client, ["nft", "-f", str(rewrite)])
    try:
        with service:
            service.settimeout(1)
            before = gateway.counter("antispoof", "martian")
            student = in_ns(gateway.topo.client, _socket, socket.SOCK_STREAM, CLIENT_IP)
            student.settimeout(2)
            with student, pytest.raises((TimeoutError, ConnectionRefusedError)):
                student.connect(("198.51.100.99", 443))
            with pytest.raises(TimeoutError):
                service.accept()
            assert gateway.counter("antispoof", "martian") > before
    finally:
        run_in(gateway.topo.client, ["nft", "delete", "table", "ip", "sgzero"], check=False)


@pytest.mark.slow
@pytest.mark.netns
def test_remove_restores_direct_paths_and_is_idempotent(gateway: Gateway) -> None:
    removed = gateway.schoolgate("nft", "remove")
    assert removed.returncode == 0, removed.stderr
    assert "deleted" in removed.stdout
    try:
        assert run_in(gateway.topo.gateway, ["nft", "list", "tables"]).stdout.strip() == ""
        # The same student handshake now reaches the server itself.
        issuer = tls_issuer(gateway.topo.client, gateway.upstream_ca, source=CLIENT_IP)
        assert issuer == UPSTREAM_CA_NAME
        again = gateway.schoolgate("nft", "remove")
        assert (again.returncode, "was not loaded" in again.stdout) == (0, True), again.stderr
    finally:
        applied = gateway.schoolgate("nft", "apply", "--config", str(gateway.config))
        assert applied.returncode == 0, applied.stderr
    # Applying twice replaces the table instead of duplicating rules.
    assert gateway.schoolgate("nft", "apply", "--config", str(gateway.config)).returncode == 0
    chain = run_in(gateway.topo.gateway, ["nft", "list", "chain", "inet", TABLE, "prerouting"])
    assert chain.stdout.count(":8080") == 1  # one proxy redirect, not two
    issuer = tls_issuer(gateway.topo.client, gateway.proxy.ca_pem, source=CLIENT_IP)
    assert issuer != UPSTREAM_CA_NAME


@pytest.mark.slow
@pytest.mark.netns
def test_student_traffic_outside_the_web_and_the_allowed_ports_is_refused(
    gateway: Gateway,
) -> None:
    """A VPN (WireGuard on UDP 51820), SSH or a proxy port used to be forwarded: only what the
    school lists (NTP, push, call ports by default) leaves; exempt devices are untouched."""
    ntp = in_ns(gateway.topo.server, _listener, socket.SOCK_DGRAM, 123)
    wireguard = in_ns(gateway.topo.server, _listener, socket.SOCK_DGRAM, 51820)
    ssh = in_ns(gateway.topo.server, _listener, socket.SOCK_STREAM, 22)
    student_udp = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, CLIENT_IP)
    exempt_udp = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, EXEMPT_IP)
    student_tcp = in_ns(gateway.topo.client, _socket, socket.SOCK_STREAM, CLIENT_IP)
    with ntp, wireguard, ssh, student_udp, exempt_udp, student_tcp:
        student_udp.sendto(b"time?", (SERVER_IP, 123))
        assert ntp.recvfrom(2048)[0] == b"time?"  # allowed by default

        before = gateway.counter("forward", "forward")
        student_udp.connect((SERVER_IP, 51820))
        student_udp.send(b"wireguard handshake stand-in")
        with pytest.raises(ConnectionRefusedError):
            student_udp.recv(2048)
        wireguard.settimeout(0.5)
        with pytest.raises(TimeoutError):
            wireguard.recvfrom(2048)
        with pytest.raises(ConnectionRefusedError):
            student_tcp.connect((SERVER_IP, 22))
        assert gateway.counter("forward", "forward") > before

        exempt_udp.sendto(b"exempt", (SERVER_IP, 51820))  # exempt devices go direct
        wireguard.settimeout(5)
        assert wireguard.recvfrom(2048)[0] == b"exempt"


def test_forward_policy_settings(data_dir: Path) -> None:
    base = "proxy: {mode: transparent, listen_host: 0.0.0.0}\ngateway: {student_interfaces: [wlan0]"
    allow = GatewayRuleset(parse_config(base + ", forward_default: allow}\n", "s.yaml")).render()
    assert 'comment "forward"' not in allow
    listed = parse_config(base + ", forward_allow: [tcp/993, udp/8801-8810]}\n", "s.yaml")
    text = GatewayRuleset(listed).render()
    assert 'tcp dport { 993 } accept comment "allowed"' in text
    assert 'udp dport { 8801-8810 } accept comment "allowed"' in text
    for bad in ("tcp/0", "sctp/22", "udp/10-5", "22"):
        with pytest.raises(ConfigError) as caught:
            parse_config(base + f", forward_allow: ['{bad}']}}\n", "s.yaml")
        assert caught.value.key_path == "gateway.forward_allow[0]"


@pytest.mark.slow
@pytest.mark.netns
def test_the_gateway_address_on_port_80_is_the_onboarding_page(gateway: Gateway) -> None:
    """Through the production ruleset: http://<gateway>/ reaches the proxy's onboarding
    server (not the proxy port, whose original destination would be the gateway itself)."""
    before = gateway.counter("prerouting", "onboarding")
    result = run_in(
        gateway.topo.client,
        ["curl", "--silent", "--max-time", "20", f"http://{GATEWAY_CLIENT_IP}/"],
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Install the certificate" in result.stdout
    assert gateway.counter("prerouting", "onboarding") > before


GROUP_PORTS_YAML = """
proxy: {mode: transparent, listen_host: 0.0.0.0}
gateway: {student_interfaces: [wlan0], vlan_parent: eth0, student_vlans: [20, 30]}
policy:
  groups:
    - {name: "sixth form \\"A\\"", vlans: [30], forward_allow: [tcp/22, udp/51820]}
    - {name: students, subnets: [0.0.0.0/0]}
  default_group: students
"""


def test_a_vlan_group_gets_its_own_ports(data_dir: Path, tmp_path: Path) -> None:
    text = GatewayRuleset(parse_config(GROUP_PORTS_YAML, "s.yaml")).render()
    assert 'iifname { "eth0.30" } tcp dport { 22 } accept comment "sixth form _A_"' in text
    assert 'iifname { "eth0.30" } udp dport { 51820 } accept' in text
    assert nft_check(text, tmp_path).returncode == 0
    # Ports for a group a pupil could choose (by address or MAC) are refused.
    for group in (
        "{name: staff, subnets: [10.10.0.0/16], forward_allow: [tcp/22]}",
        "{name: staff, devices: ['02:00:5e:00:53:01'], vlans: [30], forward_allow: [tcp/22]}",
        "{name: staff, forward_allow: [tcp/22]}",
    ):
        config = f"policy: {{groups: [{group}], default_group: staff}}\n"
        with pytest.raises(ConfigError) as caught:
            parse_config(config, "s.yaml")
        assert caught.value.key_path == "policy.groups[0].forward_allow"


@pytest.mark.slow
@pytest.mark.netns
def test_forged_sources_and_tunnels_on_allowed_ports_are_dropped(gateway: Gateway) -> None:
    """Adversarial pass a3: a source address from another network (an exempt or staff range)
    sent one-way UDP out unfiltered; NTP's port carried a tunnel of full-size packets."""
    forged = "203.0.113.50"  # routed via the uplink, never via the student interface
    run_in(
        gateway.topo.client, ["ip", "addr", "add", f"{forged}/32", "dev", f"sg{gateway.topo.tag}cl"]
    )
    ntp = in_ns(gateway.topo.server, _listener, socket.SOCK_DGRAM, 123)
    spoofer = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, forged)
    student = in_ns(gateway.topo.client, _socket, socket.SOCK_DGRAM, CLIENT_IP)
    try:
        with ntp, spoofer, student:
            before = gateway.counter("antispoof", "spoofed")
            spoofer.sendto(b"forged", (SERVER_IP, 123))
            student.sendto(b"x" * 1000, (SERVER_IP, 123))  # not an NTP packet
            student.sendto(b"\x23" + bytes(47), (SERVER_IP, 123))  # an NTP request
            data, peer = ntp.recvfrom(2048)
            assert (len(data), peer[0]) == (48, CLIENT_IP)  # only the real one arrived
            ntp.settimeout(0.5)
            with pytest.raises(TimeoutError):
                ntp.recvfrom(2048)
            assert gateway.counter("antispoof", "spoofed") > before
    finally:
        link = f"sg{gateway.topo.tag}cl"
        run_in(gateway.topo.client, ["ip", "addr", "del", f"{forged}/32", "dev", link], check=False)


def _icmp(kind: int, code: int, ident: int, payload: bytes) -> bytes:
    header = bytes([kind, code, 0, 0]) + ident.to_bytes(2, "big") + b"\x00\x01"
    packet = header + payload
    total = sum(
        int.from_bytes(packet[i : i + 2].ljust(2, b"\0"), "big") for i in range(0, len(packet), 2)
    )
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    checksum = (~total & 0xFFFF).to_bytes(2, "big")
    return packet[:2] + checksum + packet[4:]


def _datagram_sizes(sock: socket.socket) -> list[int]:
    """The sizes of the datagrams that arrive until none has for half a second."""
    sock.settimeout(0.5)
    sizes = []
    with contextlib.suppress(TimeoutError):
        while True:
            sizes.append(len(sock.recvfrom(4096)[0]))
    return sizes


def _raw_icmp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(1)
    return sock


def _icmp_seen(sock: socket.socket, size: int) -> list[tuple[int, int]]:
    """(type, IP length) of the ICMP packets of at least `size` bytes that arrive within 1 s."""
    seen = []
    with contextlib.suppress(TimeoutError):
        while True:
            packet = sock.recv(4096)
            if len(packet) >= size:
                seen.append((packet[20], len(packet)))
    return seen


@pytest.mark.slow
@pytest.mark.netns
def test_replies_open_no_wider_door_and_nothing_connects_in(gateway: Gateway) -> None:
    """Adversarial pass a6: after one reply, full-size NTP and 1,000-byte pings left at any
    rate; unsolicited ICMP errors carried data; a relay connected in to a pupil with a routable
    address and took the picture as the reply."""
    topo = gateway.topo
    ntp = in_ns(topo.server, _listener, socket.SOCK_DGRAM, 123)
    student = in_ns(topo.client, _socket, socket.SOCK_DGRAM, CLIENT_IP)
    with ntp, student:
        student.sendto(b"\x23" + bytes(47), (SERVER_IP, 123))
        _request, peer = ntp.recvfrom(2048)
        ntp.sendto(b"\x24" + bytes(47), peer)  # the reply: the flow is established
        assert len(student.recvfrom(2048)[0]) == 48
        student.sendto(b"x" * 1000, (SERVER_IP, 123))  # a tunnel's datagram on that flow
        for _ in range(30):  # and small ones, faster than any clock asks
            student.sendto(b"\x23" + bytes(47), (SERVER_IP, 123))
        arrived = _datagram_sizes(ntp)
        assert 1000 not in arrived
        assert len(arrived) <= 10  # burst 8, then one a second
    server_raw = in_ns(topo.server, _raw_icmp)
    client_raw = in_ns(topo.client, _raw_icmp)
    with server_raw, client_raw:
        client_raw.sendto(_icmp(8, 0, 77, bytes(56)), (SERVER_IP, 0))  # an ordinary ping
        assert (8, 84) in _icmp_seen(server_raw, 84)
        client_raw.sendto(_icmp(8, 0, 77, bytes(1000)), (SERVER_IP, 0))  # same id, big
        client_raw.sendto(_icmp(3, 3, 0, bytes(1000)), (SERVER_IP, 0))  # unsolicited error
        assert _icmp_seen(server_raw, 200) == []
    inside = in_ns(topo.client, _listener_on, CLIENT_IP, 2222)
    with inside:
        before = gateway.counter("forward", "inbound")
        with pytest.raises(TimeoutError):  # dropped, not refused: nothing answers
            in_ns(topo.server, socket.create_connection, (CLIENT_IP, 2222), 2).close()
        assert gateway.counter("forward", "inbound") > before


def _listener_on(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(4)
    return sock


def _udp_claiming(length: int, payload: bytes, dport: int) -> bytes:
    """A UDP header whose length field claims `length` bytes, then `payload` (checksum 0)."""
    return (
        (40000).to_bytes(2, "big")
        + dport.to_bytes(2, "big")
        + length.to_bytes(2, "big")
        + bytes(2)
        + payload
    )


@pytest.mark.slow
@pytest.mark.netns
def test_bounds_hold_for_a_device_with_many_addresses_and_a_lying_header(gateway: Gateway) -> None:
    """Adversarial pass a8: NTP packets whose UDP header claimed 200 bytes carried 1,418; the
    NTP, ping and ICMP-error limits were per address, and a pupil took forty addresses."""
    topo = gateway.topo
    link = f"sg{topo.tag}cl"
    extra = [f"192.0.2.{n}" for n in range(30, 36)]
    for address in extra:
        run_in(topo.client, ["ip", "addr", "add", f"{address}/24", "dev", link])
    ntp = in_ns(topo.server, _listener, socket.SOCK_DGRAM, 123)
    senders = [in_ns(topo.client, _socket, socket.SOCK_DGRAM, a) for a in extra]
    raw = in_ns(topo.client, socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        with ntp, raw, contextlib.ExitStack() as stack:
            for sender in senders:
                stack.enter_context(sender)
            time.sleep(2)  # earlier tests' NTP packets leave the per-device bucket
            raw.sendto(_udp_claiming(200, b"\x23" + bytes(999), 123), (SERVER_IP, 0))
            for _ in range(5):  # 30 small packets from six addresses of one device
                for sender in senders:
                    sender.sendto(b"\x23" + bytes(47), (SERVER_IP, 123))
            sizes = _datagram_sizes(ntp)
            assert all(size <= 256 for size in sizes)  # the lying packet did not arrive
            assert len(sizes) <= 10  # one device: burst 8, then one a second
    finally:
        for address in extra:
            run_in(topo.client, ["ip", "addr", "del", f"{address}/24", "dev", link], check=False)


@pytest.mark.slow
@pytest.mark.netns
def test_only_leased_mac_and_address_pairs_pass_when_asked(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Adversarial pass a9: a pupil on a wired port forging a new MAC and address on every frame
    was a new device each time. With gateway.leased_pairs_only, IPv4 passes only from pairs the
    DHCP server leased (as DHCP snooping on a switch); `nft leases` reloads them on a change."""
    topo = gateway.topo
    link = f"sg{topo.tag}cl"
    mac = json.loads(run_in(topo.client, ["ip", "-j", "link", "show", link]).stdout)[0]["address"]
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"0 {mac} {CLIENT_IP} pupil-laptop *\n")
    site = yaml.safe_load(gateway.config.read_text())
    site["gateway"]["leased_pairs_only"] = True
    site["proxy"]["dhcp_leases"] = [str(leases)]
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(site))
    forged = "192.0.2.77"
    run_in(topo.client, ["ip", "addr", "add", f"{forged}/24", "dev", link])
    try:
        applied = gateway.schoolgate("nft", "apply", "--config", str(strict))
        assert applied.returncode == 0, applied.stderr
        issuer = tls_issuer(topo.client, gateway.proxy.ca_pem, source=CLIENT_IP)
        assert issuer not in ("", UPSTREAM_CA_NAME)  # the leased pair is served as before
        before = gateway.counter("antispoof", "unleased")
        with pytest.raises(TimeoutError):  # an address the server never leased to this MAC
            tls_issuer(topo.client, gateway.proxy.ca_pem, source=forged)
        assert gateway.counter("antispoof", "unleased") > before
        leases.write_text(f"0 {mac} {CLIENT_IP} pupil-laptop *\n0 {mac} {forged} pupil-laptop *\n")
        loaded = gateway.schoolgate("nft", "leases", "--config", str(strict))  # the set only
        assert loaded.returncode == 0, loaded.stderr
        assert tls_issuer(topo.client, gateway.proxy.ca_pem, source=forged) not in (
            "",
            UPSTREAM_CA_NAME,
        )
    finally:
        gateway.schoolgate("nft", "apply", "--config", str(gateway.config))
        run_in(topo.client, ["ip", "addr", "del", f"{forged}/24", "dev", link], check=False)
