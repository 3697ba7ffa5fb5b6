"""`schoolgate nft render | apply | leases | remove`: the gateway's nftables table (inet
schoolgate)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from schoolgate.cli.common import EXIT_OK, Subcommands, config_from
from schoolgate.gateway import nft


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    nft = sub.add_parser("nft", help="the gateway's nftables ruleset (table inet schoolgate)")
    nsub = nft.add_subparsers(metavar="ACTION")
    render = nsub.add_parser("render", parents=[common], help="print the ruleset for the config")
    render.set_defaults(handler=_nft_render)
    apply = nsub.add_parser("apply", parents=[common], help="render and load it (atomic replace)")
    apply.add_argument("--check", action="store_true", help="only validate it with nft -c")
    apply.set_defaults(handler=_nft_apply)
    leases = nsub.add_parser(
        "leases",
        parents=[common],
        help="load the leased (MAC, address) pairs (gateway.leased_pairs_only)",
    )
    leases.add_argument(
        "--follow", action="store_true", help="keep loading them whenever a lease file changes"
    )
    leases.set_defaults(handler=_nft_leases)
    remove_table = nsub.add_parser("remove", help="delete the table (nothing to do if absent)")
    remove_table.set_defaults(handler=_nft_remove)
    fastpath = nsub.add_parser(
        "fastpath",
        parents=[common],
        help="keep the fast path's sets from the resolver's answers (gateway.fast_path)",
    )
    fastpath.set_defaults(handler=_nft_fastpath)


def _nft_render(args: argparse.Namespace) -> int:
    print(nft.GatewayRuleset(config_from(args)).render(), end="")
    return EXIT_OK


def _nft_apply(args: argparse.Namespace) -> int:
    config = config_from(args)
    nft.load(nft.GatewayRuleset(config).render(), check_only=args.check)
    done = "is valid" if args.check else "loaded"
    interfaces = ", ".join(config.gateway.interfaces)
    print(f"table {nft.FAMILY} {nft.TABLE} {done} (student interfaces: {interfaces})")
    return EXIT_OK


def _nft_leases(args: argparse.Namespace) -> int:
    config = config_from(args)
    if not config.gateway.leased_pairs_only:
        print("gateway.leased_pairs_only is off: every address is let through; nothing to load")
        return EXIT_OK
    ruleset = nft.GatewayRuleset(config)
    seen: tuple[tuple[float, int, int], ...] | None = None
    while True:
        signature = tuple(_signature(path) for path in config.proxy.dhcp_leases)
        if signature != seen:
            nft.load(ruleset.leased_update())
            seen = signature
            if not args.follow:
                print(f"leased pairs loaded into table {nft.FAMILY} {nft.TABLE}")
                return EXIT_OK
        time.sleep(_FOLLOW_INTERVAL_S)


# A device that has just been given a lease waits at most this long for its first packet.
_FOLLOW_INTERVAL_S = 0.5


def _signature(path: Path) -> tuple[float, int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0.0, -1, -1)
    return (stat.st_mtime, stat.st_size, stat.st_ino)


def _nft_remove(args: argparse.Namespace) -> int:
    removed = nft.remove()
    print(f"table {nft.FAMILY} {nft.TABLE} {'deleted' if removed else 'was not loaded'}")
    from schoolgate.gateway.firstflight_queue import remove_queue_rules

    if remove_queue_rules():
        print("the fast path's queue rules (iptables mangle FORWARD) deleted")
    return EXIT_OK


def _nft_fastpath(args: argparse.Namespace) -> int:
    import asyncio
    import grp
    import logging

    from schoolgate.endpoints.loader import load_catalog
    from schoolgate.gateway.fastpath_service import serve, socket_path
    from schoolgate.sniffer.sessionfile import fast_path_sessions, proxy_sessions

    config = config_from(args)
    if not nft.GatewayRuleset(config).fast_path:
        print(f"schoolgate: gateway.fast_path or resolver.enabled is false in {config.source}: "
              "every connection meets the proxy; not starting")  # fmt: skip
        return EXIT_OK
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        group: int | None = grp.getgrnam("schoolgate").gr_gid
    except KeyError:
        group = None  # a development machine: the socket stays the caller's
    catalog = load_catalog(list(config.proxy.endpoints_files))
    sessions, peer = fast_path_sessions(config.data_dir), proxy_sessions(config.data_dir)
    return asyncio.run(serve(catalog, socket_path(config), group, sessions, peer))
