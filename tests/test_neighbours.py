"""The gateway's neighbour table: who is really behind a client address (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from schoolgate.gateway.neighbours import (
    Neighbour,
    NeighbourTable,
    parse_arp,
    parse_ip_neigh,
    vlan_of,
)

ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
192.0.2.2        0x1         0x2         02:00:5e:00:53:02     *        wlan0
192.0.2.3        0x1         0x0         00:00:00:00:00:00     *        wlan0
198.51.100.7     0x1         0x2         02:00:5E:00:53:07     *        eth0.20
198.51.100.8     0x1         0x6         02:00:5e:00:53:08     *        eth0.30
garbage line
203.0.113.9      0x1         zz          02:00:5e:00:53:09     *        wlan0
"""


def test_parse_arp_keeps_complete_entries_only() -> None:
    assert parse_arp(ARP) == {
        "192.0.2.2": Neighbour("02:00:5e:00:53:02", "wlan0"),
        "198.51.100.7": Neighbour("02:00:5e:00:53:07", "eth0.20"),
        "198.51.100.8": Neighbour("02:00:5e:00:53:08", "eth0.30"),  # complete + permanent
    }


def test_parse_ip_neigh_skips_failed_and_unresolved() -> None:
    def entry(dst: str, dev: str, mac: str | None, state: str) -> dict[str, object]:
        found: dict[str, object] = {"dst": dst, "dev": dev, "state": [state]}
        return found | ({"lladdr": mac} if mac else {})

    text = json.dumps(
        [
            entry("2001:db8::2", "wlan0", "02:00:5e:00:53:02", "REACHABLE"),
            entry("2001:db8::3", "wlan0", None, "FAILED"),
            entry("2001:db8::4", "wlan0", "02:00:5e:00:53:04", "INCOMPLETE"),
            entry("2001:DB8:0::5", "eth0.20", "02:00:5e:00:53:05", "STALE"),
            entry("not an address", "wlan0", "02:00:5e:00:53:06", "STALE"),
            "junk",
        ]
    )
    assert parse_ip_neigh(text) == {
        "2001:db8::2": Neighbour("02:00:5e:00:53:02", "wlan0"),
        "2001:db8::5": Neighbour("02:00:5e:00:53:05", "eth0.20"),
    }
    assert parse_ip_neigh("") == {}
    assert parse_ip_neigh("{not json") == {}


def test_vlan_of_reads_the_sub_interface() -> None:
    assert vlan_of("eth0.20") == 20
    assert vlan_of("eth0.20", "eth0") == 20
    assert vlan_of("eth1.20", "eth0") is None  # another parent's sub-interface
    assert vlan_of("wlan0") is None
    assert vlan_of("eth0.0") is None
    assert vlan_of("eth0.4095") is None


def test_table_rereads_so_an_address_that_changed_hands_gets_the_new_mac(tmp_path: Path) -> None:
    now = [0.0]
    arp = tmp_path / "arp"
    arp.write_text(ARP)
    v6 = ['[{"dst": "2001:db8::2", "dev": "wlan0", "lladdr": "02:00:5e:00:53:02"}]']
    table = NeighbourTable(arp_path=arp, read_v6=lambda: v6[0], refresh_s=1.0, clock=lambda: now[0])
    assert table.lookup("192.0.2.2") == Neighbour("02:00:5e:00:53:02", "wlan0")
    assert table.lookup("::ffff:192.0.2.2") == Neighbour("02:00:5e:00:53:02", "wlan0")
    assert table.lookup("2001:db8::2") == Neighbour("02:00:5e:00:53:02", "wlan0")
    assert table.lookup("not an ip") is None

    arp.write_text(ARP.replace("02:00:5e:00:53:02", "02:00:5e:00:53:99"))
    v6[0] = "[]"
    assert table.lookup("192.0.2.2") == Neighbour("02:00:5e:00:53:02", "wlan0")  # within 1 s
    now[0] = 1.5
    assert table.lookup("192.0.2.2") == Neighbour("02:00:5e:00:53:99", "wlan0")
    assert table.lookup("2001:db8::2") is None

    # A device that joined after the last read is looked for again at once (not a second on).
    arp.write_text(ARP + "192.0.2.50  0x1  0x2  02:00:5e:00:53:50  *  wlan0\n")
    assert table.lookup("192.0.2.50") == Neighbour("02:00:5e:00:53:50", "wlan0")
    reads = [0]
    original = table._reload

    def counted(version: int) -> None:
        reads[0] += 1
        original(version)

    table._reload = counted  # type: ignore[method-assign]
    table.lookup("192.0.2.77")  # nobody's neighbour: one read, then none for a second
    table.lookup("192.0.2.77")
    assert reads[0] == 1

    arp.unlink()  # an unreadable table knows nobody rather than failing the connection
    now[0] = 3.0
    assert table.lookup("192.0.2.2") is None
