"""A tiny authoritative DNS server and a DNS client for namespace tests (mitmproxy's DNS codec).

The server answers A and HTTPS queries from a fixed table over UDP; anything else, or a name it
does not know, gets NXDOMAIN. It stands in for the school's upstream name server.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import threading
from dataclasses import dataclass, field

from mitmproxy import dns
from mitmproxy.net.dns import classes, op_codes, response_codes, types
from mitmproxy.net.dns.https_records import HTTPSRecord, SVCParamKeys

from tests.support.netns import call_in_netns

ECH_CONFIG = b"\x00\x45\xfe\x0d\x00\x41" + bytes(range(65))  # opaque test bytes, not a real key


def https_record(name: str) -> dns.ResourceRecord:
    """An HTTPS record advertising h3 and h2 and carrying ECH keys, as Cloudflare's do."""
    params = {
        SVCParamKeys.ALPN.value: b"\x02h3\x02h2",
        SVCParamKeys.ECH.value: ECH_CONFIG,
    }
    return dns.ResourceRecord.HTTPS(name, HTTPSRecord(1, "", params), ttl=300)


@dataclass
class StubDns:
    """UDP DNS server on (host, port) answering from `table` (name -> IPv4 addresses) and
    `aliases` (name -> the name it is a CNAME of), with the whole chain, as a recursive
    resolver answers."""

    host: str
    table: dict[str, list[str]]
    port: int = 53
    aliases: dict[str, str] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def start(self, ns: str | None = None) -> None:
        """Listen (inside network namespace `ns` when given) and answer on a thread."""

        def bind() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.host, self.port))
            sock.settimeout(0.2)
            return sock

        self._sock = bind() if ns is None else call_in_netns(ns, bind)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def _serve(self) -> None:
        while (sock := self._sock) is not None:
            try:
                packet, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self.answer(dns.DNSMessage.unpack(packet))
            except (ValueError, struct.error):
                continue
            sock.sendto(reply.packed, peer)

    def answer(self, query: dns.DNSMessage) -> dns.DNSMessage:
        question = query.question
        if question is None:
            return query.fail(response_codes.FORMERR)
        name = question.name.rstrip(".").lower()
        self.queries.append(f"{name}/{question.type}")
        chain: list[dns.ResourceRecord] = []
        while name in self.aliases and len(chain) < 8:
            chain.append(dns.ResourceRecord.CNAME(name, self.aliases[name], ttl=300))
            name = self.aliases[name]
        addresses = self.table.get(name)
        if addresses is None:
            return query.fail(response_codes.NXDOMAIN)
        if question.type == types.A:
            return query.succeed(
                chain + [dns.ResourceRecord.A(name, ipaddress.IPv4Address(a), ttl=300)
                         for a in addresses]
            )  # fmt: skip
        if question.type == types.HTTPS:
            return query.succeed([https_record(question.name)])
        return query.succeed([])


def query_message(name: str, qtype: int = types.A) -> bytes:
    """A recursive query for `name`, packed."""
    return dns.DNSMessage(
        id=random.randrange(1 << 16),
        query=True,
        op_code=op_codes.QUERY,
        authoritative_answer=False,
        truncation=False,
        recursion_desired=True,
        recursion_available=False,
        reserved=0,
        response_code=response_codes.NOERROR,
        questions=[dns.Question(name, qtype, classes.IN)],
        answers=[],
        authorities=[],
        additionals=[],
    ).packed


def query(server: tuple[str, int], name: str, qtype: int = types.A) -> dns.DNSMessage:
    """One UDP query; the reply (raises TimeoutError after 5 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query_message(name, qtype), server)
        reply, _ = sock.recvfrom(65535)
    return dns.DNSMessage.unpack(reply)
