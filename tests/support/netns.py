"""Network-namespace helpers for end-to-end tests: client ns ⇄ gateway ns ⇄ server ns.

Only TEST-NET addresses are used (RFC 5737): 192.0.2.0/24 between client and gateway,
198.51.100.0/24 between gateway and server. Every namespace and veth gets a per-run name and is
created by the test and removed at teardown, processes left inside killed first.

Sockets can be made inside a namespace from this process (`call_in_netns`): a socket belongs
to the namespace it was created in, whichever thread later uses it, so the recording upstream
and small probes run in-process while the proxy and curl run as `ip netns exec` processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLIENT_NET = "192.0.2.0/24"
SERVER_NET = "198.51.100.0/24"
CLIENT_IP = "192.0.2.2"
GATEWAY_CLIENT_IP = "192.0.2.1"  # the gateway's address on the client side (redirect target)
GATEWAY_SERVER_IP = "198.51.100.1"
SERVER_IP = "198.51.100.2"

IP_TIMEOUT_S = 15


class NetnsForbidden(Exception):
    """The kernel (or the sandbox around us) does not let us create network namespaces."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def probe_netns() -> str | None:
    """None if `ip netns add` works here, else why not (for a skip reason)."""
    name = f"sgprobe-{secrets.token_hex(4)}"
    # A missing `ip` is a broken test machine (make sysdeps), not a reason to skip: it raises.
    result = _ip("netns", "add", name, check=False)
    if result.returncode != 0:
        return (
            f"`ip netns add` refused (uid {os.geteuid()}; needs CAP_SYS_ADMIN + CAP_NET_ADMIN): "
            f"{result.stderr.strip()}"
        )
    _ip("netns", "del", name, check=False)
    return None


def netns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *argv]


def run_in(
    ns: str, argv: Sequence[str], *, timeout: float = 30, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command inside `ns` to completion (bounded by `timeout`)."""
    result = subprocess.run(
        netns_exec(ns, argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"in {ns}: {' '.join(argv)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result


def call_in_netns[T](ns: str, fn: Callable[[], T], timeout: float = 10) -> T:
    """Call `fn` on a helper thread that has joined namespace `ns`; return its result.

    setns(2) moves only the calling thread, so the test process itself never changes namespace.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            with open(f"/run/netns/{ns}") as handle:
                os.setns(handle.fileno(), os.CLONE_NEWNET)
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call in namespace {ns} did not finish within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


@dataclass
class Topology:
    """client ⇄ gateway ⇄ server, each in its own namespace, routed through the gateway."""

    tag: str
    client: str
    gateway: str
    server: str
    gw_client_if: str  # the gateway's client-facing veth (nftables matches on it)
    created: list[str] = field(default_factory=list)

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.client, self.gateway, self.server)

    def destroy(self) -> None:
        """Kill whatever still runs inside our namespaces, then delete them (veths go too)."""
        for ns in reversed(self.created):
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = _ip("netns", "pids", ns, check=False).stdout.split()
                time.sleep(0.05)
            _ip("netns", "del", ns, check=False)
        self.created.clear()


def build_topology() -> Topology:
    """Create the three namespaces, two veth pairs, addresses, routes and ip_forward=1."""
    tag = secrets.token_hex(3)
    # Interface names are limited to 15 characters: "sg" + 6 hex + 2 = 10.
    topo = Topology(
        tag=tag,
        client=f"sg-{tag}-client",
        gateway=f"sg-{tag}-gateway",
        server=f"sg-{tag}-server",
        gw_client_if=f"sg{tag}gc",
    )
    try:
        for ns in topo.namespaces:
            _ip("netns", "add", ns)
            topo.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        client_if, gw_server_if, server_if = f"sg{tag}cl", f"sg{tag}gs", f"sg{tag}sv"
        # Created directly inside the namespaces: nothing ever appears in the host's namespace.
        _ip("-n", topo.gateway, "link", "add", topo.gw_client_if, "type", "veth",
            "peer", "name", client_if, "netns", topo.client)  # fmt: skip
        _ip("-n", topo.gateway, "link", "add", gw_server_if, "type", "veth",
            "peer", "name", server_if, "netns", topo.server)  # fmt: skip
        for ns, ifname, address in (
            (topo.client, client_if, f"{CLIENT_IP}/24"),
            (topo.gateway, topo.gw_client_if, f"{GATEWAY_CLIENT_IP}/24"),
            (topo.gateway, gw_server_if, f"{GATEWAY_SERVER_IP}/24"),
            (topo.server, server_if, f"{SERVER_IP}/24"),
        ):
            _ip("-n", ns, "addr", "add", address, "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
        _ip("-n", topo.client, "route", "add", "default", "via", GATEWAY_CLIENT_IP)
        _ip("-n", topo.server, "route", "add", "default", "via", GATEWAY_SERVER_IP)
        run_in(topo.gateway, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    except BaseException:
        topo.destroy()
        raise
    return topo


def tcp_listener(
    ns: str, address: str, port: int, backlog: int = 32, *, multipath: bool = False
) -> socket.socket:
    """A listening TCP socket inside `ns` (accept() times out every 0.2 s, so a serving thread
    can notice it was stopped); `multipath` takes multipath TCP where the client asks for it,
    as servers that listen with IPPROTO_MPTCP do (plain TCP otherwise)."""

    def bind() -> socket.socket:
        protocol = socket.IPPROTO_MPTCP if multipath else 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, protocol)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.settimeout(0.2)
        return sock

    return call_in_netns(ns, bind)


def serve_connections(sock: socket.socket, serve: Callable[[socket.socket, str], None]) -> None:
    """Accept on `sock` (a tcp_listener) until it is closed, serving each connection on a
    thread of its own: serve(connection, peer address)."""

    def accept() -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=serve, args=(conn, peer[0]), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def load_ruleset(ns: str, path: Path, defines: dict[str, str]) -> None:
    """Load an nftables file inside `ns` with `-D name=value` definitions."""
    argv = ["nft"]
    for name, value in defines.items():
        argv += ["-D", f"{name}={value}"]
    run_in(ns, [*argv, "-f", str(path)])


def nft_counter_packets(ns: str, table: str, chain: str, needle: str) -> int:
    """Packets counted by the rule in `chain` whose text contains `needle`."""
    listing = run_in(ns, ["nft", "list", "chain", "inet", table, chain]).stdout
    for line in listing.splitlines():
        if needle in line and "counter packets" in line:
            return int(line.split("counter packets", 1)[1].split()[0])
    raise AssertionError(f"no counted rule with {needle!r} in {table}/{chain}:\n{listing}")
