"""`schoolgate run`: mitmproxy (regular or transparent mode) with the schoolgate addons."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from mitmproxy import options
from mitmproxy.tools.dump import DumpMaster

from schoolgate.addons.entry import make_addons
from schoolgate.addons.reload import ConfigReloader
from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.config import Config
from schoolgate.endpoints.catalog import Catalog
from schoolgate.endpoints.loader import load_catalog
from schoolgate.gateway.ca import prepare_for_proxy
from schoolgate.gateway.sdnotify import SystemdNotifier
from schoolgate.monitoring import metrics
from schoolgate.monitoring.server import start_metrics_server

log = logging.getLogger("schoolgate.proxy")

CA_FILE = "mitmproxy-ca-cert.pem"


class StartupBanner:
    """One clear line once the listeners are up: where, which mode, which CA to install."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def running(self) -> None:
        proxy = self.config.proxy
        log.warning(
            "schoolgate listening on %s:%d (%s mode); CA certificate for devices: %s",
            proxy.listen_host,
            proxy.listen_port,
            proxy.mode,
            self.config.data_dir / "ca" / CA_FILE,
        )


class ServiceNotifier:
    """Tells systemd (Type=notify) when the listeners are up, and pings its watchdog from the
    event loop, so a wedged loop gets the service restarted."""

    def __init__(self, notifier: SystemdNotifier) -> None:
        self.notifier = notifier
        self._watchdog: asyncio.Task[None] | None = None

    def running(self) -> None:
        self.notifier.ready("serving")
        if self.notifier.watchdog_s is not None:
            self._watchdog = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        assert self.notifier.watchdog_s is not None
        while True:  # runs for the life of the proxy; cancelled in done()
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_s / 2)

    def done(self) -> None:
        self.notifier.stopping()
        if self._watchdog is not None:
            self._watchdog.cancel()


def mitmproxy_options(config: Config) -> dict[str, Any]:
    """The mitmproxy options schoolgate's configuration implies."""
    proxy = config.proxy
    settings: dict[str, Any] = {
        "mode": ["transparent" if proxy.mode == "transparent" else "regular"],
        "listen_host": proxy.listen_host,
        "listen_port": proxy.listen_port,
        "confdir": str(config.data_dir / "ca"),
        # Schoolgate decides what is buffered (held uploads) and streams the rest itself.
        "stream_large_bodies": None,
        "body_size_limit": None,
        # HTTP/3 would bypass TCP interception; the gateway rejects UDP 443 so clients fall back.
        "http3": False,
        "schoolgate_pinned_after": proxy.pinned_after_failures,
        "schoolgate_pinned_ttl": proxy.pinned_ttl_s,
    }
    if proxy.upstream_ca_file is not None:
        settings["ssl_verify_upstream_trusted_ca"] = str(proxy.upstream_ca_file)
    return settings


def prepare_ca(config: Config, catalog: Catalog) -> None:
    """Make the name-constrained CA before mitmproxy would generate an unconstrained one.

    Raises CaError for an existing CA without name constraints (unless ca.allow_unconstrained).
    """
    ca, created, warnings = prepare_for_proxy(
        config.data_dir / "ca",
        catalog.inspected_domains(),
        allow_unconstrained=config.ca.allow_unconstrained,
        organization=config.proxy.school_name,
        validity_days=config.ca.validity_days,
    )
    if created:
        log.warning(
            "created a name-constrained CA (SHA-256 %s); roll it out to devices with "
            "`schoolgate ca export`",
            ca.fingerprint(),
        )
    for warning in warnings:
        log.warning("schoolgate: WARNING: %s", warning)


async def serve(config: Config, extra: dict[str, Any] | None = None) -> int:
    """Run until SIGINT/SIGTERM, reloading the configuration on SIGHUP; returns the exit status."""
    confdir = config.data_dir / "ca"
    confdir.mkdir(parents=True, exist_ok=True)
    os.chmod(confdir, 0o700)  # the CA key lives here
    # Before anything else loads (banks, models, metrics): an unsafe CA stops the start cleanly.
    prepare_ca(config, load_catalog(list(config.proxy.endpoints_files)))
    runtime = Runtime.from_config(config)
    ref = RuntimeRef(runtime)
    metrics.config_loaded(True, reload=False)
    exporter = start_metrics_server(config.metrics)
    notifier = SystemdNotifier()
    opts = options.Options()
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    master.addons.add(  # type: ignore[no-untyped-call]
        StartupBanner(config), ServiceNotifier(notifier), *make_addons(ref)
    )
    opts.update(**mitmproxy_options(config), **(extra or {}))  # type: ignore[no-untyped-call]
    reloader = ConfigReloader(ref, opts, mitmproxy_options, notifier)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    try:
        await master.run()
    except SystemExit as exc:  # mitmproxy's error check exits on start-up errors (port in use)
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await reloader.close()
        if exporter is not None:
            exporter.stop()
        if ref.current is not None:
            ref.current.close()
    log.warning("schoolgate stopped")
    return 0


def run(config: Config, extra: dict[str, Any] | None = None) -> int:
    """Start the proxy from a loaded configuration; `extra` sets further mitmproxy options."""
    return asyncio.run(serve(config, extra))


def resolve(config: Config) -> int:
    """Start the gateway's resolver (`schoolgate resolve`)."""
    from schoolgate.addons.resolver import serve_resolver

    return asyncio.run(serve_resolver(config))
