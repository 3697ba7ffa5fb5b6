"""`schoolgate console serve | user add | user list | user passwd | user unlock | user remove`."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from schoolgate.config import load_config
from schoolgate.console.store import ROLES, ConsoleError, ConsoleStore
from schoolgate.errors import SchoolgateError

if TYPE_CHECKING:
    from schoolgate.config import Config

EXIT_OK = 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    console = sub.add_parser("console", help="the DSL's incident console (HTTPS)")
    csub = console.add_subparsers(metavar="ACTION")

    serve = csub.add_parser("serve", parents=[common], help="serve the console")
    serve.add_argument("--listen", metavar="HOST:PORT", help="default: console.listen_host/port")
    serve.set_defaults(handler=_serve)

    user = csub.add_parser("user", help="console accounts").add_subparsers(metavar="ACTION")
    add = user.add_parser("add", parents=[common], help="create an account")
    add.add_argument("username")
    add.add_argument(
        "--role",
        choices=ROLES,
        required=True,
        help="dsl: incidents; it: appliance health; admin: accounts",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (default: ask twice)",
    )
    add.set_defaults(handler=_user_add)
    passwd = user.add_parser("passwd", parents=[common], help="set an account's password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=_user_passwd)
    for name, helptext in (("unlock", "unlock after bad passwords"), ("remove", "delete")):
        action = user.add_parser(name, parents=[common], help=helptext)
        action.add_argument("username")
        action.set_defaults(handler=_user_simple, action=name)
    listing = user.add_parser("list", parents=[common], help="list accounts")
    listing.set_defaults(handler=_user_list)


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New console password: ")
    if getpass.getpass("Again: ") != first:
        raise ConsoleError("the two passwords differ")
    return first


def _user_add(args: argparse.Namespace) -> int:
    with ConsoleStore(_config(args).console.database) as store:
        store.add_account(args.username, args.role, _password(args))
    print(f"console account {args.username!r} ({args.role}) created")
    return EXIT_OK


def _user_passwd(args: argparse.Namespace) -> int:
    with ConsoleStore(_config(args).console.database) as store:
        store.set_password(args.username, _password(args))
    print(f"password of {args.username!r} set; its sessions are signed out")
    return EXIT_OK


def _user_simple(args: argparse.Namespace) -> int:
    with ConsoleStore(_config(args).console.database) as store:
        done = (
            store.unlock(args.username)
            if args.action == "unlock"
            else (store.remove_account(args.username))
        )
    if not done:
        raise ConsoleError(f"no account named {args.username!r}")
    print(f"{args.username!r}: {'unlocked' if args.action == 'unlock' else 'removed'}")
    return EXIT_OK


def _user_list(args: argparse.Namespace) -> int:
    with ConsoleStore(_config(args).console.database) as store:
        for account in store.accounts():
            print(f"{account.username}\t{account.role}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from schoolgate.console.server import serve  # Flask and gunicorn only for this command

    config = _config(args)
    host, port = config.console.listen_host, config.console.listen_port
    if args.listen:
        host, _, port_text = args.listen.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise SchoolgateError(f"--listen {args.listen!r}: expected HOST:PORT") from None
        host = host.strip("[]") or "0.0.0.0"
    serve(config, host, port)
    return EXIT_OK
