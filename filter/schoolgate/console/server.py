"""Serving the console: gunicorn (one process, a few threads: light enough for a Pi) over HTTPS.

Every start applies the retention period once, then once a day, in a background thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from schoolgate.config import Config
from schoolgate.console.app import Console, create_app
from schoolgate.console.tls import certificate, fingerprint

log = logging.getLogger(__name__)
RETENTION_EVERY_S = 86_400.0


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def serve(config: Config, host: str, port: int) -> None:
    cert, key = certificate(config.console, host)
    app = create_app(config)
    console: Console = app.extensions["schoolgate_console"]
    stop = threading.Event()

    def retention() -> None:
        while not stop.is_set():
            try:
                removed = console.apply_retention()
                if removed:
                    log.info(
                        "console retention: %d records past %d days removed",
                        removed,
                        config.console.retention_days,
                    )
            except Exception:  # a failed clean-up must not stop the console
                log.exception("console retention failed")
            stop.wait(RETENTION_EVERY_S)

    threading.Thread(target=retention, name="console-retention", daemon=True).start()
    if host in ("0.0.0.0", "::"):
        # Pupils are refused by the gateway's firewall, but the internet side is not IT's
        # firewall's to guess (adversarial pass a12 reached it from the upstream network).
        log.warning(
            "the console listens on every address, the internet side included: set "
            "console.listen_host to the gateway's management address"
        )
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(
        f"schoolgate console on https://{bind}/ (certificate SHA-256 {fingerprint(cert)})",
        flush=True,
    )
    try:
        _Gunicorn(
            app,
            {
                "bind": bind,
                "workers": 1,  # login throttling and sessions live in this process and SQLite
                "worker_class": "gthread",
                "threads": 4,
                "certfile": str(cert),
                "keyfile": str(key),
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "warning",
                "timeout": 60,
                "limit_request_line": 8190,
            },
        ).run()
    finally:
        stop.set()
        console.close()
