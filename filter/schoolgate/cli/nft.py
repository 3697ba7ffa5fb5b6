"""`schoolgate nft render | apply | remove`: the gateway's nftables table (inet schoolgate)."""

from __future__ import annotations

import argparse

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
    remove_table = nsub.add_parser("remove", help="delete the table (nothing to do if absent)")
    remove_table.set_defaults(handler=_nft_remove)


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


def _nft_remove(args: argparse.Namespace) -> int:
    removed = nft.remove()
    print(f"table {nft.FAMILY} {nft.TABLE} {'deleted' if removed else 'was not loaded'}")
    return EXIT_OK
