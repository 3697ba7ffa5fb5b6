"""DHCP lease files: dnsmasq, ISC dhcpd, Kea CSV and Windows Server exports, reloads on change,
malformed lines."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schoolgate.gateway.leases import (
    LeaseTable,
    detect_format,
    normalize_mac,
    parse_dnsmasq,
    parse_isc,
    parse_kea,
    parse_windows,
)

DNSMASQ = """\
1735689600 00:11:22:aa:bb:cc 10.20.0.15 pupil-ipad 01:00:11:22:aa:bb:cc
0 0a:0b:0c:0d:0e:0f 10.20.0.16 * *
this line is broken
1735689600 de:ad:be:ef:00:01 not-an-ip host *
duid 00:01:00:01:2c:5e:1f:aa:52:54:00:12:34:56
1735689600 23456789 fd00::15 laptop 00:01:00:01:aa
"""

BEFORE_EXPIRY = 1_735_600_000.0  # the samples' leases (2025-01-01) are held at this time
WINDOWS_HELD_AT = 1_796_083_200.0  # 2026-12-01 00:00 UTC: the Windows samples' leases are held

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
    assert detect_format(WINDOWS) == "windows"


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
    table = LeaseTable(path, check_interval_s=5, clock=clock, wall_clock=lambda: 0.0)
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
    table = LeaseTable(tmp_path / "absent.leases", "kea", wall_clock=lambda: BEFORE_EXPIRY)
    assert table.lookup("10.0.0.1") is None
    assert table.last_error is not None
    (tmp_path / "absent.leases").write_text(KEA4, encoding="utf-8")
    table.refresh(force=True)
    assert table.lookup("10.40.0.10") is not None
    assert table.last_error is None


def test_binary_garbage_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "garbage.leases"
    path.write_bytes(random.Random(5).randbytes(4096) + b"\n1 00:11:22:33:44:55 10.0.0.9 ok *\n")
    table = LeaseTable(path, "dnsmasq", wall_clock=lambda: 0.0)
    assert table.lookup("10.0.0.9") is not None
    assert table.malformed >= 1


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown lease file format"):
        LeaseTable(tmp_path / "x", "bogus")  # type: ignore[arg-type]


# Windows Server DHCP: `Get-DhcpServerv4Scope | Get-DhcpServerv4Lease | Export-Csv
# -NoTypeInformation -Encoding UTF8` (Windows PowerShell 5.1: BOM, CRLF, every value quoted, $null
# written as an empty unquoted field), on a server whose culture is en-US.
WINDOWS_COLUMNS = (
    "IPAddress",
    "ScopeId",
    "AddressState",
    "ClientId",
    "ClientType",
    "Description",
    "DnsRR",
    "DnsRegistration",
    "HostName",
    "LeaseExpiryTime",
    "NapCapable",
    "NapStatus",
    "PolicyName",
    "ProbationEnds",
    "ServerIP",
    "PSComputerName",
)


def windows_row(
    ip: str,
    state: str,
    client_id: str,
    hostname: str,
    expiry: str | None = "12/5/2026 3:15:02 PM",
    description: str = "",
) -> dict[str, str | None]:
    return {
        "IPAddress": ip,
        "ScopeId": ip.rsplit(".", 1)[0] + ".0",
        "AddressState": state,
        "ClientId": client_id,
        "ClientType": "Dhcp",
        "Description": description,
        "DnsRR": "A",
        "DnsRegistration": "NotApplicable",
        "HostName": hostname,
        "LeaseExpiryTime": expiry,
        "NapCapable": "False",
        "NapStatus": "FullAccess",
        "PolicyName": None,
        "ProbationEnds": None,
        "ServerIP": "10.0.0.2",
        "PSComputerName": None,
    }


def export_csv(
    rows: list[dict[str, str | None]],
    columns: tuple[str, ...] = WINDOWS_COLUMNS,
    *,
    type_line: bool = False,
    delimiter: str = ",",
) -> str:
    """What Export-Csv writes (as text; the BOM is the encoder's business)."""

    def quoted(value: str | None) -> str:
        return "" if value is None else '"' + value.replace('"', '""') + '"'

    lines = [delimiter.join(f'"{name}"' for name in columns)]
    lines += [delimiter.join(quoted(row[name]) for name in columns) for row in rows]
    if type_line:
        lines.insert(
            0,
            "#TYPE Microsoft.Management.Infrastructure.CimInstance"
            "#root/Microsoft/Windows/DHCP/DhcpServerv4Lease",
        )
    return "\r\n".join(lines) + "\r\n"


WINDOWS = (
    "\ufeff"
    + export_csv(
        [
            windows_row(
                "10.20.0.6", "Active", "02-00-5e-00-53-06", "Y7-IPAD06", "12/13/2026 8:40:11 AM"
            ),
            windows_row("10.20.0.7", "Active", "02-00-5e-00-53-07", "STAFF-LT07.school.local"),
            windows_row(
                "10.20.0.8",
                "ActiveReservation",
                "02-00-5E-00-53-08",
                "printer-a12.school.local",
                None,
                'Reprographics, "A12"\r\nsecond floor',
            ),
            windows_row("10.20.0.9", "InactiveReservation", "02-00-5e-00-53-09", "spare", None),
            windows_row("10.20.0.10", "Declined", "02-00-5e-00-53-10", ""),
            windows_row("10.20.0.11", "Expired", "02-00-5e-00-53-11", "old-phone"),
            windows_row("10.20.0.12", "Offered", "02-00-5e-00-53-12", ""),
            windows_row("10.20.0.13", "Active", "01-02-00-5e-00-53-13", "LAB-PC13"),  # 01: Ethernet
            windows_row("10.20.0.14", "Active", "ff-00-00-00-01-00-01-2c-5e-1f-aa", "linux-box"),
            windows_row("10.20.0.300", "Active", "02-00-5e-00-53-15", "bad-address"),
            windows_row("10.20.0.16", "Active", "not a client id", "bad-client-id"),
        ]
    )
    + '"10.20.0.17","10.20.0.0","Active"\r\n'  # a row cut short
)


def test_windows_export_keeps_held_leases_with_their_macs_and_hostnames() -> None:
    result = parse_windows(WINDOWS)
    leases = {ip: (lease.mac, lease.hostname) for ip, lease in result.leases.items()}
    assert leases == {
        "10.20.0.6": ("02:00:5e:00:53:06", "Y7-IPAD06"),
        "10.20.0.7": ("02:00:5e:00:53:07", "STAFF-LT07.school.local"),
        "10.20.0.8": ("02:00:5e:00:53:08", "printer-a12.school.local"),
        "10.20.0.13": ("02:00:5e:00:53:13", "LAB-PC13"),
    }
    # 10.20.0.14's client identifier is DUID-based (RFC 4361): no MAC, so no lease, not broken.
    assert result.malformed == 3  # the bad address, the bad client id, the short row


def test_windows_type_line_reordered_columns_and_culture_separator() -> None:
    rows = [windows_row("10.20.1.5", "Active", "02-00-5e-00-54-05", "pupil-tab05")]
    columns = ("HostName", "AddressState", "LeaseExpiryTime", "ClientId", "ScopeId", "IPAddress")
    for text in (
        export_csv(rows, columns, type_line=True),  # Windows PowerShell without -NoTypeInformation
        export_csv(rows, columns, delimiter=";"),  # Export-Csv -UseCulture on a de-DE server
        export_csv(rows, columns, type_line=True).replace("\r\n", "\n"),
    ):
        assert detect_format(text) == "windows"
        result = parse_windows(text)
        lease = result.leases["10.20.1.5"]
        assert (lease.mac, lease.hostname, result.malformed) == (
            "02:00:5e:00:54:05",
            "pupil-tab05",
            0,
        )


def test_windows_a_skipped_row_does_not_remove_a_lease_listed_elsewhere() -> None:
    """An export is a snapshot, not a log: row order says nothing about time."""
    text = export_csv(
        [
            windows_row("10.20.2.1", "Active", "02-00-5e-00-55-01", "now"),
            windows_row("10.20.2.1", "Expired", "02-00-5e-00-55-99", "before"),
        ]
    )
    lease = parse_windows(text).leases["10.20.2.1"]
    assert (lease.mac, lease.hostname) == ("02:00:5e:00:55:01", "now")


def test_windows_ipv6_export_has_no_macs_to_take() -> None:
    """Get-DhcpServerv6Lease rows carry a DUID; a MAC inside a DUID need not be the interface
    in use, so none is made up: the rows are skipped, and only a broken one is counted."""
    text = (
        '"IPAddress","Prefix","ClientDuid","Iaid","AddressType","HostName","Description",'
        '"LeaseExpiryTime","PSComputerName"\r\n'
        '"2001:db8:20::15","2001:db8:20::","00-01-00-01-2c-5e-1f-aa-02-00-5e-00-53-07",'
        '"117440512","IANA","STAFF-LT07.school.local","","12/4/2026 3:15:02 PM",\r\n'
        '"2001:db8:20::zz","2001:db8:20::","00-03-00-01-02-00-5e-00-53-08","1","IANA","","",'
        '"12/4/2026 3:15:02 PM",\r\n'
    )
    assert detect_format("\ufeff" + text) == "windows"
    result = parse_windows(text)
    assert result.leases == {}
    assert result.malformed == 1


@pytest.fixture
def gateway_at_utc_plus_10(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "AEST-10")  # POSIX TZ: ten hours east of UTC, no tzdata needed
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.usefixtures("gateway_at_utc_plus_10")
def test_windows_expiry_is_read_as_the_gateways_local_time() -> None:
    leases = parse_windows(WINDOWS).leases
    # en-US: 12/13 settles the order for the whole file, so 12/5 is the 5th of December.
    assert leases["10.20.0.7"].expires == utc(2026, 12, 5, 5, 15, 2)  # 3:15:02 PM at UTC+10
    assert leases["10.20.0.6"].expires == utc(2026, 12, 12, 22, 40, 11)
    assert leases["10.20.0.8"].expires is None  # a reservation has no expiry
    text = export_csv(
        [
            windows_row("10.20.3.1", "Active", "02-00-5e-00-56-01", "", "2026-12-04 15:15:02"),
            windows_row("10.20.3.2", "Active", "02-00-5e-00-56-02", "", "2026-12-04T15:15:02Z"),
            windows_row("10.20.3.3", "Active", "02-00-5e-00-56-03", "", "12/13/2026 12:05:00 AM"),
            windows_row("10.20.3.4", "Active", "02-00-5e-00-56-04", "", "tomorrow"),
        ]
    )
    expiries = {ip: lease.expires for ip, lease in parse_windows(text).leases.items()}
    assert expiries == {
        "10.20.3.1": utc(2026, 12, 4, 5, 15, 2),
        "10.20.3.2": utc(2026, 12, 4, 15, 15, 2),  # an explicit zone is honoured
        "10.20.3.3": utc(2026, 12, 12, 14, 5, 0),  # 12 AM is midnight
        "10.20.3.4": None,  # unreadable expiry: still a lease (AddressState decides)
    }


@pytest.mark.usefixtures("gateway_at_utc_plus_10")
@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        # en-GB: a 13th settles it, so 04/12 is the 4th of December.
        (
            ["13/12/2026 08:00:00", "04/12/2026 15:15:02"],
            [datetime(2026, 12, 13, 8), datetime(2026, 12, 4, 15, 15, 2)],
        ),
        # en-US: a 13th in second place makes it month first, so 12/4 is the 4th of December.
        (
            ["12/13/2026 8:00:00 AM", "12/4/2026 3:15:02 PM"],
            [datetime(2026, 12, 13, 8), datetime(2026, 12, 4, 15, 15, 2)],
        ),
        # de-DE
        (
            ["04.12.2026 15:15:02", "28.11.2026 09:00:00"],
            [datetime(2026, 12, 4, 15, 15, 2), datetime(2026, 11, 28, 9)],
        ),
        # Nothing in the file tells 4 December from 12 April: unknown, not guessed.
        (["04/12/2026 15:15:02", "05/12/2026 09:00:00"], [None, None]),
    ],
)
def test_windows_day_and_month_order_is_taken_from_the_file_never_guessed(
    stamps: list[str], expected: list[datetime | None]
) -> None:
    rows = [
        windows_row(f"10.20.4.{n}", "Active", f"02-00-5e-00-57-0{n}", "", stamp)
        for n, stamp in enumerate(stamps)
    ]
    leases = parse_windows(export_csv(rows)).leases
    got = [leases[f"10.20.4.{n}"].expires for n in range(len(stamps))]
    ten_hours = 10 * 3600  # the gateway's local time is UTC+10
    assert got == [
        None if local is None else local.replace(tzinfo=UTC).timestamp() - ten_hours
        for local in expected
    ]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "utf-16"])
def test_table_follows_a_windows_export_copied_in_by_rename(tmp_path: Path, encoding: str) -> None:
    """The server's scheduled task copies each new export next to the old one and renames it
    over the old one, so the gateway never reads half a file."""
    path = tmp_path / "windows-leases.csv"
    path.write_bytes(WINDOWS.removeprefix("\ufeff").encode(encoding))
    clock = Clock()
    # held at a fixed time before the samples' expiry, not the machine's clock (which passed
    # the first sample's expiry on 2026-12-05 and made this test fail from then on)
    table = LeaseTable(path, check_interval_s=5, clock=clock, wall_clock=lambda: WINDOWS_HELD_AT)
    lease = table.lookup("10.20.0.7")
    assert lease is not None
    assert (lease.mac, lease.hostname) == ("02:00:5e:00:53:07", "STAFF-LT07.school.local")
    assert table.lookup("10.20.0.10") is None  # declined
    assert (len(table), table.malformed) == (4, 3)

    staged = tmp_path / "windows-leases.csv.new"
    renewed = [
        windows_row("10.20.0.7", "Active", "02-00-5e-00-53-77", "PUPIL-TAB77"),
        windows_row("10.20.0.8", "ActiveReservation", "02-00-5e-00-53-08", "printer", None),
    ]
    staged.write_bytes(export_csv(renewed, type_line=True).encode(encoding))
    os.replace(staged, path)
    clock.now = 5.0
    lease = table.lookup("10.20.0.7")
    assert lease is not None
    assert (lease.mac, lease.hostname) == ("02:00:5e:00:53:77", "PUPIL-TAB77")
    assert table.lookup("10.20.0.13") is None  # no longer in the export
    assert (len(table), table.malformed, table.loads) == (2, 0, 2)


def test_an_expired_lease_is_nobodys(tmp_path: Path) -> None:
    """Adversarial pass a6: a staff lease that ran out an hour ago still gave its group to a
    pupil who copied the laptop's MAC and address."""
    path = tmp_path / "dnsmasq.leases"
    path.write_text(
        "1000000 02:00:00:00:00:aa 192.0.2.130 staff-laptop *\n"
        "2000000 02:00:00:00:00:bb 192.0.2.131 staff-tablet *\n"
        "0 02:00:00:00:00:cc 192.0.2.132 printer *\n"
    )
    now = [1_000_000.0 + 3600]
    table = LeaseTable(path, "dnsmasq", wall_clock=lambda: now[0])
    assert table.lookup("192.0.2.130") is None  # expired an hour ago
    tablet = table.lookup("192.0.2.131")
    assert tablet is not None
    assert tablet.mac == "02:00:00:00:00:bb"
    assert table.lookup("192.0.2.132") is not None  # infinite
    now[0] = 1_000_030.0
    assert table.lookup("192.0.2.130") is not None  # within the grace for a late write
