"""Leases from a Windows Server DHCP (Export-Csv of Get-DhcpServerv4Lease), read by name."""

from __future__ import annotations

import os
from pathlib import Path

from schoolgate.gateway.leases import LeaseTable, detect_format, parse_windows

HEADER = (
    '"IPAddress","ScopeId","AddressState","ClientId","ClientType","Description","DnsRR",'
    '"DnsRegistration","HostName","LeaseExpiryTime","NapCapable","NapStatus","PolicyName",'
    '"ProbationEnds","ServerIP"'
)


def row(ip: str, state: str, mac: str, host: str, expiry: str = "12/4/2026 3:15:02 PM") -> str:
    return (
        f'"{ip}","10.20.0.0","{state}","{mac}","Dhcp","","A","NotApplicable","{host}",'
        f'"{expiry}","False","FullAccess","","","10.0.0.2"'
    )


EXPORT = "\r\n".join(
    [
        HEADER,
        row("10.20.0.7", "Active", "02-00-5e-00-53-07", "staff-laptop.school.local"),
        row("10.20.0.8", "ActiveReservation", "02-00-5E-00-53-08", "printer", ""),
        row("10.20.0.9", "Declined", "02-00-5e-00-53-09", "x"),
        row("10.20.0.10", "Expired", "02-00-5e-00-53-10", "y"),
        row("10.20.0.11", "InactiveReservation", "02-00-5e-00-53-11", "z", ""),
        row("not an ip", "Active", "02-00-5e-00-53-12", "bad"),
        row("10.20.0.13", "Active", "nonsense", "bad-mac"),
    ]
)


def test_held_addresses_only_with_their_macs_and_hostnames() -> None:
    result = parse_windows(EXPORT)
    assert {ip: (lease.mac, lease.hostname) for ip, lease in result.leases.items()} == {
        "10.20.0.7": ("02:00:5e:00:53:07", "staff-laptop.school.local"),
        "10.20.0.8": ("02:00:5e:00:53:08", "printer"),
    }
    assert result.malformed == 2


def test_bom_type_line_and_reordered_columns() -> None:
    old_powershell = "\ufeff#TYPE Microsoft.Management.Infrastructure.CimInstance\n" + (
        '"HostName","ClientId","IPAddress","AddressState"\n'
        '"phone","02-00-5e-00-53-21","10.20.0.21","Active"\n'
    )
    assert detect_format(old_powershell) == "windows"
    leases = parse_windows(old_powershell).leases
    assert leases["10.20.0.21"].mac == "02:00:5e:00:53:21"
    # An IPv6 export has DUIDs, not MACs: nothing to take from it, nothing broken either.
    v6 = (
        '"IPAddress","ClientDuid","Iaid","AddressType","HostName"\n'
        '"2001:db8::5","00-01","1","IANA","p"\n'
    )
    assert detect_format(v6) == "windows"
    assert parse_windows(v6).leases == {}
    assert parse_windows(v6).malformed == 0


def test_the_table_follows_a_copied_export(tmp_path: Path) -> None:
    """The scheduled task copies a new export over the old one (a new file, then a rename)."""
    path = tmp_path / "leases.csv"
    path.write_text(EXPORT)
    now = [0.0]
    table = LeaseTable(path, check_interval_s=5, clock=lambda: now[0])
    first = table.lookup("10.20.0.7")
    assert first is not None
    assert first.mac == "02:00:5e:00:53:07"
    staged = tmp_path / "leases.csv.new"
    staged.write_text(HEADER + "\r\n" + row("10.20.0.7", "Active", "02-00-5e-00-53-99", "other"))
    os.replace(staged, path)
    now[0] = 6.0
    moved = table.lookup("10.20.0.7")
    assert moved is not None
    assert moved.mac == "02:00:5e:00:53:99"
    assert table.lookup("10.20.0.8") is None
