"""The kernel side of the first-flight check: the NFQUEUE rule that feeds it, and the queue's
reader in `schoolgate nft fastpath`.

The queue rule lives in iptables' `mangle` table (FORWARD, which runs before the schoolgate
table's forward chain), not in the schoolgate table: nftables' own `queue` statement is a kernel
option that not every kernel has (this project's test machines lack it), while the iptables
NFQUEUE target through nftables' compatibility layer is on every kernel that runs Docker or a
distribution's firewall. Three rules per family, tagged with a comment, so they are found and
removed exactly. The reader answers every packet: checked (state unchanged), named, verified,
refused, or held (dropped: the client sends it again). With no reader the kernel drops what the
rules queue, and a packet that skipped them is dropped by the schoolgate table: the check fails
closed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from typing import Final, Protocol

from schoolgate.gateway import nft as nftables
from schoolgate.gateway.alertpacket import alert_packet
from schoolgate.gateway.fastpath_rules import (
    CHECKED_PACKET,
    FAST_MARK,
    FAST_NAMED,
    FAST_QUEUE,
    NAMED_PACKET,
    REFUSED_PACKET,
    TOLD_PACKET,
    VERIFIED_PACKET,
)
from schoolgate.gateway.firstflight import FirstFlightCheck, Judgement, Verdict

log = logging.getLogger("schoolgate.fastpath")

COMMENT: Final = "schoolgate fast path first flight"
QUEUE_LENGTH: Final = 4096  # packets waiting for a verdict; past it the kernel drops (safe)
# Bytes of each packet the kernel copies to the reader. netfilterqueue reads a message into 4 KiB;
# a packet copied whole past ~3.9 KiB (IPv4 fragments conntrack reassembled) made a message it
# could not parse, and the packet waited in the queue for ever (adversarial pass a20 D1: 4,100 of
# them filled the queue). A longer packet is copied in part, and the check refuses it.
QUEUE_COPY: Final = 3072
_COMMANDS: Final = (("iptables-nft", "iptables"), ("ip6tables-nft", "ip6tables"))


def queue_rules() -> list[list[str]]:
    """The rules (iptables syntax, without the chain): a pending connection's packets from the
    client and the server's SYN-ACK, and a named connection's both ways, not yet read, go to
    the queue. No
    `--queue-bypass`: no reader means dropped."""
    tail = ["-m", "mark", "--mark", "0", "-m", "comment", "--comment", COMMENT,
            "-j", "NFQUEUE", "--queue-num", str(FAST_QUEUE)]  # fmt: skip
    return [
        ["-m", "connmark", "--mark", f"{FAST_MARK:#x}", "-m", "conntrack", "--ctdir", "ORIGINAL",
         *tail],
        # The server's SYN-ACK says where the client's stream starts (gateway.firstflight).
        ["-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK", "-m", "connmark", "--mark",
         f"{FAST_MARK:#x}", "-m", "conntrack", "--ctdir", "REPLY", *tail],
        ["-m", "connmark", "--mark", f"{FAST_NAMED:#x}", *tail],
    ]  # fmt: skip


def _binary(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if found:
            return found
    raise nftables.NftError(
        f"{names[0]} is not installed: the fast path's check reaches the kernel's NFQUEUE "
        "through it (apt-get install iptables)"
    )


def _run(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-w", "5", "-t", "mangle", *args],
        capture_output=True, text=True, timeout=nftables.NFT_TIMEOUT_S, check=False,
    )  # fmt: skip


def ensure_queue_rules() -> None:
    """Insert the rules where missing, first in FORWARD (checked with every heartbeat);
    raises NftError with the tool's own message when it cannot."""
    for names in _COMMANDS:
        binary = _binary(names)
        for rule in queue_rules():
            if _run(binary, "-C", "FORWARD", *rule).returncode == 0:
                continue
            added = _run(binary, "-I", "FORWARD", "1", *rule)
            if added.returncode != 0:
                raise nftables.NftError(
                    f"{binary} could not add the fast path's queue rule: "
                    f"{added.stderr.strip() or added.returncode}"
                )


def remove_queue_rules() -> bool:
    """Delete every copy of the rules; False when there were none (idempotent)."""
    removed = False
    for names in _COMMANDS:
        try:
            binary = _binary(names)
        except nftables.NftError:
            continue
        for rule in queue_rules():
            while _run(binary, "-D", "FORWARD", *rule).returncode == 0:
                removed = True
    return removed


class QueuedPacket(Protocol):
    """What the reader needs of netfilterqueue's Packet."""

    def get_payload(self) -> bytes: ...
    def set_payload(self, payload: bytes) -> None: ...
    def set_mark(self, mark: int) -> None: ...
    def accept(self) -> None: ...
    def drop(self) -> None: ...


_MARKS: Final = {
    Verdict.ACCEPT: CHECKED_PACKET,
    Verdict.NAMED: NAMED_PACKET,
    Verdict.VERIFIED: VERIFIED_PACKET,
    Verdict.REFUSED: REFUSED_PACKET,
}


type Withdraw = Callable[[str, Callable[[], None]], None]


class QueueReader:
    """Answers each queued packet with the check's verdict. `withdraw(address, then)` takes an
    address off the fast path and calls `then` once that is written: a refused connection is
    reset only then, so even a client that retries at once meets the proxy."""

    def __init__(self, check: FirstFlightCheck, withdraw: Withdraw) -> None:
        self.check = check
        self.withdraw = withdraw
        self.counts: dict[str, int] = {v.value: 0 for v in Verdict}

    def __call__(self, packet: QueuedPacket) -> None:
        try:
            judgement = self.check.judge(packet.get_payload())
        except Exception:
            log.exception("schoolgate fastpath: the first-flight check failed on a packet")
            judgement = Judgement(Verdict.REFUSED, "the check failed")
        self.counts[judgement.verdict.value] += 1
        if judgement.verdict is Verdict.HOLD:
            packet.drop()
            return
        if judgement.verdict is Verdict.REFUSED:
            named = f", server name {judgement.server_name}" if judgement.server_name else ""
            log.info("schoolgate fastpath: refused a connection (%s%s)", judgement.reason, named)
            if judgement.withdraw is not None:
                self.withdraw(judgement.withdraw, lambda: _answer(packet, REFUSED_PACKET))
                return
            if judgement.alert:
                told = alert_packet(packet.get_payload(), seq=judgement.alert_at)
                packet.set_payload(told)
                _answer(packet, TOLD_PACKET)
                return
        _answer(packet, _MARKS[judgement.verdict])


def _answer(packet: QueuedPacket, mark: int) -> None:
    """The mark travels with the packet into the schoolgate table's forward chain, which
    turns it into the connection's state (nft.GatewayRuleset._fast_path)."""
    packet.set_mark(mark)
    packet.accept()
