"""`systemctl reload schoolgate` (SIGHUP): read the configuration file again and swap it in.

A valid file builds a whole new Runtime (catalog, banks, models, pool, audit log) off the event
loop, installs it in one assignment, then retires the old one once its in-flight inspections have
finished and been recorded. An invalid file changes nothing: the reason (file, key path, problem)
is logged and the running configuration keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import exceptions, options

from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.config import EMBEDDED_SOURCE, Config, load_config
from schoolgate.errors import SchoolgateError
from schoolgate.gateway.ca import reload_warnings
from schoolgate.gateway.sdnotify import SystemdNotifier
from schoolgate.monitoring import metrics

log = logging.getLogger("schoolgate.proxy")

# mitmproxy options a running proxy does not change under its clients: listeners and the CA.
RESTART_ONLY = ("mode", "listen_host", "listen_port", "confdir")


class ConfigReloader:
    """Reloads on request; one reload at a time, a request during one runs once more after it."""

    def __init__(
        self,
        ref: RuntimeRef,
        opts: options.Options,
        options_for: Callable[[Config], dict[str, Any]],
        notifier: SystemdNotifier | None = None,
        build: Callable[[Config], Runtime] = Runtime.from_config,
    ) -> None:
        self.ref = ref
        self.opts = opts
        self.options_for = options_for
        self.notifier = notifier or SystemdNotifier({})
        self.build = build
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._retiring: set[asyncio.Task[bool]] = set()

    def request(self) -> None:
        """Signal handler (runs on the event loop): start a reload, or queue one more."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._reload_until_settled())

    async def _reload_until_settled(self) -> None:
        for _ in range(10):  # bounded: a storm of SIGHUPs coalesces into a few reloads
            self._again = False
            try:
                await self.reload()
            except Exception:  # a reload bug must not go unseen, nor stop the proxy
                log.exception("schoolgate: configuration reload failed; still serving")
            if not self._again:
                return

    async def reload(self) -> bool:
        """Reload once; True if the new configuration is now serving."""
        current = self.ref.get()
        path = None if current.config.source == EMBEDDED_SOURCE else current.config.source
        self.notifier.reloading()
        try:
            return await self._swap_in(current, path)
        finally:
            self.notifier.ready(f"serving {self.ref.get().config.source}")

    async def _swap_in(self, current: Runtime, path: str | None) -> bool:
        try:
            config = await asyncio.to_thread(load_config, path)
            runtime = await asyncio.to_thread(self.build, config)
        except Exception as exc:  # whatever is wrong with the new file, the proxy keeps serving
            reason = (
                str(exc) if isinstance(exc, SchoolgateError) else f"{type(exc).__name__}: {exc}"
            )
            log.error(
                "schoolgate: configuration reload refused, still serving the previous one: %s",
                reason,
            )
            metrics.config_loaded(False)
            return False
        old_opts, new_opts = self.options_for(current.config), self.options_for(config)
        for key in RESTART_ONLY:
            if old_opts.get(key) != new_opts.get(key):
                log.warning(
                    "schoolgate: %s changed (%s -> %s); it takes effect after a restart "
                    "(systemctl restart schoolgate)",
                    key,
                    old_opts.get(key),
                    new_opts.get(key),
                )
        changed = {
            k: v for k, v in new_opts.items() if k not in RESTART_ONLY and old_opts.get(k) != v
        }
        try:
            if changed:
                self.opts.update(**changed)  # type: ignore[no-untyped-call]
        except exceptions.OptionsError as exc:
            await asyncio.to_thread(runtime.close)
            log.error(
                "schoolgate: configuration reload refused, still serving the previous one: %s: %s",
                config.source,
                exc,
            )
            metrics.config_loaded(False)
            return False
        # Uploads in progress and hosts learnt from apps' replies carry over: forgetting them
        # would refuse the rest of every chunked upload as orphaned, and pass learnt upload hosts
        # through undecrypted until an app hands them out again.
        runtime.sessions = current.sessions
        runtime.learnt = current.learnt
        previous = self.ref.swap(runtime)
        metrics.config_loaded(True)
        log.warning("schoolgate: configuration reloaded from %s", config.source)
        # A catalog that grew needs a re-issued CA: say so now, not when devices start failing.
        domains = runtime.catalog.inspected_domains()
        for warning in await asyncio.to_thread(reload_warnings, config.data_dir / "ca", domains):
            log.warning("schoolgate: WARNING: %s", warning)
        if previous is not None:
            timeout = previous.config.longest_judgement_s + 5
            task = asyncio.get_running_loop().create_task(previous.retire(timeout))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return True

    async def close(self) -> None:
        """On shutdown: stop a reload in progress and finish retiring old runtimes."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._retiring, return_exceptions=True)
