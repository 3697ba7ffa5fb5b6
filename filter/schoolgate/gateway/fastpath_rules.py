"""The fast path's part of the gateway ruleset (nft.GatewayRuleset renders it in): its sets,
the prerouting rule that marks a connection pending, the forward rules that turn the check's
verdicts into the connection's state, and the chain that spares bare SYNs and ACKs the queue.
The marks and the queue number are shared with the check (gateway.firstflight_queue)."""

from __future__ import annotations

from schoolgate.config import Config

# Conntrack marks of the fast path. Prerouting marks a connection pending on its first packet;
# what its client sends is queued (NFQUEUE, FAST_QUEUE) to `schoolgate nft fastpath` until it
# has read a whole ClientHello (gateway.firstflight); a hello for a passable name makes it named,
# and both ways are queued until the server has acknowledged that hello. The verdicts come back
# as packet marks, which the forward chain turns into the connection's state.
FAST_MARK = 0x53470001  # pending
FAST_VERIFIED = 0x53470002
FAST_REFUSED = 0x53470003
FAST_NAMED = 0x53470004
FAST_MARKS = f"{{ {FAST_MARK:#x}, {FAST_VERIFIED:#x}, {FAST_REFUSED:#x}, {FAST_NAMED:#x} }}"
CHECKED_PACKET = 0x53470011  # read, and the connection's state unchanged
VERIFIED_PACKET = 0x53470012
REFUSED_PACKET = 0x53470013
NAMED_PACKET = 0x53470014
TOLD_PACKET = 0x53470015  # refused, and this server packet carries the client a TLS alert
FAST_QUEUE = 5347
FAST_SET_SIZE = 65_536  # addresses per family; past it an answer is not fast-pathed (safe)


def set_elements(items: list[str]) -> str:
    return f"\n\t\telements = {{ {', '.join(items)} }}" if items else ""


def fast_path_off() -> dict[str, str]:
    """The ruleset's fast-path parts with the fast path off."""
    # Connections the fast path forwarded before it was switched off are cut, not left
    # running past the proxy (adversarial pass a16: uploads on kept-open connections).
    ended = (f"\n\t\tct mark {FAST_MARKS} counter reject with tcp reset "
             'comment "fast path off"')  # fmt: skip
    return {"fast_sets": "", "fast_rules": "", "fast_count": ended, "fast_chain": ""}


def fast_path_rules(config: Config) -> dict[str, str]:
    """The fast path's sets and rules. The resolver fills `fast_*` with addresses that
    non-catalogued names resolved to and `catalogued_*` with those of catalogued names;
    `providers_*` holds the catalog's shared-server ranges. A connection takes the fast
    path only while the resolver keeps `fast_ready` alive (a heartbeat with a timeout), to
    an address in `fast_*` and in neither of the others: anything unknown meets the proxy."""
    from schoolgate.endpoints.loader import load_catalog

    providers = load_catalog(list(config.proxy.endpoints_files)).providers
    sets = ""
    for family, kind, ranges in (("v4", "ipv4_addr", providers.v4),
                                 ("v6", "ipv6_addr", providers.v6)):  # fmt: skip
        for name in ("fast", "catalogued", "withdrawn"):
            sets += (f"\tset {name}_{family} {{\n\t\ttype {kind}\n\t\tflags timeout\n"
                     f"\t\tsize {FAST_SET_SIZE}\n\t}}\n\n")  # fmt: skip
        elements = set_elements([str(n) for n in ranges])
        sets += (f"\tset providers_{family} {{\n\t\ttype {kind}\n\t\tflags interval"
                 f"{elements}\n\t}}\n\n")  # fmt: skip
    sets += "\tset fast_ready {\n\t\ttype inet_proto\n\t\tflags timeout\n\t}\n\n"
    # HTTPS only (HTTP names its host per request), and from its SYN: conntrack also takes
    # up a connection mid-stream, whose start nobody saw (a20 C1); the proxy resets that.
    rules = "".join(
        f"\n\t\ttcp dport 443 tcp flags & (syn | ack) == syn meta l4proto @fast_ready "
        f"{key} daddr @fast_{family} "
        f"{key} daddr != @catalogued_{family} {key} daddr != @withdrawn_{family} "
        f"{key} daddr != @providers_{family} counter "
        f'ct mark set {FAST_MARK:#x} return comment "fast path{suffix}"'
        for key, family, suffix in (("ip", "v4", ""), ("ip6", "v6", "6"))
    )
    count = "".join(
        f"\n\t\t{rule}"
        for rule in (
            # The service's verdict on a whole ClientHello, carried back as a packet mark.
            f"meta mark {REFUSED_PACKET:#x} meta mark set 0 ct mark set {FAST_REFUSED:#x} "
            'counter reject with tcp reset comment "fast path refused"',
            f"meta mark {TOLD_PACKET:#x} meta mark set 0 ct mark set {FAST_REFUSED:#x} "
            'counter accept comment "fast path refused, the client told"',
            f'ct mark {FAST_REFUSED:#x} counter reject with tcp reset comment "refused"',
            # Once the heartbeat lapses (resolver or service gone) or the table is reloaded,
            # the connections it let through end too (a16: they outlived it by tens of s).
            f"ct mark {FAST_MARKS} meta l4proto != @fast_ready counter reject with tcp "
            'reset comment "fast path ended"',
            f"ct mark {{ {FAST_MARK:#x}, {FAST_NAMED:#x}, {FAST_VERIFIED:#x} }} counter "
            'comment "fast path bytes"',
            f"meta mark {NAMED_PACKET:#x} meta mark set 0 ct mark set {FAST_NAMED:#x} "
            'counter accept comment "fast path named"',
            f"meta mark {VERIFIED_PACKET:#x} meta mark set 0 ct mark set {FAST_VERIFIED:#x} "
            'counter accept comment "fast path verified"',
            # The queue rule (in iptables' mangle table, which runs before this chain: see
            # gateway.firstflight) marks every packet it passed; one that was not read, the
            # rule or the service missing, goes no further.
            f"ct mark {FAST_MARK:#x} ct direction original meta mark != {CHECKED_PACKET:#x} "
            'counter drop comment "fast path unread"',
            f"ct mark {FAST_NAMED:#x} meta mark != {CHECKED_PACKET:#x} counter drop comment "
            '"fast path unread"',
            f"meta mark {CHECKED_PACKET:#x} meta mark set 0 counter accept comment "
            '"fast path pending"',
            # An address found to be the proxy's ends the connections already verified to
            # it (a browser may reuse one for another name its certificate covers).
            f"ct mark {FAST_VERIFIED:#x} ct original ip daddr @catalogued_v4 counter reject "
            'with tcp reset comment "fast path withdrawn"',
            f"ct mark {FAST_VERIFIED:#x} ct original ip6 daddr @catalogued_v6 counter reject "
            'with tcp reset comment "fast path withdrawn6"',
        )
    )
    # A bare SYN or ACK (the header lengths leave no room for data: a pupil cannot hide
    # bytes in one) needs no reading: marked read before the queue rules (priority mangle)
    # see it, which spares a connection trips through the queue. The lengths are those of
    # common stacks (SYNs: Windows 32, Linux 40, Apple 44 bytes of header; ACKs: 20, or 32
    # with timestamps); any other is read. The stream's start needs no SYN: the server's
    # acknowledgement of the hello proves it (gateway.firstflight). A named connection's
    # server sends such an ACK for the hello before its answer: that answer, which the check
    # reads anyway, acknowledges the hello as well, so the bare one is spared its trip too
    # (each trip costs a small connection about a tenth of a millisecond).
    bare = "".join(
        f"\n\t\t{segment} meta mark set {CHECKED_PACKET:#x}"
        for flags, sizes in (("syn", (8, 10, 11)), ("ack", (5, 8)))
        for segment in _bare_segments(flags, sizes)
    )
    server_acks = "".join(
        f"\n\t\tct mark {FAST_NAMED:#x} ct direction reply {segment} meta mark set "
        f'{CHECKED_PACKET:#x} counter comment "fast path server\'s bare ACK"'
        for segment in _bare_segments("ack", (5, 8))
    )
    # A SYN on a connection already named or verified is a new connection that conntrack
    # took for the old one (adversarial pass a18 Y1c: after a reset and a bare ACK, a new
    # SYN on the same port kept the verified mark): pending again, and read from its SYN.
    reopened = (
        f"ct mark {{ {FAST_NAMED:#x}, {FAST_VERIFIED:#x} }} ct direction original tcp flags & "
        f"(syn | ack | fin | rst) == syn ct mark set {FAST_MARK:#x} counter return comment "
        '"fast path reopened"'
    )
    # Any other SYN there (SYN+FIN, SYN+RST, ...) has no place in a connection under way;
    # conntrack's flag check drops it today, and this does not rest on that (a23 H6).
    odd_syn = (
        f"ct mark {{ {FAST_NAMED:#x}, {FAST_VERIFIED:#x} }} ct direction original tcp flags & "
        'syn == syn counter drop comment "fast path odd SYN"'
    )
    # Options that change which bytes a server reads are cleared from every SYN of a connection
    # on the fast path, before `reopened` returns: Fast Open (a23: a server gave the device a
    # cookie, the device put its next hello in a SYN, and the check refused it), multipath TCP
    # (a24: data-level sequence numbers let a server read the catalogued name's hello over the
    # harmless one the check had read and seen acknowledged, 4 of 4 banked uploads delivered),
    # and the experimental kind both use. nft clears the first copy of an option per rule: a
    # SYN that still carries one after two is dropped.
    syn = (f"ct mark {{ {FAST_MARK:#x}, {FAST_NAMED:#x}, {FAST_VERIFIED:#x} }} ct direction "
           "original tcp flags & (syn | ack) == syn")  # fmt: skip
    cleared = "".join(
        f"\n\t\t{syn} reset tcp option {kind}\n\t\t{syn} reset tcp option {kind}\n\t\t{syn} "
        f'tcp option {kind} exists counter drop comment "fast path SYN option"'
        for kind in ("fastopen", "mptcp", "254")
    )
    chain = (
        "\n\tchain fast_bare {\n\t\ttype filter hook forward priority mangle - 10; policy "
        f"accept;{cleared}\n\t\t{reopened}\n\t\t{odd_syn}\n\t\tct mark "
        f"{{ {FAST_MARK:#x}, {FAST_NAMED:#x} }} ct direction original jump "
        f"fast_bare_segments{server_acks}\n\t}}\n\n\tchain fast_bare_segments {{{bare}\n\t}}\n"
    )
    return {"fast_sets": sets, "fast_rules": rules, "fast_count": count, "fast_chain": chain}


def _bare_segments(flags: str, sizes: tuple[int, ...]) -> list[str]:
    """Matches for a segment with only `flags` and a TCP header of one of `sizes` words that
    fills the packet (IPv4 without options, or IPv6 without extension headers)."""
    return [
        f"tcp flags == {flags} {length} @th,96,4 {words}"
        for words in sizes
        for length in (
            f"ip hdrlength 5 ip length {20 + 4 * words}",
            f"ip6 nexthdr tcp ip6 length {4 * words}",
        )
    ]
