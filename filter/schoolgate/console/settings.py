"""The `console:` configuration section: where the DSL's console listens, its certificate, its
records' retention and its session and sign-in rules.

The console serves HTTPS only. The interception CA is name-constrained to the sharing domains
and cannot vouch for it: the school gives the console its own certificate (`tls.cert_file`,
`tls.key_file`), or the appliance makes a separate self-signed one under the data directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from schoolgate.config_reader import Node, listen_host, path_under

DEFAULT_PORT = 8443


@dataclass(frozen=True)
class ConsoleConfig:
    database: Path  # accounts, incident workflow, access log (never media)
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    # Alerts carry a link to the incident when set, e.g. https://gateway.school.example:8443
    base_url: str | None = None
    cert_file: Path | None = None  # the school's certificate; None: the appliance makes one
    key_file: Path | None = None
    made_cert_dir: Path = Path()  # where the appliance keeps the certificate it makes
    # Incidents, their actions and the access log are deleted this long after their last
    # activity. Two years by default: export to the school's safeguarding record system first.
    retention_days: int = 730
    idle_timeout_s: float = 900.0  # signed out after 15 idle minutes
    session_max_s: float = 43_200.0  # and after 12 hours whatever happens
    max_failed_logins: int = 5  # then the account is locked ...
    lockout_s: float = 900.0  # ... for this long (an admin may unlock it sooner)


def parse_console(node: Node, data_dir: Path) -> ConsoleConfig:
    node.mapping(
        allowed={
            "database",
            "listen_host",
            "listen_port",
            "base_url",
            "tls",
            "retention_days",
            "idle_timeout_s",
            "session_max_s",
            "max_failed_logins",
            "lockout_s",
        }
    )
    defaults = ConsoleConfig(database=Path())
    tls = node.child("tls")
    tls.mapping(allowed={"cert_file", "key_file"})
    cert_file = tls.child("cert_file").path_value()
    key_file = tls.child("key_file").path_value()
    if (cert_file is None) != (key_file is None):
        missing = "key_file" if key_file is None else "cert_file"
        tls.child(missing).fail(
            "is needed with the other one: the school's certificate and its key, or neither "
            "(the appliance then makes its own)"
        )
    base_url = node.child("base_url").optional_text()
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            node.child("base_url").fail(
                f"{base_url!r} is not an https:// address such as https://gateway.school.example"
                ":8443 (the console serves HTTPS only)"
            )
        base_url = base_url.rstrip("/")
    return ConsoleConfig(
        database=path_under(data_dir, node.child("database"), "console.sqlite"),
        listen_host=listen_host(node.child("listen_host"), defaults.listen_host),
        listen_port=node.child("listen_port").integer(defaults.listen_port, 1, 65535),
        base_url=base_url,
        cert_file=cert_file,
        key_file=key_file,
        made_cert_dir=data_dir / "console-tls",
        retention_days=node.child("retention_days").integer(defaults.retention_days, 1),
        idle_timeout_s=node.child("idle_timeout_s").number(defaults.idle_timeout_s, 60),
        session_max_s=node.child("session_max_s").number(defaults.session_max_s, 300),
        max_failed_logins=node.child("max_failed_logins").integer(
            defaults.max_failed_logins, 1, 100
        ),
        lockout_s=node.child("lockout_s").number(defaults.lockout_s, 1),
    )
