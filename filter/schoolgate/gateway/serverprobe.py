"""Whether a server address serves any catalogued name, asked of the server itself.

A TLS 1.2 resumption of a session the gateway never saw issued (sniffer.tlsresume) is refused
wherever that session could be a catalogued host's. Refusing it everywhere locked browsers out:
Chromium offers a refused ticket again on every connection until it expires (measured: report
resume-clients), which for a TLS 1.2 site visited at home could mean hours without it at
school. A cross-name resumption can only reach a catalogued host at an address that serves
one, so the gateway asks the address: a TLS handshake naming each catalogued name (as the
resolver's own pass lists them), and a look at the certificate it gets. An address that
presents a certificate for none of them, while answering, is *clear*: a session resumed there
cannot be a catalogued host's. One that covers a catalogued name is *catalogued*. Until an
address is probed, its unknown resumptions are refused (and a probe starts), so the cost to a
browser is one failed page, not hours.

Probes are bounded: one address at a time per worker pool, each address at most once a day,
and a few addresses a minute, so a pupil cannot turn the gateway into a scanner of its own.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger("schoolgate.fastpath")

PROBE_TIMEOUT_S: Final = 3.0  # per handshake
REMEMBER_S: Final = 24 * 3600.0
RETRY_S: Final = 600.0  # an address that answered no probe is asked again after this
PER_MINUTE: Final = 6  # addresses probed a minute, at most
WORKERS: Final = 8
REMEMBERED: Final = 16_384


class Serves(enum.Enum):
    CLEAR = "clear"  # answered, and for no catalogued name
    CATALOGUED = "catalogued"  # presented a certificate for a catalogued name
    UNANSWERED = "unanswered"  # answered no probe: nothing is known (asked again later)


type Fetch = Callable[[str, str], bytes | None]


def server_certificate(address: str, name: str, port: int = 443) -> bytes | None:
    """The DER certificate `address` presents to a hello naming `name`; None if no handshake.
    Not verified: a certificate for the name is evidence enough that the server hosts it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, ValueError):
        return None


def certificate_names(der: bytes) -> set[str]:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return set()
    names = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names |= set(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return {n.lower().rstrip(".") for n in names}


def covers(pattern: str, name: str) -> bool:
    """Certificate name matching (RFC 6125: a wildcard covers one leftmost label)."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


class ServerProbe:
    """`verdict(address)`: what is known of it (None: not yet); `consider(address)` starts a
    probe of it in the background when that is due and allowed."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        catalogued: Callable[[str], bool] = lambda name: False,
        fetch: Fetch = server_certificate,
        clock: Callable[[], float] = time.monotonic,
        per_minute: int = PER_MINUTE,
        workers: int = WORKERS,
    ) -> None:
        self.names = [n.lower().rstrip(".") for n in names]
        # A certificate naming any catalogued host counts too: a wildcard of the catalog is
        # probed by its base and www only, and a server may present a host of it for those.
        self.catalogued = catalogued
        self.fetch = fetch
        self.clock = clock
        self.per_minute = per_minute
        self._known: OrderedDict[str, tuple[Serves, float]] = OrderedDict()
        self._running: set[str] = set()
        self._started: list[float] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serverprobe")

    def verdict(self, address: str) -> Serves | None:
        with self._lock:
            found = self._known.get(address)
        if found is None or found[1] < self.clock():
            return None
        return found[0]

    def consider(self, address: str) -> bool:
        """Start a probe of `address` unless one runs, its answer is fresh, or this minute's
        allowance is spent; whether one started."""
        now = self.clock()
        with self._lock:
            known = self._known.get(address)
            if address in self._running or (known is not None and known[1] >= now):
                return False
            self._started = [t for t in self._started if now - t < 60]
            if len(self._started) >= self.per_minute:
                return False
            self._started.append(now)
            self._running.add(address)
        threading.Thread(target=self._probe, args=(address,), daemon=True).start()
        return True

    def probe(self, address: str) -> Serves:
        """Ask `address` now (blocking); the answer is remembered."""
        with self._lock:
            self._running.add(address)
        return self._probe(address)

    def _probe(self, address: str) -> Serves:
        found = threading.Event()
        answered = threading.Event()

        def one(name: str) -> None:
            if found.is_set():
                return
            der = self.fetch(address, name)
            if der is None:
                return
            answered.set()
            presented = certificate_names(der)
            if any(covers(p, name) or self.catalogued(p.replace("*.", "x.", 1))
                   for p in presented):  # fmt: skip
                found.set()

        with contextlib.suppress(RuntimeError):  # the pool was shut down (a reload)
            list(self._pool.map(one, self.names))
        serves = (Serves.CATALOGUED if found.is_set()
                  else Serves.CLEAR if answered.is_set() else Serves.UNANSWERED)  # fmt: skip
        keep = RETRY_S if serves is Serves.UNANSWERED else REMEMBER_S
        with self._lock:
            self._running.discard(address)
            self._known.pop(address, None)
            self._known[address] = (serves, self.clock() + keep)
            while len(self._known) > REMEMBERED:
                self._known.popitem(last=False)
        log.info("schoolgate: server %s probed for catalogued names: %s", address, serves.value)
        return serves

    def resumable(self, address: str) -> bool:
        """Whether a session the gateway never saw issued may be resumed at `address`: only
        where the address is known to serve no catalogued name. Starts a probe otherwise."""
        serves = self.verdict(address)
        if serves is None or serves is Serves.UNANSWERED:
            self.consider(address)
        return serves is Serves.CLEAR

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
