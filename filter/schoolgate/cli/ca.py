"""`schoolgate ca init | show | export`: the name-constrained interception CA (data_dir/ca)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schoolgate.cli.common import EXIT_OK, Subcommands, UsageError, config_from
from schoolgate.config import Config
from schoolgate.endpoints.loader import load_catalog
from schoolgate.gateway.ca import (
    EXPORT_FORMATS,
    KEY_AND_CERT,
    CertificateAuthority,
    chown_tree,
    ensure_ca,
    export_ca,
    load_ca,
)


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    ca = sub.add_parser("ca", help="the name-constrained interception CA (data_dir/ca)")
    csub = ca.add_subparsers(metavar="ACTION")
    init = csub.add_parser(
        "init", parents=[common], help="make the CA if there is none (keeps a usable one)"
    )
    init.add_argument(
        "--force", action="store_true", help="replace any existing CA (devices need the new one)"
    )
    init.add_argument("--days", type=int, help="validity in days (default: ca.validity_days)")
    init.add_argument(
        "--owner", metavar="USER[:GROUP]", help="give the CA files to the service user (as root)"
    )
    init.set_defaults(handler=_ca_init)
    show = csub.add_parser(
        "show", parents=[common], help="subject, fingerprints, validity, name constraints"
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_ca_show)
    export = csub.add_parser(
        "export", parents=[common], help="the CA certificate for MDM or manual installation"
    )
    export.add_argument("--format", choices=EXPORT_FORMATS, default="pem", help="default: pem")
    export.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    export.set_defaults(handler=_ca_export)


def _owner(text: str) -> tuple[int, int]:
    import grp
    import pwd

    user, _, group = text.partition(":")
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError:
        raise UsageError(f"--owner {text}: no such user or group") from None
    return entry.pw_uid, gid


def _ca_init(args: argparse.Namespace) -> int:
    config = config_from(args)
    owner = _owner(args.owner) if args.owner else None
    domains = load_catalog(list(config.proxy.endpoints_files)).inspected_domains()
    confdir = config.data_dir / "ca"
    ca, created = ensure_ca(
        confdir,
        domains,
        force=args.force,
        organization=config.proxy.school_name,
        validity_days=args.days or config.ca.validity_days,
    )
    if owner is not None:
        chown_tree(confdir, *owner)
    verb = "created" if created else "kept the existing"
    print(f"{verb} CA {confdir / KEY_AND_CERT}")
    print(f"  SHA-256 {ca.fingerprint()}")
    until = f"{ca.cert.not_valid_after_utc:%Y-%m-%d}"
    print(f"  valid until {until}; permits {len(ca.policy.permitted)} domains and their subdomains")
    for domain in ca.policy.uncovered(domains):
        print(
            f"schoolgate: warning: catalogued domain {domain} is not covered by this CA; "
            "run `schoolgate ca init --force` and roll the new CA out",
            file=sys.stderr,
        )
    if created:
        print("roll it out to devices: schoolgate ca export --format mobileconfig --out FILE")
    return EXIT_OK


def _existing_ca(config: Config) -> CertificateAuthority:
    ca = load_ca(config.data_dir / "ca")
    if ca is None:
        raise UsageError(f"no CA in {config.data_dir / 'ca'} yet: run `schoolgate ca init`")
    return ca


def _ca_show(args: argparse.Namespace) -> int:
    config = config_from(args)
    ca = _existing_ca(config)
    domains = load_catalog(list(config.proxy.endpoints_files)).inspected_domains()
    info = {
        "path": str(config.data_dir / "ca" / KEY_AND_CERT),
        **ca.describe(),
        "uncovered_catalog_domains": ca.policy.uncovered(domains),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        print(f"{key:<26} {value}")
    return EXIT_OK


def _ca_export(args: argparse.Namespace) -> int:
    config = config_from(args)
    data = export_ca(_existing_ca(config), args.format, config.proxy.school_name)
    if args.out:
        Path(args.out).write_bytes(data)
        print(f"{args.format} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK
