"""Groups a pupil cannot choose, through the real transparent proxy in network namespaces (#17).

Same topology as test_proxy_transparent (client 192.0.2.2 ⇄ gateway ⇄ server 198.51.100.2),
plus VLAN 20 on the client link (client 203.0.113.2, gateway 203.0.113.1). The policy makes the
client's own address a staff (monitor) range and VLAN 20 a monitored group; everyone else blocks.
A banked (benign) photo shows which group the proxy chose: 200 for a monitored group, 403 for the
pupils' group.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import encode
from tests.e2e.test_proxy_transparent import RULESET, NsProxy, start_proxy_in
from tests.support.netns import (
    CLIENT_IP,
    SERVER_IP,
    Topology,
    build_topology,
    load_ruleset,
    probe_netns,
    run_in,
)
from tests.support.proxy_harness import (
    MEDIA_HOST,
    NsUpstream,
    bank_photo,
    make_upstream_pki,
    multipart_body,
    start_upstream_in,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.netns]

PROXY_PORT = 8080
VLAN = 20
VLAN_CLIENT_IP = "203.0.113.2"
VLAN_GATEWAY_IP = "203.0.113.1"
SQUATTER_MAC = "02:00:5e:00:53:99"  # another device taking the staff laptop's address


@dataclass
class Groups:
    topo: Topology
    client_if: str
    client_mac: str
    upstream: NsUpstream
    proxy: NsProxy
    banned: bytes
    work: Path

    def upload(self, source: str = CLIENT_IP) -> int:
        """POST the banked photo from `source` in the client namespace; the HTTP status."""
        body, content_type = multipart_body("file", "photo.jpg", self.banned, "image/jpeg")
        body_file = self.work / "body"
        body_file.write_bytes(body)
        result = run_in(
            self.topo.client,
            [
                shutil.which("curl") or "curl", "--silent", "--show-error", "--max-time", "60",
                "--interface", source,
                "--resolve", f"{MEDIA_HOST}:443:{SERVER_IP}",
                "--cacert", str(self.proxy.ca_pem),
                "-H", f"Content-Type: {content_type}",
                "--data-binary", f"@{body_file}",
                "-o", "/dev/null", "-w", "%{http_code}",
                f"https://{MEDIA_HOST}/upload/multipart",
            ],
            timeout=90,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"curl: {result.stderr}\n{self.proxy.log()}"
        return int(result.stdout)

    def last_decision(self) -> dict[str, Any]:
        return self.proxy.audit_records()[-1]

    def set_client_mac(self, mac: str) -> None:
        """Change the client's MAC and make the gateway learn it afresh (as a new device)."""
        run_in(self.topo.client, ["ip", "link", "set", "dev", self.client_if, "address", mac])
        run_in(self.topo.gateway, ["ip", "neigh", "flush", "dev", self.topo.gw_client_if])
        time.sleep(1.2)  # the proxy re-reads the neighbour table at most once a second


def _ip(ns: str, *args: str) -> None:
    run_in(ns, ["ip", *args])


def _add_vlan(topo: Topology, client_if: str) -> None:
    """VLAN 20 between client and gateway. Where the kernel lacks 802.1Q (some containers), a
    second veth pair stands in whose gateway end has the sub-interface's name, parent.20: the
    tagging is the kernel's business, and the name is all the proxy reads."""
    client_vlan, gateway_vlan = f"{client_if}.{VLAN}", f"{topo.gw_client_if}.{VLAN}"
    tagged = run_in(
        topo.client,
        ["ip", "link", "add", "link", client_if, "name", client_vlan, "type", "vlan",
         "id", str(VLAN)],
        check=False,
    )  # fmt: skip
    if tagged.returncode == 0:
        _ip(topo.gateway, "link", "add", "link", topo.gw_client_if, "name", gateway_vlan,
            "type", "vlan", "id", str(VLAN))  # fmt: skip
    else:
        _ip(topo.gateway, "link", "add", gateway_vlan, "type", "veth",
            "peer", "name", client_vlan, "netns", topo.client)  # fmt: skip
    for ns, name, address in (
        (topo.client, client_vlan, VLAN_CLIENT_IP),
        (topo.gateway, gateway_vlan, VLAN_GATEWAY_IP),
    ):
        _ip(ns, "addr", "add", f"{address}/24", "dev", name)
        _ip(ns, "link", "set", name, "up")
    # The client sends what comes from its VLAN address out of the VLAN, as a tagged device would.
    _ip(topo.client, "rule", "add", "from", VLAN_CLIENT_IP, "table", str(VLAN))
    _ip(topo.client, "route", "add", "default", "via", VLAN_GATEWAY_IP, "table", str(VLAN))
    run_in(
        topo.gateway,
        ["nft", "add", "rule", "inet", "schoolgate", "prerouting", "iifname", gateway_vlan,
         "meta", "l4proto", "tcp", "th", "dport", "{ 80, 443 }", "counter",
         "redirect", "to", f":{PROXY_PORT}"],
    )  # fmt: skip


def _write_leases(path: Path, mac: str) -> None:
    """A dnsmasq lease for the client's address, replaced atomically as dnsmasq does."""
    staged = path.with_suffix(".new")
    staged.write_text(f"{int(time.time()) + 3600} {mac} {CLIENT_IP} staff-laptop *\n")
    os.replace(staged, path)


@pytest.fixture(scope="module")
def groups(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[Groups]:
    reason = probe_netns()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    work = tmp_path_factory.mktemp("groups")
    data_dir = work / "data"
    data_dir.mkdir()
    pki = make_upstream_pki(work / "pki")
    bank_photo(data_dir, benign_photos["chelsea"])
    leases = work / "dnsmasq.leases"
    with contextlib.ExitStack() as cleanup:
        topo = build_topology()
        cleanup.callback(topo.destroy)
        client_if = f"sg{topo.tag}cl"
        link = json.loads(run_in(topo.client, ["ip", "-json", "link", "show", client_if]).stdout)
        client_mac = link[0]["address"]
        _write_leases(leases, client_mac)
        config = write_config(
            work,
            PROXY_PORT,
            pki,
            proxy={
                "mode": "transparent",
                "listen_host": "0.0.0.0",  # redirects land on each interface's own address
                "dhcp_leases": [str(leases)],
            },
            groups=[
                {"name": "staff", "subnets": [f"{CLIENT_IP}/32"], "mode": "monitor"},
                {"name": "vlan-monitored", "vlans": [VLAN], "mode": "monitor"},
                {"name": "pupils", "subnets": ["0.0.0.0/0", "::/0"], "mode": "block"},
            ],
            extra={"gateway": {"vlan_parent": topo.gw_client_if}},
        )
        load_ruleset(
            topo.gateway, RULESET, {"client_if": topo.gw_client_if, "proxy_port": str(PROXY_PORT)}
        )
        _add_vlan(topo, client_if)
        upstream = start_upstream_in(topo.server, pki)
        cleanup.callback(upstream.stop)
        proxy = start_proxy_in(topo.gateway, config, data_dir, work)
        cleanup.callback(proxy.stop)
        banned = encode(benign_photos["chelsea"], "JPEG", quality=80)
        yield Groups(topo, client_if, client_mac, upstream, proxy, banned, work)


def test_a_staff_address_leased_to_the_device_puts_it_in_the_staff_group(
    groups: Groups,
) -> None:
    assert groups.upload() == 200  # monitor mode: recorded, not blocked
    record = groups.last_decision()
    assert (record["group"], record["client"]["mac"]) == ("staff", groups.client_mac)
    assert record["client"]["address_leased"] is True


def test_another_device_on_the_staff_address_stays_a_pupil(groups: Groups) -> None:
    """A pupil who sets the staff laptop's address by hand is still a pupil: the gateway sees
    their MAC, and the DHCP server never leased them that address."""
    original = groups.client_mac
    groups.set_client_mac(SQUATTER_MAC)
    try:
        assert groups.upload() == 403
        record = groups.last_decision()
        assert (record["group"], record["decision"]) == ("pupils", "block")
        assert (record["client"]["mac"], record["client"]["address_leased"]) == (
            SQUATTER_MAC,
            False,
        )
    finally:
        groups.set_client_mac(original)
    assert groups.upload() == 200  # the leased device is staff again


def test_a_vlan_group_matches_traffic_from_its_vlan(groups: Groups) -> None:
    assert groups.upload(source=VLAN_CLIENT_IP) == 200
    record = groups.last_decision()
    assert (record["group"], record["client"]["vlan"]) == ("vlan-monitored", VLAN)
    assert record["client"]["client_ip"] == VLAN_CLIENT_IP
