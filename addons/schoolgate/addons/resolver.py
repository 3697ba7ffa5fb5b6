"""`schoolgate resolve`: the gateway's resolver for pupils' devices (mitmproxy's DNS mode).

A separate process and service from the proxy: it parses only DNS, needs no capability (it
listens on a high port; the gateway's ruleset redirects pupils' port 53 to it) and shares only
the address book with the proxy. mitmproxy's own addons resolve the queries (`dns_name_servers`)
and strip Encrypted ClientHello keys from HTTPS records (`strip_ech`); `ResolverPolicy` answers
encrypted-DNS names with NXDOMAIN and records the answers in the address book.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from mitmproxy import dns, options
from mitmproxy.net.dns import response_codes, types
from mitmproxy.tools.dump import DumpMaster

from schoolgate.config import Config
from schoolgate.gateway.addressbook import ADDRESS_BOOK, AddressBook, AddressBookError
from schoolgate.gateway.dnspolicy import NamePolicy

log = logging.getLogger("schoolgate.resolver")


class ResolverPolicy:
    """NXDOMAIN for encrypted-DNS and canary names; every A/AAAA answer into the address book."""

    def __init__(self, names: NamePolicy, book: AddressBook) -> None:
        self.names = names
        self.book = book
        self.refused = 0

    def dns_request(self, flow: dns.DNSFlow) -> None:
        question = flow.request.question
        if question is not None and self.names.blocks(question.name):
            flow.response = flow.request.fail(response_codes.NXDOMAIN)
            self.refused += 1

    def dns_response(self, flow: dns.DNSFlow) -> None:
        if flow.response is None:
            return
        found: dict[str, tuple[list[str], int]] = {}
        for answer in flow.response.answers:
            if answer.type not in (types.A, types.AAAA):
                continue
            try:
                address = str(
                    answer.ipv4_address if answer.type == types.A else answer.ipv6_address
                )
            except (ValueError, TypeError):
                continue
            addresses, ttl = found.get(answer.name, ([], answer.ttl))
            addresses.append(address)
            found[answer.name] = (addresses, min(ttl, answer.ttl))
        question = flow.request.question
        for name, (addresses, ttl) in found.items():
            try:
                self.book.record(name, addresses, ttl)
                # A CNAME chain answers for the asked name too: that is the name in the
                # ClientHello, not the CDN name at the end of the chain.
                if question is not None and question.name.lower() != name.lower():
                    self.book.record(question.name, addresses, ttl)
            except AddressBookError:
                log.exception("schoolgate resolver: the address book cannot be written")


class Banner:
    """One clear line once the listener is up."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def running(self) -> None:
        resolver = self.config.resolver
        log.warning(
            "schoolgate resolver listening on %s:%d (DNS, UDP and TCP); name servers: %s",
            resolver.listen_host,
            resolver.listen_port,
            ", ".join(resolver.upstream) or "the gateway's own",
        )


def resolver_options(config: Config) -> dict[str, Any]:
    resolver = config.resolver
    settings: dict[str, Any] = {
        "mode": [f"dns@{resolver.listen_port}"],
        "listen_host": resolver.listen_host,
        "strip_ech": resolver.strip_ech,
        # HTTPS records advertising HTTP/3 lose it: UDP 443 is rejected at the gateway anyway.
        "http3": False,
        "confdir": str(config.data_dir / "resolver"),
    }
    if resolver.upstream:
        settings["dns_name_servers"] = list(resolver.upstream)
    return settings


async def serve_resolver(config: Config) -> int:
    """Run the resolver until SIGINT/SIGTERM; returns the exit status."""
    resolver = config.resolver
    book = AddressBook(config.data_dir / ADDRESS_BOOK, min_ttl_s=resolver.min_ttl_s)
    names = NamePolicy(resolver.block_names, block_doh=resolver.block_doh)
    opts = options.Options()
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    # The policy goes before mitmproxy's own resolver: a refused name is never asked upstream.
    builtin = master.addons.get("dnsresolver")  # type: ignore[no-untyped-call]
    master.addons.remove(builtin)  # type: ignore[no-untyped-call]
    master.addons.add(  # type: ignore[no-untyped-call]
        Banner(config), ResolverPolicy(names, book), builtin
    )
    opts.update(**resolver_options(config))  # type: ignore[no-untyped-call]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    try:
        await master.run()
    except SystemExit as exc:  # mitmproxy's start-up checks (port in use) exit
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        book.close()
    log.warning("schoolgate resolver stopped")
    return 0
