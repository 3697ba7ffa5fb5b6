"""Device identity from the gateway's DHCP leases: client IP -> (MAC, hostname).

Reads dnsmasq (`/var/lib/misc/dnsmasq.leases`), ISC dhcpd (`dhcpd.leases`) and Kea memfile CSV
lease files, and the CSV a Windows Server DHCP exports (`Get-DhcpServerv4Lease | Export-Csv`),
copied to the gateway by a scheduled task when DHCP is not on the gateway. The file is re-read
only when its stat (mtime, size, inode) changes, and stat is called at most once per
`check_interval_s`, so a lookup per request is a dict probe. Malformed lines and blocks are
skipped and counted, never fatal.
"""

from __future__ import annotations

import codecs
import csv
import io
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

type LeaseFormat = Literal["auto", "dnsmasq", "isc", "kea", "windows"]

_MAC: Final = re.compile(r"^[0-9a-fA-F]{1,2}([:-][0-9a-fA-F]{1,2}){5}$")
_ISC_TOKEN: Final = re.compile(r'"((?:[^"\\]|\\.)*)"|(#[^\n]*)|([{};])|([^\s{};"]+)', re.S)
_MAX_FILE_BYTES: Final = 64 << 20


@dataclass(frozen=True)
class Lease:
    """One device's lease. `expires` is a Unix time, or None for infinite/unknown."""

    ip: str
    mac: str | None
    hostname: str | None
    expires: float | None


@dataclass(frozen=True)
class ParseResult:
    """Leases by IP (the last entry for an IP wins, as the files are append-mostly)."""

    leases: dict[str, Lease]
    malformed: int


def normalize_mac(value: str) -> str | None:
    """`00-11-22-aa-bb-cc` / `0:11:22:AA:BB:CC` -> `00:11:22:aa:bb:cc`; None if not a MAC."""
    text = value.strip()
    if not _MAC.match(text):
        return None
    return ":".join(part.zfill(2) for part in re.split("[:-]", text.lower()))


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def parse_dnsmasq(text: str) -> ParseResult:
    """`<expiry> <mac|iaid> <ip> <hostname|*> <client-id|*>` lines; `duid` lines are skipped."""
    leases: dict[str, Lease] = {}
    malformed = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] == "duid":
            continue
        ip = _ip(fields[2]) if len(fields) >= 4 else None
        if ip is None or not fields[0].isdigit():
            malformed += 1
            continue
        expiry = int(fields[0])
        # IPv6 leases carry an IAID where IPv4 ones carry the MAC.
        mac = normalize_mac(fields[1])
        hostname = None if fields[3] == "*" else fields[3]
        leases[ip] = Lease(ip, mac, hostname, float(expiry) if expiry else None)
    return ParseResult(leases, malformed)


def _isc_tokens(text: str) -> Iterator[str]:
    for match in _ISC_TOKEN.finditer(text):
        quoted, comment, punct, word = match.groups()
        if quoted is not None:
            yield '"' + quoted
        elif comment is None:
            yield punct or word


def parse_isc(text: str) -> ParseResult:
    """ISC dhcpd `lease IP { ... }` blocks; leases whose binding state is not active are dropped."""
    leases: dict[str, Lease] = {}
    malformed = 0
    tokens = list(_isc_tokens(text))
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "lease":
            if position + 2 >= len(tokens) or tokens[position + 2] != "{":
                malformed += 1
                position += 1
                continue
            ip = _ip(tokens[position + 1])
            statements, position, closed = _isc_block(tokens, position + 3)
            if ip is None or not closed:
                malformed += 1
                continue
            lease = _isc_lease(ip, statements)
            if lease is None:
                leases.pop(ip, None)
            else:
                leases[ip] = lease
        elif token == "{":  # some other block (failover state, ...): skip it whole
            _, position, _ = _isc_block(tokens, position + 1)
        else:
            position += 1
    return ParseResult(leases, malformed)


def _isc_block(tokens: list[str], start: int) -> tuple[list[list[str]], int, bool]:
    """Statements of a block opened just before `start`; (statements, next index, closed)."""
    statements: list[list[str]] = []
    current: list[str] = []
    depth = 1
    position = start
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return statements, position, True
        elif token == ";":
            if depth == 1 and current:
                statements.append(current)
            current = []
        elif depth == 1:
            current.append(token)
    return statements, position, False


def _isc_lease(ip: str, statements: list[list[str]]) -> Lease | None:
    mac: str | None = None
    hostname: str | None = None
    expires: float | None = None
    state = "active"
    for statement in statements:
        match statement:
            case ["hardware", _, address]:
                mac = normalize_mac(address)
            case ["client-hostname", name] if name.startswith('"'):
                hostname = name[1:] or None
            case ["binding", "state", value]:
                state = value
            case ["ends", "epoch", seconds, *_] if seconds.isdigit():
                expires = float(seconds)
            case ["ends", _, day, clock]:
                try:
                    stamp = datetime.strptime(f"{day} {clock}", "%Y/%m/%d %H:%M:%S")
                    expires = stamp.replace(tzinfo=UTC).timestamp()
                except ValueError:
                    expires = None
            case _:
                pass
    if state != "active":
        return None
    return Lease(ip, mac, hostname, expires)


def _kea_unescape(value: str) -> str:
    # Kea escapes commas in text fields as "&#x2c" so that the CSV stays one field per column.
    return value.replace("&#x2c", ",").replace("&#X2C", ",")


def parse_kea(text: str) -> ParseResult:
    """Kea memfile CSV (v4 `address,hwaddr,...` or v6 `address,duid,...,hwaddr,...`).

    Rows with state other than 0 (declined, expired-reclaimed) or valid_lifetime 0 (released)
    remove the address; later rows win.
    """
    leases: dict[str, Lease] = {}
    malformed = 0
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if not header or header[0].strip() != "address":
        return ParseResult({}, 1 if text.strip() else 0)
    columns = {name.strip(): index for index, name in enumerate(header)}
    for row in rows:
        if not row or not "".join(row).strip():
            continue
        ip = _ip(row[0]) if len(row) >= len(columns) else None
        if ip is None:
            malformed += 1
            continue

        def column(name: str, current: list[str] = row) -> str:
            index = columns.get(name)
            return current[index].strip() if index is not None else ""

        state, lifetime, expire = column("state"), column("valid_lifetime"), column("expire")
        if (state and state != "0") or lifetime == "0":
            leases.pop(ip, None)
            continue
        hostname = _kea_unescape(column("hostname")).rstrip(".") or None
        expires = float(expire) if expire.isdigit() and expire != "0" else None
        leases[ip] = Lease(ip, normalize_mac(column("hwaddr")), hostname, expires)
    return ParseResult(leases, malformed)


# Windows DHCP address states in which a device holds the address now. Offered, Declined, Expired
# and InactiveReservation rows are not leases: they are skipped.
_WINDOWS_HELD: Final = frozenset({"active", "activereservation"})
_CLIENT_ID: Final = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2})*$")
# A culture's short date and long time, as Export-Csv writes a DateTime: `12/4/2026 3:15:02 PM`
# (en-US), `04/12/2026 15:15:02` (en-GB), `04.12.2026 15:15:02` (de-DE), `2026/12/04 15:15:02`.
_WINDOWS_STAMP: Final = re.compile(
    r"(\d{1,4})[/.-](\d{1,2})[/.-](\d{1,4})\.?[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"(?:\s*([AaPp])\.?[Mm]\.?)?"
)


@dataclass(frozen=True)
class _WindowsCsv:
    columns: dict[str, int]  # lower-cased header name -> index
    width: int
    rows: Iterator[list[str]]

    def field(self, row: list[str], name: str) -> str:
        index = self.columns.get(name)
        return row[index].strip() if index is not None else ""


def _windows_csv(text: str) -> _WindowsCsv | None:
    """A Windows export's header and rows, or None if the text is not one.

    Export-Csv writes a UTF-8 BOM (`-Encoding UTF8` in Windows PowerShell), CRLF line ends,
    every field quoted, and, without `-NoTypeInformation` (Windows PowerShell 5.1 and older),
    a `#TYPE ...` line first; `-UseCulture` makes the separator `;` in many European cultures.
    """
    text = text.removeprefix("\ufeff")
    if text.startswith("#TYPE"):
        text = text.partition("\n")[2]
    first = text.partition("\n")[0]
    delimiter = ";" if ";" in first and "," not in first else ","
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(rows, [])
    except csv.Error:
        return None
    columns = {name.strip().lower(): index for index, name in enumerate(header)}
    if "ipaddress" not in columns or not {"clientid", "clientduid"} & columns.keys():
        return None
    return _WindowsCsv(columns, len(header), rows)


def _windows_mac(client_id: str) -> str | None:
    """The MAC in a ClientId: `aa-bb-cc-dd-ee-ff`, or `01-aa-bb-cc-dd-ee-ff` (a DHCP client
    identifier of hardware type 1, Ethernet, RFC 2132 9.14). Longer identifiers (DUID-based,
    RFC 4361) are opaque: a MAC inside a DUID need not be the interface in use, so none is
    taken from them."""
    mac = normalize_mac(client_id)
    if mac is None and _CLIENT_ID.match(client_id):
        octets = re.split("[:-]", client_id.lower())
        if len(octets) == 7 and octets[0] == "01":
            mac = ":".join(octets[1:])
    return mac


def _windows_day_first(stamps: list[str]) -> bool | None:
    """Whether this export's numeric dates put the day first (en-GB `04/12/2026`) or the month
    (en-US `12/4/2026`). The culture is not in the file, so it is read from a date only one order
    can make (a 13th or later); None when no date in the file decides it."""
    month_first = day_first = True
    for stamp in stamps:
        match = _WINDOWS_STAMP.fullmatch(stamp)
        if match is not None and len(match[3]) == 4:
            month_first &= int(match[1]) <= 12
            day_first &= int(match[2]) <= 12
    return day_first if day_first != month_first else None


def _windows_expiry(stamp: str, day_first: bool | None) -> float | None:
    """LeaseExpiryTime as a Unix time; None when empty (reservations) or not readable for sure.

    Export-Csv writes the DHCP server's local time in its culture's format, without a zone. It
    is read as the gateway's local time: the gateway and the DHCP server are on the same site
    and normally set to the same zone (if not, expiries are off by the difference). Nothing in
    the lookup depends on it: AddressState says which rows are leases. A date whose day and
    month order the file does not settle is left unknown rather than guessed.
    """
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp)  # `s`/`o` formats; an explicit offset is honoured
    except ValueError:
        match = _WINDOWS_STAMP.fullmatch(stamp)
        if match is None:
            return None
        first, second, third, hour, minute, second_of_minute, meridiem = match.groups()
        if len(first) == 4:
            year, month, day = first, second, third
        elif len(third) == 4 and day_first is not None:
            year, month, day = (third, second, first) if day_first else (third, first, second)
        else:
            return None
        clock = int(hour)
        if meridiem:
            clock = clock % 12 + (12 if meridiem in "Pp" else 0)
        try:
            moment = datetime(
                int(year), int(month), int(day), clock, int(minute), int(second_of_minute or 0)
            )
        except ValueError:
            return None
    return moment.timestamp()  # a naive time is taken as local time (see above)


def parse_windows(text: str) -> ParseResult:
    """Windows Server DHCP leases, as `Get-DhcpServerv4Lease | Export-Csv` writes them.

    Columns are read by name, in any order: IPAddress, ClientId (the MAC, `aa-bb-cc-dd-ee-ff`),
    HostName, AddressState, LeaseExpiryTime. Only Active and ActiveReservation rows are leases
    (a file without an AddressState column counts every row). The file is a snapshot, not a
    log, so a skipped row for an address does not remove a lease listed for it elsewhere in the
    file. Rows without a MAC are skipped uncounted: `Get-DhcpServerv6Lease` exports carry a
    DUID, not a MAC, so their addresses are never leased to a MAC here and count as hand-set
    (the default group), as do clients with DUID-based client identifiers. A row with a bad
    address, a field count other than the header's, or a ClientId that is not hex octets is
    malformed.
    """
    export = _windows_csv(text)
    if export is None:
        return ParseResult({}, 1 if text.strip() else 0)
    malformed = 0
    held: list[tuple[str, str, str | None, str]] = []
    while True:
        try:
            row = next(export.rows)
        except StopIteration:
            break
        except csv.Error:  # a field over csv's size limit: the reader goes on after it
            malformed += 1
            continue
        if not "".join(row).strip():
            continue
        ip = _ip(export.field(row, "ipaddress")) if len(row) == export.width else None
        if ip is None:
            malformed += 1
            continue
        state = export.field(row, "addressstate").lower()
        if "addressstate" in export.columns and state not in _WINDOWS_HELD:
            continue
        client_id = export.field(row, "clientid")
        mac = _windows_mac(client_id)
        if mac is None:
            if client_id and not _CLIENT_ID.match(client_id):
                malformed += 1
            continue
        hostname = export.field(row, "hostname").rstrip(".") or None
        held.append((ip, mac, hostname, export.field(row, "leaseexpirytime")))
    day_first = _windows_day_first([stamp for *_, stamp in held])
    leases = {
        ip: Lease(ip, mac, hostname, _windows_expiry(stamp, day_first))
        for ip, mac, hostname, stamp in held
    }
    return ParseResult(leases, malformed)


def detect_format(text: str) -> Literal["dnsmasq", "isc", "kea", "windows"]:
    """Guess a lease file's format from its content."""
    if _windows_csv(text[:4096]) is not None:
        return "windows"
    stripped = text.lstrip()
    if stripped.startswith("address,"):
        return "kea"
    if re.search(r"^\s*lease\s+\S+\s*\{", text, re.M) or stripped.startswith("#"):
        return "isc"
    return "dnsmasq"


_PARSERS: Final[dict[str, Callable[[str], ParseResult]]] = {
    "dnsmasq": parse_dnsmasq,
    "isc": parse_isc,
    "kea": parse_kea,
    "windows": parse_windows,
}


def _decode(raw: bytes) -> str:
    """UTF-8, or UTF-16 where a byte order mark says so (Windows PowerShell's `Out-File` and
    `Export-Csv -Encoding Unicode` write UTF-16LE); undecodable bytes become U+FFFD."""
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if raw.startswith(bom):
            return raw[len(bom) :].decode(codec, "replace")
    return raw.decode("utf-8", "replace")


_EXPIRY_GRACE_S = 60.0


def _held(lease: Lease, now: float) -> bool:
    """Whether a lease is still held at `now` (infinite ones always are)."""
    return lease.expires is None or lease.expires + _EXPIRY_GRACE_S >= now


class LeaseTable:
    """IP -> Lease from one lease file, reloaded when the file changes. Thread-safe."""

    def __init__(
        self,
        path: Path | str,
        fmt: LeaseFormat = "auto",
        *,
        check_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if fmt not in ("auto", *_PARSERS):
            raise ValueError(f"unknown lease file format {fmt!r}")
        self.path = Path(path)
        self._format = fmt
        self._interval = check_interval_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._checked_at: float | None = None
        self._leases: dict[str, Lease] = {}
        self.malformed = 0
        self.loads = 0
        self.last_error: str | None = None

    def lookup(self, ip: str, at: float | None = None) -> Lease | None:
        """The lease for a client address (IPv4, IPv6 or IPv4-mapped IPv6) held at Unix time
        `at` (default: now), or None."""
        address = _ip(ip)
        if address is None:
            return None
        mapped = ipaddress.ip_address(address)
        if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
            address = str(mapped.ipv4_mapped)
        self.refresh()
        with self._lock:
            lease = self._leases.get(address)
        # An expired lease is nobody's (adversarial pass a6: a pupil who copied a staff laptop's
        # MAC and address was given its group from a lease that had run out). DHCP clients
        # renew at half the lease time, so a live device never gets here; the grace covers the
        # server writing its file late.
        if lease is None or not _held(lease, self._wall_clock() if at is None else at):
            return None
        return lease

    def held(self) -> list[Lease]:
        """Every lease held now (expired ones left out)."""
        self.refresh()
        now = self._wall_clock()
        with self._lock:
            leases = list(self._leases.values())
        return [lease for lease in leases if _held(lease, now)]

    def __len__(self) -> int:
        self.refresh()
        with self._lock:
            return len(self._leases)

    def refresh(self, force: bool = False) -> None:
        """Stat the file (at most once per interval unless forced) and reload it if it changed."""
        with self._lock:
            now = self._clock()
            if (
                not force
                and self._checked_at is not None
                and now - self._checked_at < self._interval
            ):
                return
            self._checked_at = now
            try:
                info = os.stat(self.path)
            except OSError as error:
                self._leases, self._signature = {}, None
                self.last_error = f"{self.path}: {error.strerror or error}"
                return
            signature = (info.st_mtime_ns, info.st_size, info.st_ino)
            if signature == self._signature:
                return
            self._load(signature)

    def _load(self, signature: tuple[int, int, int]) -> None:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(_MAX_FILE_BYTES + 1)
        except OSError as error:
            self.last_error = f"{self.path}: {error.strerror or error}"
            return
        if len(raw) > _MAX_FILE_BYTES:
            self.last_error = f"{self.path}: larger than {_MAX_FILE_BYTES} bytes, not loaded"
            return
        text = _decode(raw)
        fmt = detect_format(text) if self._format == "auto" else self._format
        result = _PARSERS[fmt](text)
        self._leases = result.leases
        self.malformed = result.malformed
        self._signature = signature
        self.loads += 1
        self.last_error = None
