"""Loads schoolgate's configuration when mitmdump runs the addons as a script (`-s entry.py`)."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.config import load_config
from schoolgate.errors import SchoolgateError
from schoolgate.monitoring import metrics

log = logging.getLogger("schoolgate.proxy")


class ConfigLoader:
    """Owns the `schoolgate_config` option; builds the shared Runtime from it."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref
        self._retiring: set[asyncio.Task[bool]] = set()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "schoolgate_config",
            str,
            "",
            "schoolgate configuration file (empty: $SCHOOLGATE_CONFIG, else the embedded default).",
        )

    def configure(self, updated: set[str]) -> None:
        if "schoolgate_config" not in updated:
            return
        if self.ref.current is not None and not ctx.options.schoolgate_config:
            return  # started by `schoolgate run`, which built the runtime itself
        try:
            runtime = Runtime.from_config(load_config(ctx.options.schoolgate_config or None))
        except SchoolgateError as exc:
            metrics.config_loaded(False, reload=self.ref.current is not None)
            # An invalid reload keeps the running configuration (mitmproxy rolls the option back).
            raise exceptions.OptionsError(f"schoolgate: {exc}") from exc  # type: ignore[no-untyped-call]
        previous = self.ref.swap(runtime)
        metrics.config_loaded(True, reload=previous is not None)
        if previous is not None:
            self._retire(previous)
        log.info("schoolgate configuration loaded from %s", runtime.config.source)

    def _retire(self, previous: Runtime) -> None:
        """Close the replaced runtime once its in-flight inspections are recorded."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing can be in flight
            previous.close()
            return
        task = loop.create_task(previous.retire(previous.config.longest_judgement_s + 5))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def done(self) -> None:
        if self.ref.current is not None:
            self.ref.current.close()
            self.ref.current = None
