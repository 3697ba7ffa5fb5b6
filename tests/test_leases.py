"""DHCP lease files: dnsmasq, ISC dhcpd and Kea CSV, reloads on change, malformed lines."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from schoolgate.gateway.leases import (
    LeaseTable,
    detect_format,
    normalize_mac,
    parse_dnsmasq,
    parse_isc,
    parse_kea,
)

DNSMASQ = """\
1735689600 00:11:22:aa:bb:cc 10.20.0.15 pupil-ipad 01:00:11:22:aa:bb:cc
0 0a:0b:0c:0d:0e:0f 10.20.0.16 * *
this line is broken
1735689600 de:ad:be:ef:00:01 not-an-ip host *
duid 00:01:00:01:2c:5e:1f:aa:52:54:00:12:34:56
1735689600 23456789 fd00::15 laptop 00:01:00:01:aa
"""

ISC = """\
# The format of this file is documented in the dhcpd.leases(5) manual page.
authoring-byte-order little-endian;
server-duid "\\000\\001";

lease 10.30.0.5 {
  starts 4 2024/01/04 10:00:00;
  ends 4 2024/01/04 22:00:00;
  binding state active;
  hardware ethernet 00:11:22:33:44:55;
  uid "\\001\\000\\021\\"3D}";
  client-hostname "year9-chromebook";
}
lease 10.30.0.6 {
  ends never;
  binding state active;
  hardware ethernet 66:77:88:99:AA:BB;
}
lease 10.30.0.5 {
  starts 5 2024/01/05 10:00:00;
  ends epoch 1704542400; # Sat Jan 06 12:00:00 2024
  binding state free; # a comment must not swallow the next statement
  binding state active;
  hardware ethernet 00:11:22:33:44:66;
  client-hostname "renamed";
}
lease 10.30.0.7 {
  binding state free;
  hardware ethernet 01:02:03:04:05:06;
}
lease not.an.ip {
  binding state active;
}
failover peer "dhcp" state {
  my state normal at 1 2024/01/01 00:00:00;
}
lease 10.30.0.9 {
  binding state active;
"""

KEA4 = """\
address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id
10.40.0.10,aa:bb:cc:dd:ee:01,01:aa,3600,1735689600,1,0,0,tablet&#x2cone.school.lan.,0,,0
10.40.0.11,aa:bb:cc:dd:ee:02,,3600,1735689600,1,0,0,,0,,0
10.40.0.12,aa:bb:cc:dd:ee:03,,3600,1735689600,1,0,0,gone,0,,0
10.40.0.12,aa:bb:cc:dd:ee:03,,0,1735689600,1,0,0,gone,0,,0
10.40.0.13,aa:bb:cc:dd:ee:04,,3600,1735689600,1,0,0,declined,1,,0
garbage,row
"""


def test_dnsmasq() -> None:
    result = parse_dnsmasq(DNSMASQ)
    assert result.malformed == 2
    lease = result.leases["10.20.0.15"]
    assert (lease.mac, lease.hostname, lease.expires) == (
        "00:11:22:aa:bb:cc",
        "pupil-ipad",
        1735689600.0,
    )
    assert result.leases["10.20.0.16"].hostname is None
    assert result.leases["10.20.0.16"].expires is None  # 0 means infinite
    v6 = result.leases["fd00::15"]
    assert (v6.mac, v6.hostname) == (None, "laptop")


def test_isc_last_entry_wins_and_inactive_leases_are_dropped() -> None:
    result = parse_isc(ISC)
    assert set(result.leases) == {"10.30.0.5", "10.30.0.6"}
    lease = result.leases["10.30.0.5"]
    assert (lease.mac, lease.hostname, lease.expires) == (
        "00:11:22:33:44:66",
        "renamed",
        1704542400.0,
    )
    other = result.leases["10.30.0.6"]
    assert (other.mac, other.hostname, other.expires) == ("66:77:88:99:aa:bb", None, None)
    assert result.malformed == 2  # the bad IP and the unterminated block


def test_isc_date_expiry_and_quoted_braces() -> None:
    text = 'lease 10.0.0.1 {\n ends 4 2024/01/04 22:00:00;\n uid "}{;";\n client-hostname "a";\n}\n'
    lease = parse_isc(text).leases["10.0.0.1"]
    assert lease.hostname == "a"
    assert lease.expires == 1704405600.0


def test_kea() -> None:
    result = parse_kea(KEA4)
    assert set(result.leases) == {"10.40.0.10", "10.40.0.11"}
    assert result.leases["10.40.0.10"].hostname == "tablet,one.school.lan"
    assert result.leases["10.40.0.11"].hostname is None
    assert result.malformed == 1


def test_kea_v6_columns() -> None:
    text = (
        "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,"
        "fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id\n"
        "fd00::20,00:01:02,3600,1735689600,1,1800,0,1,128,0,0,phone,0a:00:00:00:00:01,0,,1,0,0\n"
    )
    lease = parse_kea(text).leases["fd00::20"]
    assert (lease.mac, lease.hostname) == ("0a:00:00:00:00:01", "phone")


def test_detect_format() -> None:
    assert detect_format(DNSMASQ) == "dnsmasq"
    assert detect_format(ISC) == "isc"
    assert detect_format(KEA4) == "kea"


def test_normalize_mac() -> None:
    assert normalize_mac("0-1-2-A-B-C") == "00:01:02:0a:0b:0c"
    assert normalize_mac("00:11:22:33:44") is None
    assert normalize_mac("1735689600") is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_table_reloads_when_the_file_changes_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "dnsmasq.leases"
    path.write_text("1 00:11:22:33:44:55 10.0.0.2 first *\n", encoding="utf-8")
    clock = Clock()
    table = LeaseTable(path, check_interval_s=5, clock=clock)
    lease = table.lookup("10.0.0.2")
    assert lease is not None
    assert lease.hostname == "first"
    assert table.loads == 1

    path.write_text("1 00:11:22:33:44:55 10.0.0.2 second *\nbroken\n", encoding="utf-8")
    os.utime(path, ns=(1, 10**18))  # make sure the mtime differs even on coarse filesystems
    clock.now = 4.0
    lease = table.lookup("10.0.0.2")
    assert lease is not None
    assert lease.hostname == "first"  # not re-checked within the interval
    clock.now = 5.0
    lease = table.lookup("10.0.0.2")
    assert lease is not None
    assert lease.hostname == "second"
    assert table.malformed == 1
    clock.now = 20.0
    table.lookup("10.0.0.2")
    assert table.loads == 2  # unchanged file: stat only, no re-parse


def test_table_handles_ipv4_mapped_addresses_and_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "dhcpd.leases"
    path.write_text(ISC, encoding="utf-8")
    table = LeaseTable(path)
    lease = table.lookup("::ffff:10.30.0.6")
    assert lease is not None
    assert lease.mac == "66:77:88:99:aa:bb"
    assert table.lookup("not an ip") is None
    assert table.lookup("10.99.0.1") is None
    assert len(table) == 2


def test_missing_file_is_empty_not_an_error(tmp_path: Path) -> None:
    table = LeaseTable(tmp_path / "absent.leases", "kea")
    assert table.lookup("10.0.0.1") is None
    assert table.last_error is not None
    (tmp_path / "absent.leases").write_text(KEA4, encoding="utf-8")
    table.refresh(force=True)
    assert table.lookup("10.40.0.10") is not None
    assert table.last_error is None


def test_binary_garbage_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "garbage.leases"
    path.write_bytes(random.Random(5).randbytes(4096) + b"\n1 00:11:22:33:44:55 10.0.0.9 ok *\n")
    table = LeaseTable(path, "dnsmasq")
    assert table.lookup("10.0.0.9") is not None
    assert table.malformed >= 1


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown lease file format"):
        LeaseTable(tmp_path / "x", "bogus")  # type: ignore[arg-type]
