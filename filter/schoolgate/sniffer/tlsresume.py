"""A TLS <= 1.2 server that resumes a session takes the session's server name, not the one the
resuming ClientHello names (OpenSSL, Java and Node servers do). A pupil who made a session to a
catalogued upload host outside school could so resume it at school under a harmless name and
be passed on unread (adversarial pass a27 R12: 6 of 6 banked uploads, fast path and proxy).
TLS 1.3 binds a resumed session to its name, so only TLS <= 1.2 is at stake.

A TLS 1.2 handshake is clear text up to the server's ChangeCipherSpec, and so is what shows a
resumption: the ServerHello echoes the session id the client offered, or is followed by a
NewSessionTicket or the ChangeCipherSpec instead of a Certificate. So:

- `ServerFlight` reads a server's stream from its first byte (bounded: only a ServerHello and a
  NewSessionTicket are kept, every other message is skipped by length) up to that
  ChangeCipherSpec;
- `SessionBook` remembers, for a while, the session ids and tickets servers issued through this
  gateway and the name each was issued under, keyed by the server's address as well (a pupil's
  own server could otherwise issue a catalogued session's id under a harmless name);
- `ResumeCheck` judges one connection: a resumption goes on only for a session the book holds
  under the same name at the same address; anything else is refused, with a fatal alert in
  place of the server's answer (RFC 5246 7.2.2: the session must then be dropped).

Nothing else can vouch for a session the gateway never saw issued. Asking the server which
names it serves was tried (a hello for each catalogued name, and the certificate each got) and
defeated three ways by adversarial passes a31-a33: a server that shows a catalogued
certificate only to one exact name, or only to hellos that look like a browser's, or only to
peers other than the gateway. So a session made at home is refused at school. curl and most
libraries then make a new session; Chromium offers the refused ticket again until it expires or
the browser restarts, at TLS 1.2-only sites (it speaks TLS 1.3 wherever it can, where this does
not arise): the cost, measured and documented in docs/gateway.md.
"""

from __future__ import annotations

import enum
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from schoolgate.sniffer.tlshello import ClientHello

HANDSHAKE: Final = 0x16
CHANGE_CIPHER_SPEC: Final = 0x14
SERVER_HELLO: Final = 0x02
NEW_SESSION_TICKET: Final = 0x04
EXT_SERVER_NAME: Final = 0x0000
EXT_SESSION_TICKET: Final = 0x0023
EXT_SUPPORTED_VERSIONS: Final = 0x002B
TLS13: Final = 0x0304
# A fatal access_denied alert (RFC 5246 7.2.2: a session that ends in a fatal alert "MUST be
# invalidated"), sent to a client whose resumption is refused, in place of the server's answer.
ACCESS_DENIED_ALERT: Final = bytes.fromhex("15030300020231")
MAX_KEPT: Final = 16 * 1024  # a ServerHello (post-quantum key share included) or a ticket
SESSIONS: Final = 65_536  # remembered sessions; the oldest go first
# One device's share of the book: past it, that device's own oldest sessions go, so one pupil's
# flood of handshakes cannot push everyone else's out (adversarial pass a34: 75,000 handshakes
# from one device emptied the book in 90 seconds).
DEVICE_SHARE: Final = SESSIONS // 8
FRESH_MAX: Final = 4_096  # sessions journaled between two flushes (a second apart)
SESSION_S: Final = 24 * 3600.0  # longer than servers keep TLS 1.2 sessions (minutes to hours)


@dataclass(frozen=True)
class ServerHello:
    version: int  # the negotiated one: supported_versions where present
    random: bytes
    session_id: bytes
    ticket_promised: bool  # an empty session_ticket extension: a NewSessionTicket will follow
    # An empty server_name extension (RFC 6066 3): the server took the hello's name, and a
    # session it issues keeps it. Without it (OpenSSL's SSL_TLSEXT_ERR_NOACK, which Apache's
    # mod_ssl answers for a name it has no site for) the session has no name, and resumed it is
    # a connection without one, which a server may route by its Host header alone.
    name_acknowledged: bool = False


class ServerFlight:
    """The handshake messages a server sends in clear text, read from its stream's first byte
    in any cut (records split across segments, messages across records)."""

    def __init__(self) -> None:
        self.hello: ServerHello | None = None
        self.types: list[int] = []  # handshake message types, in order
        self.tickets: list[bytes] = []  # from NewSessionTicket messages
        self.ended = False  # a ChangeCipherSpec, an alert or anything not a handshake record
        self.malformed = ""
        self._header = bytearray()  # of the record being read
        self._record_left = 0
        self._message = bytearray()  # handshake header, then the body while it is kept
        self._skip = 0  # body bytes of a message that is not kept

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data) and not self.ended:
            if self._record_left == 0:
                take = min(5 - len(self._header), len(data) - at)
                self._header += data[at : at + take]
                at += take
                if len(self._header) < 5:
                    return
                kind, length = self._header[0], int.from_bytes(self._header[3:5], "big")
                self._header.clear()
                if kind != HANDSHAKE or length == 0:
                    self.ended = True  # ChangeCipherSpec (encrypted from here), alert, data
                    self.types.append(-kind)
                    return
                self._record_left = length
                continue
            take = min(self._record_left, len(data) - at)
            self._handshake(data[at : at + take])
            self._record_left -= take
            at += take

    def _handshake(self, data: bytes) -> None:
        at = 0
        while at < len(data) and not self.ended:
            if self._skip:
                step = min(self._skip, len(data) - at)
                self._skip -= step
                at += step
                continue
            if len(self._message) < 4:
                take = min(4 - len(self._message), len(data) - at)
                self._message += data[at : at + take]
                at += take
                if len(self._message) == 4:
                    self._begin()
                continue
            need = 4 + int.from_bytes(self._message[1:4], "big") - len(self._message)
            take = min(need, len(data) - at)
            self._message += data[at : at + take]
            at += take
            if take == need:
                self._end()

    def _begin(self) -> None:
        kind, length = self._message[0], int.from_bytes(self._message[1:4], "big")
        self.types.append(kind)
        if kind in (SERVER_HELLO, NEW_SESSION_TICKET):
            if length > MAX_KEPT:
                self._fail(f"a {length}-byte handshake message")
            elif length == 0:
                self._end()
            return
        self._skip = length
        self._message.clear()

    def _end(self) -> None:
        kind, body = self._message[0], bytes(self._message[4:])
        self._message.clear()
        try:
            if kind == SERVER_HELLO and self.hello is None:
                self.hello = _server_hello(body)
            elif kind == NEW_SESSION_TICKET:
                # TLS 1.2 (RFC 5077): a lifetime hint, then the ticket
                length = int.from_bytes(body[4:6], "big")
                if len(body) != 6 + length:
                    raise ValueError("NewSessionTicket length")
                self.tickets.append(body[6:])
        except (ValueError, IndexError) as exc:
            self._fail(f"unreadable handshake message ({exc})")

    def _fail(self, why: str) -> None:
        self.malformed = why
        self.ended = True


def _server_hello(body: bytes) -> ServerHello:
    version = int.from_bytes(body[0:2], "big")
    random = body[2:34]
    id_length = body[34]
    if id_length > 32:
        raise ValueError("session id longer than 32 bytes")
    session_id = body[35 : 35 + id_length]
    at = 35 + id_length + 3  # cipher suite, compression method
    if at > len(body):
        raise ValueError("ServerHello cut short")
    promised = acknowledged = False
    if at < len(body):
        end = at + 2 + int.from_bytes(body[at : at + 2], "big")
        if end != len(body):
            raise ValueError("extensions do not fill the ServerHello")
        at += 2
        while at < end:
            kind = int.from_bytes(body[at : at + 2], "big")
            length = int.from_bytes(body[at + 2 : at + 4], "big")
            value = body[at + 4 : at + 4 + length]
            if len(value) != length:
                raise ValueError("extension overruns the ServerHello")
            if kind == EXT_SUPPORTED_VERSIONS and length == 2:
                version = int.from_bytes(value, "big")
            elif kind == EXT_SESSION_TICKET:
                promised = True
            elif kind == EXT_SERVER_NAME:
                acknowledged = True
            at += 4 + length
    return ServerHello(version, random, session_id, promised, acknowledged)


class SessionBook:
    """TLS <= 1.2 session ids and tickets servers issued through this gateway: the name each
    was issued under, by server address. Bounded in count and age, and in each device's share;
    a session it no longer holds is refused once, and the client makes a new one. It may be
    dumped and restored, so that a restarted gateway still vouches for the sessions it saw
    issued (a session it forgot is refused, and Chromium offers it again until it expires), and
    it may consult a `peer`: the other path's book (the proxy's and the fast path's each vouch
    for what the other saw issued when an address moves between them)."""

    def __init__(
        self,
        *,
        size: int = SESSIONS,
        lifetime: float = SESSION_S,
        device_share: int = DEVICE_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.lifetime = lifetime
        self.device_share = device_share
        self.clock = clock
        self.peer: SessionBook | None = None
        # Called when a session is in neither book: the peer's file may have news (it is
        # written as an address moves to this path, moments before its devices arrive).
        self.on_miss: Callable[[], object] | None = None
        self._names: OrderedDict[bytes, tuple[str, float, str]] = OrderedDict()
        self._by_device: dict[str, OrderedDict[bytes, None]] = {}
        self._lock = threading.Lock()  # the fast path's queue reader and its saver share it
        # Issued since `take_fresh` last ran: the journal the other path reads between dumps.
        self._fresh: list[tuple[bytes, str, float, str]] = []
        self.changes = 0  # sessions issued or restored so far: a dump of an unchanged book waits

    def __len__(self) -> int:
        return len(self._names)

    @staticmethod
    def _key(server: str, kind: str, credential: bytes) -> bytes:
        return hashlib.sha256(f"{server}\0{kind}\0".encode() + credential).digest()

    def issued(
        self, server: str, kind: str, credential: bytes, name: str, device: str = ""
    ) -> None:
        """`device`: the client's address, whose share of the book the session takes."""
        key = self._key(server, kind, credential)
        with self._lock:
            when = self.clock()
            self._add(key, name, when, device)
            self.changes += 1
            if len(self._fresh) < FRESH_MAX:  # the rest wait for the next dump
                self._fresh.append((key, name, when, device))

    def _add(self, key: bytes, name: str, when: float, device: str) -> None:
        self._drop(key)
        self._names[key] = (name, when, device)
        own = self._by_device.setdefault(device, OrderedDict())
        own[key] = None
        if len(own) > self.device_share:
            self._drop(next(iter(own)))
        while len(self._names) > self.size:
            self._drop(next(iter(self._names)))

    def _drop(self, key: bytes) -> None:
        found = self._names.pop(key, None)
        if found is not None:
            own = self._by_device[found[2]]
            del own[key]
            if not own:
                del self._by_device[found[2]]

    def name(self, server: str, kind: str, credential: bytes) -> str | None:
        key = self._key(server, kind, credential)
        with self._lock:
            found = self._names.get(key)
            if found is not None and self.clock() - found[1] > self.lifetime:
                self._drop(key)
                found = None
        if found is not None:
            return found[0]
        for attempt in (1, 2):
            peer = self.peer
            named = peer.name(server, kind, credential) if peer is not None else None
            if named is not None or attempt == 2 or self.on_miss is None:
                return named
            self.on_miss()
        return None

    def take_fresh(self, wall: Callable[[], float] = time.time) -> list[list[object]]:
        """The sessions issued since the last call, as `dump` writes them (a journal's lines)."""
        with self._lock:
            now, at = self.clock(), wall()
            fresh, self._fresh = self._fresh, []
        return [[key.hex(), name, round(at - (now - t), 3), device]
                for key, name, t, device in fresh]  # fmt: skip

    def dump(self, wall: Callable[[], float] = time.time) -> bytes:
        """The sessions still in date, oldest first, with wall-clock times: keys are digests
        (no session id or ticket is written), names the server names they were issued under."""
        with self._lock:
            now, at = self.clock(), wall()
            sessions = [[key.hex(), name, round(at - (now - t), 3), device]
                        for key, (name, t, device) in self._names.items()
                        if now - t <= self.lifetime]  # fmt: skip
        return json.dumps({"version": 1, "sessions": sessions}).encode()

    def restore(self, data: bytes, wall: Callable[[], float] = time.time) -> int:
        """Add a dump's sessions that are still in date; how many. A dump that cannot be read
        raises ValueError and adds nothing."""
        try:
            document = json.loads(data)
            if not isinstance(document, dict) or document.get("version") != 1:
                raise ValueError("not a version 1 session book")
            entries = [_entry(entry) for entry in document["sessions"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"unreadable session book ({error})") from None
        with self._lock:
            now, at = self.clock(), wall()
            merged = [(key, name, when, device)
                      for key, (name, when, device) in self._names.items()]  # fmt: skip
            added = 0
            for key, name, stamp, device in entries:
                age = max(0.0, at - stamp)  # rounding, or a wall clock set back since
                if len(key) == 32 and age <= self.lifetime and key not in self._names:
                    merged.append((key, name, now - age, device))
                    added += 1
            self.changes += 1
            self._names.clear()
            self._by_device.clear()
            for key, name, when, device in sorted(merged, key=lambda item: item[2]):
                self._add(key, name, when, device)
        return added


def _entry(entry: list[object]) -> tuple[bytes, str, float, str]:
    """One dumped session: [key, name, when, device], or [key, name, when] as written before
    devices had shares (the device is then unknown)."""
    if not isinstance(entry, list) or len(entry) not in (3, 4):
        raise ValueError(f"a session entry of {entry!r}")
    key, name, when = entry[:3]
    if not isinstance(key, str) or not isinstance(when, int | float):
        raise ValueError(f"a session entry of {entry!r}")
    return bytes.fromhex(key), str(name), float(when), str(entry[3]) if len(entry) > 3 else ""


class Resume(enum.Enum):
    WAIT = "wait"  # more of the server's stream is needed
    HOLD = "hold"  # a TLS <= 1.2 ServerHello is read, not yet whether it resumes: hold the client
    DONE = "done"  # nothing resumed, or a session this name was issued: nothing more to read
    REFUSE = "refuse"  # a resumed session not seen issued under this name here


def normalized(name: str | None) -> str:
    return (name or "").strip().rstrip(".").lower()


class ResumeCheck:
    """One connection's: `hello` is the ClientHello the connection was judged by, `server` the
    address it goes to. Feed the server's stream in order; ask `verdict()`."""

    def __init__(
        self,
        hello: ClientHello,
        server: str,
        book: SessionBook,
        device: str = "",
    ) -> None:
        self.name = normalized(hello.sni)
        self.session_id = hello.session_id
        self.ticket = hello.ticket
        self.server = server
        self.book = book
        self.device = device  # the client's address: the sessions it is issued are its share
        self.flight = ServerFlight()
        self._recorded = 0  # tickets already in the book
        self._settled: Resume | None = None
        self.reason = ""

    def feed(self, data: bytes) -> None:
        if self._settled is None:
            self.flight.feed(data)

    def verdict(self) -> Resume:
        if self._settled is not None:
            return self._settled
        flight, hello = self.flight, self.flight.hello
        if flight.malformed and (hello is None or self._resumed() is None):
            # Fail closed: a server answer this cannot read might resume anything.
            self.reason = f"the server's TLS handshake cannot be read ({flight.malformed})"
            return self._settle(Resume.REFUSE)
        if hello is None:
            if flight.ended:  # an alert, or not TLS: no session goes anywhere
                return self._settle(Resume.DONE)
            return Resume.WAIT
        if hello.version >= TLS13:
            return self._settle(Resume.DONE)  # TLS 1.3 ties a session to its name
        resumed = self._resumed()
        if resumed is None:
            return Resume.HOLD if not flight.ended else self._settle(Resume.DONE)
        if resumed and not self._known():
            return self._settle(Resume.REFUSE)
        # A session the server issued without taking the name is booked as nameless: its
        # resumption is refused like a hello without a name (adversarial pass a36 F11). A
        # resuming server never acknowledges one (RFC 6066 3): a ticket it renews while it
        # resumes (nginx after a key rotation, Go) is the session just found under this name
        # (a37 I2: booked as nameless, 6 of 10 later resumptions were refused).
        issued_as = self.name if hello.name_acknowledged or resumed else ""
        if not resumed and hello.session_id:
            self.book.issued(self.server, "id", hello.session_id, issued_as, self.device)
        for ticket in flight.tickets[self._recorded :]:
            self.book.issued(self.server, "ticket", ticket, issued_as, self.device)
        self._recorded = len(flight.tickets)
        if flight.ended or (not hello.ticket_promised and not resumed):
            return self._settle(Resume.DONE)
        return Resume.WAIT  # a ticket is promised: read on to it (or to the ChangeCipherSpec)

    @property
    def awaiting_ticket(self) -> bool:
        """Whether all that is left is to read a promised ticket into the book."""
        return (self._settled is None and self.flight.hello is not None
                and self._resumed() is not None and not self.reason)  # fmt: skip

    def _resumed(self) -> bool | None:
        """Whether the server resumed an offered session; None while that is not shown."""
        hello = self.flight.hello
        assert hello is not None
        if hello.session_id and hello.session_id == self.session_id:
            return True  # RFC 5246 7.4.1.3 (and RFC 5077 3.4 with a ticket): an echo resumes
        after = self.flight.types[1:2]
        if not after:
            return None
        # A new session goes on with a Certificate (or another key exchange message); a
        # resumed one with a NewSessionTicket or straight to the ChangeCipherSpec.
        return after[0] in (NEW_SESSION_TICKET, -CHANGE_CIPHER_SPEC)

    def _known(self) -> bool:
        """Whether the session the server resumed was issued under this name here. With a
        ticket offered, the ticket is the session (servers look a ticket up before a session
        id, and the id beside it is of the client's own making, RFC 5077 3.4): a booked id
        beside an unknown ticket proves nothing (adversarial pass a29 MIX: the harmless
        session's id, and the catalogued session's ticket, which the server resumed)."""
        kind, credential = ("ticket", self.ticket) if self.ticket else ("id", self.session_id)
        issued = self.book.name(self.server, kind, credential) if credential else None
        if issued == self.name and issued:
            return True
        where = (f"issued at {self.server} under {issued}" if issued else
                 f"issued at {self.server} under no name (the server did not take one)"
                 if issued == "" else
                 f"not one this gateway saw issued at {self.server}")  # fmt: skip
        self.reason = (
            f"resumes a TLS 1.2 session not issued under {self.name or 'this name'} "
            f"(its {kind} is {where})"
        )
        return False

    def _settle(self, verdict: Resume) -> Resume:
        self._settled = verdict
        return verdict
