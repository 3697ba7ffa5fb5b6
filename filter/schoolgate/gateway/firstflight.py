"""What a fast-pathed connection must say before the kernel carries it: a TLS ClientHello for
a server name the catalog does not know.

Deciding by destination address alone was not enough (adversarial pass a16): a pupil's own
name can point at a catalogued upload server the gateway never resolved itself (F1), a CNAME
chain hides the catalogued name (F2), and anything at all can be spoken on port 443 of a
fast-pathed address (F3). So the ruleset marks a fast-path connection *pending* and queues
(NFQUEUE) what the client sends, in order, until its ClientHello is whole:

- a server name the catalog does not know: *named*. The connection stays queued, both ways,
  until the server acknowledges every byte of that hello, and any byte the client sends again
  in that range must be the byte that was read; then it is *verified* and the kernel carries
  the rest. A hello the server never receives (a lower TTL, a TCP MD5 option, an old
  timestamp: adversarial pass a17's desync) cannot stand in for the one it does;
- a catalogued name, no name, or anything that is not TLS: *refused*. The connection is reset
  before the hello reaches a server that could answer it, and its address leaves the fast
  path, so the client's retry meets the proxy, which judges it as it judges everything else.

An Encrypted Client Hello is judged by its outer name, as the proxy judges it: browsers send a
placeholder ECH extension in every hello (a17 X3), and the resolver already strips the keys a
real one needs. This is the same evidence the proxy decides on (the server name), read before
any byte of an upload can follow it. The module parses packets and decides; the NFQUEUE binding
lives in `fastpath_service`, so everything here is tested without root.
"""

from __future__ import annotations

import enum
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from schoolgate.sniffer.tlshello import Malformed, complete_client_hello
from schoolgate.sniffer.tlsresume import ResumeCheck, SessionBook
from schoolgate.sniffer.tlsretry import RetryWatch, Watch

TCP: Final = 6
SYN: Final = 0x02
RST: Final = 0x04
ACK: Final = 0x10
URG: Final = 0x20
MPTCP: Final = 30  # the multipath TCP option's kind
# A ClientHello is a few KiB (post-quantum key shares included) in one or two records: past
# this, whatever the client is sending is not one.
MAX_FIRST_FLIGHT: Final = 20 * 1024
FIRST_FLIGHT_S: Final = 30.0  # a connection that says nothing this long is forgotten
MAX_FLOWS: Final = 16_384
MAX_BUFFERED: Final = 16 * 1024 * 1024  # all unfinished hellos together
# The server's segments queued before a verdict reach the check within milliseconds; the
# memory of a verified connection lasts this long, for them only.
VERIFIED_S: Final = 2.0
WITHDRAWING_S: Final = 5.0  # a withdrawal waits at most ~2 s for the session book's turn
ICMP: Final = 1
ICMPV6: Final = 58


class Verdict(enum.Enum):
    ACCEPT = "accept"  # let this packet go; the connection is still pending (or named)
    HOLD = "hold"  # drop this packet (out of order): the client sends it again
    NAMED = "named"  # the hello is read and fine: wait for the server to acknowledge it
    VERIFIED = "verified"  # the server has it: the connection may go on in the kernel
    REFUSED = "refused"  # reset the connection


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""
    server_name: str | None = None
    # The destination to take off the fast path: only when what the client said makes its
    # address the proxy's, not when the gateway merely lost track of a connection.
    withdraw: str | None = None
    # A server's packet whose payload the client gets as a TLS fatal alert instead
    # (alert_packet), so that it drops a session it may not resume here (sniffer.tlsresume).
    alert: bool = False
    alert_at: int | None = None  # the sequence number the alert goes at


class Segment(NamedTuple):
    """One TCP segment as queued (a tuple: the check parses every queued packet, and a
    connection waits for each)."""

    source: str
    destination: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes
    options: bytes = b""

    @property
    def multipath(self) -> bool:
        """Whether the segment carries a multipath TCP option (kind 30), in any copy."""
        # The byte test first: nearly every segment has no 30 anywhere in its options.
        return MPTCP in self.options and MPTCP in _option_kinds(self.options)

    @property
    def flow(self) -> tuple[str, int, str, int]:
        return (self.source, self.sport, self.destination, self.dport)

    @property
    def reply_to(self) -> tuple[str, int, str, int]:
        """The flow this segment answers (the server's segments of a client's connection)."""
        return (self.destination, self.dport, self.source, self.sport)


@dataclass
class _Flow:
    isn: int
    started: float
    data: bytearray = field(default_factory=bytearray)
    hello_end: int | None = None  # set once the hello is read and named a passable server
    server_isn: int = 0  # the server's, from its SYN-ACK
    # Set when the hello is named: follows the server's first message and, after a
    # HelloRetryRequest, the second hello (sniffer.tlsretry); None once that is settled.
    watch: RetryWatch | None = None
    server_fed: int = 0  # server stream bytes the watch has had
    server_passed: int = 0  # server stream bytes let through to the client while watched
    confirmed: bool = False  # the server's SYN-ACK acknowledged this start
    # The server acknowledged another start as well: with SYN cookies a server answers every
    # SYN, and the client's bare ACK, which nothing reads, picks the one it keeps (a20 C1).
    contested: bool = False


def _icmp(packet: bytes) -> bool:
    """An ICMP or ICMPv6 packet (without extension headers): conntrack gives an error the
    connection's state, so the queue rules pass it here."""
    if len(packet) < 40:
        return False
    version = packet[0] >> 4
    return (version == 4 and packet[9] == ICMP) or (version == 6 and packet[6] == ICMPV6)


def _truncated(packet: bytes) -> bool:
    """Whether the queue copied less of the packet than its IP header says it holds."""
    if len(packet) >= 4 and packet[0] >> 4 == 4:
        return int.from_bytes(packet[2:4], "big") > len(packet)
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        return 40 + int.from_bytes(packet[4:6], "big") > len(packet)
    return False


def parse_segment(packet: bytes) -> Segment | None:
    """The TCP segment in an IPv4 or IPv6 packet as the kernel queued it; None for anything
    else (a fragment, an IPv6 extension header, a header that overruns the packet)."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        header = (packet[0] & 0x0F) * 4
        if header < 20 or len(packet) < header:
            return None
        total, fragment, protocol = _IPV4.unpack_from(packet)
        if protocol != TCP or fragment & 0x3FFF:  # more-fragments or an offset
            return None
        source = socket.inet_ntop(socket.AF_INET, packet[12:16])
        destination = socket.inet_ntop(socket.AF_INET, packet[16:20])
        end = min(total, len(packet))
    elif version == 6:
        header = 40
        if len(packet) < header or packet[6] != TCP:
            return None
        source = socket.inet_ntop(socket.AF_INET6, packet[8:24])
        destination = socket.inet_ntop(socket.AF_INET6, packet[24:40])
        end = min(header + int.from_bytes(packet[4:6], "big"), len(packet))
    else:
        return None
    if end - header < 20:
        return None
    sport, dport, seq, ack, offset, flags = _TCP.unpack_from(packet, header)
    offset = (offset >> 4) * 4
    if offset < 20 or header + offset > end:
        return None
    return Segment(source, destination, sport, dport, seq, ack, flags,
                   bytes(packet[header + offset : end]),
                   bytes(packet[header + 20 : header + offset]))  # fmt: skip


_IPV4: Final = struct.Struct("!2xH2xH1xB")  # total length, flags and offset, protocol
_TCP: Final = struct.Struct("!HHIIBB")  # ports, sequence, acknowledgement, offset, flags


def _option_kinds(options: bytes) -> set[int]:
    """The option kinds a TCP header carries (a malformed length ends the walk)."""
    kinds: set[int] = set()
    at = 0
    while at < len(options):
        kind = options[at]
        if kind == 0:  # end of options
            break
        if kind == 1:  # no-operation
            at += 1
            continue
        kinds.add(kind)
        if at + 1 >= len(options) or options[at + 1] < 2:
            break
        at += options[at + 1]
    return kinds


class FirstFlightCheck:
    """Follows each pending connection's client bytes, in order, from its SYN to a whole
    ClientHello, and judges it. `catalogued(name)` says whether a server name is the proxy's
    (the catalog's hosts, CDNs and learnable upload hosts)."""

    def __init__(
        self,
        catalogued: Callable[[str], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalogued = catalogued
        self.clock = clock
        self._flows: OrderedDict[tuple[str, int, str, int], _Flow] = OrderedDict()
        self._buffered = 0
        self.sessions = SessionBook(clock=clock)  # TLS <= 1.2 sessions issued through here
        # Connections verified lately: packets of theirs queued before the verdict changed
        # the connection's state still arrive here, and are let go.
        self._verified: OrderedDict[tuple[str, int, str, int], float] = OrderedDict()
        # Connections refused with a withdrawal: reset once it is written (the service waits
        # for the session book's turn first), and until then their resends wait too, since
        # one reset sooner would send the client's retry down the fast path again.
        self._withdrawing: OrderedDict[tuple[str, int, str, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def judge(self, packet: bytes) -> Judgement:
        if _icmp(packet):
            # An error about the connection (too big, unreachable): it carries no stream
            # bytes to the server, and path MTU discovery needs it.
            return Judgement(Verdict.ACCEPT, "an ICMP error")
        if _truncated(packet):
            # Longer than the queue copies (QUEUE_COPY): IPv4 fragments conntrack reassembled
            # into one big segment (adversarial pass a20 D1). Its end cannot be read.
            return Judgement(Verdict.REFUSED, "a packet longer than the queue copies")
        segment = parse_segment(packet)
        if segment is None:
            return Judgement(Verdict.REFUSED, "not a TCP segment the check can read")
        if segment.multipath:
            # The ruleset clears it from SYNs, so no server speaks multipath TCP on the fast
            # path; were one to, its data-level sequence numbers, not TCP's, would say which
            # bytes its application reads (adversarial pass a24: a harmless hello read and
            # acknowledged, the catalogued one read by the server).
            return self._refuse(segment, "multipath TCP", None)
        if self._withdrawing.get(segment.flow, 0.0) > self.clock():
            return Judgement(Verdict.HOLD, "its refusal waits for its address's withdrawal")
        if segment.flags & (SYN | ACK) == SYN | ACK:
            return self._syn_ack(segment)
        if segment.flow not in self._flows:
            if segment.reply_to in self._flows:
                return self._reply(segment)
            if self._verified_lately(segment.reply_to):
                # The server's next segments, queued before the verdict changed the state.
                # Only the server's: a client's bytes on the same addresses and ports are a
                # new stream (adversarial pass a18 Y1: a new connection from the same port
                # rode an old verdict), judged from its first bytes like any other.
                return Judgement(Verdict.ACCEPT, "queued before the connection was verified")
            self._verified.pop(segment.flow, None)
        if segment.flags & RST:
            self._forget(segment.flow)
            return Judgement(Verdict.ACCEPT)
        if segment.flags & SYN and segment.payload:
            # TCP Fast Open. Whether the server took the SYN's bytes shows only in its SYN-ACK,
            # and the same acknowledgement answers a bare SYN (which skips the queue) placed
            # just past them: the check could not tell where the server's stream starts
            # (adversarial pass a22: the name in the SYN, unread, and a harmless hello after
            # it). The address stays: the ruleset clears the Fast Open option, so ordinary
            # clients send no bytes in a SYN, and a withdrawal here let one pupil's packet
            # take an IPv6 address from everyone for an hour (a24; the proxy is IPv4 only).
            return self._refuse(segment, "bytes in a SYN (TCP Fast Open)", None)
        if segment.flags & URG:
            # A server takes an urgent byte out of the stream it reads: what it reads would no
            # longer be what was judged.
            return self._refuse(segment, "urgent data", None)
        if segment.flags & SYN:
            self._start(segment)
            return Judgement(Verdict.ACCEPT)
        if not segment.payload:
            return Judgement(Verdict.ACCEPT)  # the handshake's ACK, a window update
        flow = self._flows.get(segment.flow)
        if flow is not None and flow.contested:
            return self._refuse(segment, "the server acknowledged two starts", None)
        if flow is None or not flow.confirmed:
            # Where the stream starts is the server's word, in its SYN-ACK (a client's bare
            # SYN skips the queue; a restarted service saw neither): without it, bytes cannot
            # be placed, and a hello read from a misplaced start could be acknowledged as a
            # duplicate (adversarial pass a19 Z1). Nothing is learnt about the address.
            return Judgement(Verdict.REFUSED, "no start seen")
        return self._add(segment, flow)

    def _syn_ack(self, segment: Segment) -> Judgement:
        """The server accepted a connection: its acknowledgement number fixes the client's
        stream start, whatever SYNs the client sent (a19 Z1b: a later SYN with a made-up
        sequence number moved the start)."""
        key = segment.reply_to
        isn = (segment.ack - 1) % 2**32
        flow = self._flows.get(key)
        if flow is not None and flow.confirmed and flow.isn != isn:
            flow.contested = True
            return Judgement(Verdict.ACCEPT, "another SYN-ACK, for another start")
        if flow is None or flow.isn != isn:
            self._forget(key)
            self._verified.pop(key, None)
            self._start_at(key, isn)
            flow = self._flows[key]
        flow.confirmed = True
        flow.server_isn = segment.seq
        return Judgement(Verdict.ACCEPT, "the server's SYN-ACK")

    def _start(self, segment: Segment) -> None:
        """A client's SYN (one with options that send it through the queue, or data): it
        starts a flow unless the server already confirmed another start for it."""
        known = self._flows.get(segment.flow)
        if known is not None and known.confirmed:
            return  # a retransmission, or a made-up SYN on a connection under way: ignored
        self._start_at(segment.flow, segment.seq)

    def _start_at(self, key: tuple[str, int, str, int], isn: int) -> None:
        now = self.clock()
        while self._flows:
            old_key, oldest = next(iter(self._flows.items()))
            if len(self._flows) < MAX_FLOWS and now - oldest.started < FIRST_FLIGHT_S:
                break
            self._forget(old_key)
        if key in self._flows and self._flows[key].isn == isn:
            return  # a retransmitted SYN
        self._forget(key)
        self._verified.pop(key, None)
        self._flows[key] = _Flow(isn, now)

    def _forget(self, key: tuple[str, int, str, int]) -> None:
        flow = self._flows.pop(key, None)
        if flow is not None:
            self._buffered -= len(flow.data)

    def _reply(self, segment: Segment) -> Judgement:
        """A server's segment of a named connection: once it acknowledges the whole hello,
        the server holds exactly the bytes that were read (every copy of them that crossed
        the gateway was compared), and the connection is verified."""
        flow = self._flows[segment.reply_to]
        if segment.flags & RST:
            self._forget(segment.reply_to)
            return Judgement(Verdict.ACCEPT)
        if flow.hello_end is None or not segment.flags & ACK:
            return Judgement(Verdict.ACCEPT)
        if flow.watch is not None:
            offset = (segment.seq - flow.server_isn - 1) % 2**32
            if segment.payload and flow.server_fed < offset < 2**31:
                # A gap: the watch reads the server's stream in order, and the client gets
                # no byte it has not read (the server sends the missing ones again).
                return Judgement(Verdict.HOLD, "the server's bytes out of order")
            if offset <= flow.server_fed < offset + len(segment.payload):
                fresh = segment.payload[flow.server_fed - offset :]
                flow.watch.server(fresh)
                flow.server_fed += len(fresh)
            watched = self._watched(segment, flow, segment.source)
            if watched is not None:
                return watched
            if flow.watch is not None:
                if segment.payload and flow.watch.verdict().hold_server:
                    # Its answer is not judged yet: a refusal's alert must reach the client at
                    # the start of a record (the server sends these bytes again).
                    return Judgement(Verdict.HOLD, "the server's answer is not judged yet")
                flow.server_passed = max(flow.server_passed, offset + len(segment.payload))
                # Until the server's first message is read: a HelloRetryRequest asks the client
                # for a second hello, which a server may take another name from (a25 H1).
                return Judgement(Verdict.ACCEPT, "the server's first message is not read yet")
        acknowledged = (segment.ack - flow.isn - 1) % 2**32
        if acknowledged >= 2**31 or acknowledged < flow.hello_end:
            return Judgement(Verdict.ACCEPT, "the server has not all of the hello yet")
        self._forget(segment.reply_to)
        now = self.clock()
        self._verified[segment.reply_to] = now
        while self._verified and (
            len(self._verified) > MAX_FLOWS
            or now - next(iter(self._verified.values())) > VERIFIED_S
        ):
            self._verified.popitem(last=False)
        return Judgement(Verdict.VERIFIED, "the server acknowledged the hello that was read")

    def _verified_lately(self, key: tuple[str, int, str, int]) -> bool:
        when = self._verified.get(key)
        return when is not None and self.clock() - when <= VERIFIED_S

    def _add(self, segment: Segment, flow: _Flow) -> Judgement:
        first = segment.seq
        offset = (first - flow.isn - 1) % 2**32
        payload = segment.payload
        if offset >= 2**31:
            return self._refuse(segment, "bytes from before the connection began", None)
        if offset > len(flow.data) and flow.hello_end is None:
            return Judgement(Verdict.HOLD, "out of order")  # a gap: wait for the resend
        known = flow.data[offset : offset + len(payload)]
        if payload[: len(known)] != known:
            # A resend that differs from what was judged: which copy the server keeps is its
            # own business (a17: one it drops, read first, stood in for the real one).
            # The address is the proxy's from now on: the client's retry meets the proxy, not
            # this check again (a18 N2).
            return self._refuse(segment, "resent bytes differ", segment.destination)
        fresh = payload[len(known) :]
        if flow.hello_end is not None:
            if flow.watch is None:
                return Judgement(Verdict.ACCEPT)  # past the hello: the server's to acknowledge
            if offset > len(flow.data):
                return Judgement(Verdict.HOLD, "out of order")
            if fresh and flow.watch.verdict().hold_client:
                # Whether the server resumes a session is not read yet; a client that sends
                # now is not an ordinary one, which waits for the server's whole answer.
                return Judgement(Verdict.HOLD, "the server's answer is not read yet")
            if self._buffered + len(fresh) > MAX_BUFFERED:
                return self._refuse(segment, "too many unfinished ClientHellos at once", None)
            flow.data += fresh
            self._buffered += len(fresh)
            flow.watch.client(fresh)
            return self._watched(segment, flow, segment.destination) or Judgement(Verdict.ACCEPT)
        if len(flow.data) + len(fresh) > MAX_FIRST_FLIGHT:
            return self._refuse(segment, "no ClientHello in the first 20 KiB", segment.destination)
        if self._buffered + len(fresh) > MAX_BUFFERED:
            return self._refuse(segment, "too many unfinished ClientHellos at once", None)
        flow.data += fresh
        self._buffered += len(fresh)
        try:
            whole = complete_client_hello(flow.data)
        except Malformed:
            return self._refuse(segment, "not TLS", segment.destination)
        if whole is None:
            return Judgement(Verdict.ACCEPT, "ClientHello not yet whole")
        hello, hello_end = whole
        if not hello.sni:
            return self._refuse(segment, "no server name", segment.destination)
        if self.catalogued(hello.sni):
            return self._refuse(segment, "catalogued server name", segment.destination, hello.sni)
        # Only the hello's own bytes count: the server must acknowledge those, no more.
        flow.hello_end = hello_end
        resume = ResumeCheck(hello, segment.destination, self.sessions, segment.source)
        flow.watch = RetryWatch(hello.sni, resume)
        flow.watch.client(bytes(flow.data[hello_end:]))  # bytes that came with the hello
        watched = self._watched(segment, flow, segment.destination)
        if watched is not None and watched.verdict is Verdict.REFUSED:
            return watched
        return Judgement(Verdict.NAMED, "server name not catalogued", hello.sni)

    def _watched(self, segment: Segment, flow: _Flow, server: str) -> Judgement | None:
        """What the watch now says (None: go on): a second hello that names another server is
        refused and its address withdrawn; one that names the same server becomes the hello
        the server must acknowledge; no retry request leaves the hello as it was."""
        if flow.watch is None or flow.hello_end is None:
            return None
        verdict = flow.watch.verdict()
        if verdict.watch is Watch.REFUSE and server == segment.source:
            self._forget(segment.reply_to)  # the server's segment: its client's flow
        if verdict.watch is Watch.REFUSE and verdict.alert and server == segment.source:
            # A refused resumption: the address stays (the client's next connection makes a
            # new session, on the fast path), and this server packet carries the alert.
            refused = self._refuse(segment, verdict.reason, None, flow.watch.first)
            at = (flow.server_isn + 1 + flow.server_passed) % 2**32  # what the client has
            return Judgement(Verdict.REFUSED, refused.reason, refused.server_name, alert=True,
                             alert_at=at)  # fmt: skip
        if verdict.watch is Watch.REFUSE:
            return self._refuse(segment, verdict.reason, server,
                                verdict.second.sni if verdict.second else None)  # fmt: skip
        if verdict.watch is Watch.WAIT:
            return None
        if verdict.second is not None:
            flow.hello_end += verdict.second_end
        flow.watch = None
        self._buffered -= len(flow.data) - flow.hello_end
        del flow.data[flow.hello_end :]
        return None

    def _refuse(
        self, segment: Segment, reason: str, withdraw: str | None, sni: str | None = None
    ) -> Judgement:
        self._forget(segment.flow)
        if withdraw is not None and ":" in withdraw:
            # The proxy listens on IPv4 only: a withdrawn IPv6 address would be unreachable for
            # every device for an hour, by one pupil's doing (adversarial pass a27). The
            # refusal stands; the address stays on the fast path, where each connection is read.
            withdraw = None
        if withdraw is not None:
            now = self.clock()
            for key in (segment.flow, segment.reply_to):  # a server's segment may be refused
                self._withdrawing[key] = now + WITHDRAWING_S
            while self._withdrawing and (
                len(self._withdrawing) > MAX_FLOWS or next(iter(self._withdrawing.values())) < now
            ):
                self._withdrawing.popitem(last=False)
        return Judgement(Verdict.REFUSED, reason, sni, withdraw)
