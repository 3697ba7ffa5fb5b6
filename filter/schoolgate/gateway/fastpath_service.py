"""`schoolgate fastpath`: the one process that writes the fast path's nftables sets.

The resolver parses what pupils' devices send, so it holds no capability; it reports each
answer (names and addresses, as JSON lines) over a Unix socket and waits for "ok" before the
device gets the answer, so the first connection already finds its address sorted. This service
holds CAP_NET_ADMIN, sorts the answers itself with its own catalog (a resolver that lied could
only make claims a pupil's own domain can make), writes them in batches, and keeps the
heartbeat alive only while the resolver checks in: resolver down, or nft failing, and the
fast path lapses within `READY_TIMEOUT_S`, so everything meets the proxy again.

It also reads the first flight of every fast-pathed connection from the kernel's queue
(gateway.firstflight): only a ClientHello for a server name the catalog does not know lets a
connection go on in the kernel. That parser reads pupils' bytes in a process holding
CAP_NET_ADMIN, because answering the queue takes that capability; it is the bounded parser the
sniffer uses, in a unit that may do nothing else (see its systemd unit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from netfilterqueue import NetfilterQueue

from schoolgate.config import Config
from schoolgate.endpoints.catalog import Catalog
from schoolgate.gateway import nft as nftables
from schoolgate.gateway.fastpath import (
    READY_TIMEOUT_S,
    FastPathSets,
    ready_check_args,
    stop_script,
)
from schoolgate.gateway.fastpath_rules import FAST_QUEUE
from schoolgate.gateway.firstflight import FirstFlightCheck
from schoolgate.gateway.firstflight_queue import (
    QUEUE_COPY,
    QUEUE_LENGTH,
    QueueReader,
    ensure_queue_rules,
    remove_queue_rules,
)
from schoolgate.sniffer.sessionfile import SessionKeeper

log = logging.getLogger("schoolgate.fastpath")

SOCKET_NAME: Final = "fastpath.sock"  # in data_dir: the resolver and this service share it
HEARTBEAT_S: Final = 5.0
RESOLVER_SILENT_S: Final = 15.0  # no word from the resolver this long: it is down
MAX_LINE: Final = 64 * 1024
MAX_ADDRESSES: Final = 16  # per answer: the rest of a longer answer never reaches the fast path

type Runner = Callable[[str], None]  # applies an nft script; raises NftError


def socket_path(config: Config) -> Path:
    """Where the service listens and the resolver reports (resolver.fast_path_socket)."""
    return config.resolver.fast_path_socket or config.data_dir / SOCKET_NAME


def apply_script(script: str) -> None:
    nftables.nft("-f", "-", stdin=script)


def heartbeat_present() -> bool:
    try:
        nftables.nft(*ready_check_args())
    except nftables.NftError:
        return False
    return True


class FastPathService:
    """Batches the resolver's reports into nft transactions and keeps the heartbeat."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        runner: Runner = apply_script,
        present: Callable[[], bool] = heartbeat_present,
        queue_rules: Callable[[], None] = ensure_queue_rules,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sets = FastPathSets(catalog, clock=clock)
        self.runner = runner
        self.present = present
        self.queue_rules = queue_rules
        check = FirstFlightCheck(lambda name: self.sets.catalogued([name]), clock=clock)
        self.reader = QueueReader(check, self.withdraw)
        self.sessions = check.sessions
        self.keeper: SessionKeeper | None = None  # the session book on disk (serve)
        self.clock = clock
        self.resolver_seen = float("-inf")
        self.catalogued_known = False  # the first pass over the catalog's names is done
        self.queue_read = True  # the queue's reader is running
        self.rules_in_place = False  # the queue rules, as the last heartbeat found them
        self.stopped = False
        self._write_lock = threading.Lock()
        self.failures = 0
        self._waiting: list[asyncio.Future[None]] = []
        self._after_write: list[Callable[[], None]] = []
        self._beat_now = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    # -- the resolver's reports --------------------------------------------------------------

    def report(self, line: bytes) -> bool:
        """One JSON line: {"names": [...], "addresses": [...], "ttl": seconds, "device": who
        asked}; {} (alive);
        {"catalogued_pass": true} (the resolver has resolved every catalogued name once, so the
        gateway knows their servers). True when it added something to write."""
        self.resolver_seen = self.clock()
        try:
            message = json.loads(line)
            if message.get("catalogued_pass") is True:
                if not self.catalogued_known:
                    self._beat_now.set()  # the fast path may start: no need to wait 5 s
                self.catalogued_known = True
            names = [str(n)[:255] for n in message.get("names", [])][:16]
            # An ordinary answer holds a few addresses; a flood of answers with a hundred each
            # filled the fast set from one device (adversarial pass a16 F6).
            addresses = [str(a)[:64] for a in message.get("addresses", [])][:MAX_ADDRESSES]
            ttl = float(message.get("ttl", 0))
            device = str(message.get("device", ""))[:64]
        except (ValueError, TypeError, AttributeError):
            log.warning("schoolgate fastpath: a report that is not one: %r", line[:120])
            return False
        if not addresses:
            return False
        return self.sets.answered(names, addresses, ttl, device)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One resolver connection: a line in, "ok" out once it is written (or could not be)."""
        try:
            while line := await reader.readuntil(b"\n"):
                if self.report(line.strip()):
                    done = asyncio.get_running_loop().create_future()
                    self._waiting.append(done)
                    self._wake.set()
                    await done
                # "ok pass": this service has not heard a catalogued pass since it started (it
                # restarted while the resolver ran): the resolver runs one now, not in 10 minutes.
                writer.write(b"ok\n" if self.catalogued_known else b"ok pass\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def withdraw(self, address: str, then: Callable[[], None]) -> None:
        """A connection's first flight showed `address` to be the proxy's: off the fast path
        at the next write, and `then` (the refused connection's reset) after it, so that the
        client's retry meets the proxy."""
        self.sets.withdraw(address)
        self._after_write.append(then)
        if self._loop is None:
            self._wake.set()
        else:  # called on the queue's reader thread
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- writing ----------------------------------------------------------------------------

    def write(self, script: str) -> bool:
        with self._write_lock:
            if self.stopped:
                return False  # a step still running in its thread when the service stopped
            try:
                self.runner(script)
            except nftables.NftError as error:
                self.failures += 1
                log.error("schoolgate fastpath: the sets could not be written (%s): every "
                          "connection meets the proxy until they can", error)  # fmt: skip
                return False
            return True

    def stop(self) -> None:
        """End the fast path, for good: nothing written after this re-arms the heartbeat (a
        heartbeat step in its thread outlived the service and did, found by the installed
        gateway's test). A failing nft is tried again: a busy gateway is no reason to leave the
        heartbeat to run out."""
        with self._write_lock:
            for attempt in range(3):
                try:
                    self.runner(stop_script())
                    break
                except nftables.NftError as error:
                    if attempt == 2:
                        log.error("schoolgate fastpath: could not end the fast path (%s): it "
                                  "ends when the heartbeat runs out", error)  # fmt: skip
                    time.sleep(0.2)
            self.stopped = True

    def alive(self) -> bool:
        """Whether the fast path may be on: the resolver checked in lately, the gateway
        knows the catalogued names' addresses, and something answers the queue."""
        return (
            self.catalogued_known
            and self.queue_read
            and self.clock() - self.resolver_seen < RESOLVER_SILENT_S
        )

    def flush(self) -> None:
        """Write what waits (with the heartbeat while alive), then release the waiters."""
        waiting, self._waiting = self._waiting, []
        # Only the heartbeat's own step, which puts the queue rules in place first, starts the
        # fast path: a heartbeat before them dropped new connections' SYNs for seconds.
        script = self.sets.pending_script(heartbeat=self.alive() and self.rules_in_place)
        if script.strip() and not self.write(script):
            self.sets.unwritten()
        for done in waiting:
            if not done.done():
                done.set_result(None)

    def beat(self) -> None:
        """The heartbeat: restate everything if the ruleset was reloaded (the heartbeat gone),
        else re-arm it; end the fast path now when the resolver is silent."""
        if not self.alive():
            self.write(stop_script())
            return
        try:
            # Without the queue rule nothing is checked, and the schoolgate table drops what
            # a pending connection sends: the heartbeat lapses instead, so all meet the proxy.
            self.queue_rules()
        except nftables.NftError as error:
            self.failures += 1
            self.rules_in_place = False
            log.error("schoolgate fastpath: %s: every connection meets the proxy", error)
            self.write(stop_script())
            return
        self.rules_in_place = True
        if not self.present():
            self.write(self.sets.restate_script())
        elif not self.write(self.sets.pending_script(heartbeat=True)):
            self.sets.unwritten()

    async def writer_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(0.005)  # gather a burst of answers into one transaction
            self._wake.clear()
            after, self._after_write = self._after_write, []
            if after and self.keeper is not None:
                # Addresses leave for the proxy: it vouches for their sessions from now on,
                # so it gets the book before their devices' next connections reach it. The
                # book is written at most every HANDOFF_GAP_S: a move sooner waits for its
                # turn (a37 R3: skipped, the sessions since were refused for minutes), and the
                # refused connections with it (the check holds their resends meanwhile).
                await asyncio.sleep(self.keeper.handoff_wait())
                await _guarded(self.keeper.handoff)
            await _guarded(self.flush)
            for then in after:  # on this thread: the queue's verdicts are the loop's
                then()

    async def heartbeat_loop(self) -> None:
        while True:
            await _guarded(self.beat)
            if self.keeper is not None and self.keeper.due():
                await _guarded(self.keeper.save)
            elif self.keeper is not None:
                await _guarded(self.keeper.flush_journal)
            if self.keeper is not None and self.keeper.peer_due():
                await _guarded(self.keeper.refresh)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), HEARTBEAT_S)
            self._beat_now.clear()


async def _guarded(step: Callable[[], object]) -> None:
    """Run one step in a thread; a bug is logged and the loop goes on (were it to stop, the
    heartbeat would lapse and everything meet the proxy: safe, but the fast path gone)."""
    try:
        await asyncio.to_thread(step)
    except Exception:
        log.exception("schoolgate fastpath: %s failed", getattr(step, "__name__", "a step"))


def _read(queue: NetfilterQueue, service: FastPathService) -> None:
    try:
        queue.run()
    except OSError as error:
        log.error("schoolgate fastpath: reading the kernel's queue failed (%s): the fast path "
                  "ends", error)  # fmt: skip
    service.queue_read = False  # nothing answers the queue: the next heartbeat ends it


async def serve(
    catalog: Catalog,
    path: Path,
    group: int | None = None,
    sessions: Path | None = None,
    peer: Path | None = None,
) -> int:
    """Listen on `path` until SIGTERM/SIGINT; end the fast path on the way out. `sessions`:
    where the TLS session book is kept across restarts; `peer`: the proxy's."""
    import signal

    service = FastPathService(catalog)
    if sessions is not None:
        service.keeper = SessionKeeper(service.sessions, sessions, peer=peer)
        service.keeper.load()
    queue = NetfilterQueue()
    try:
        queue.bind(FAST_QUEUE, service.reader, max_len=QUEUE_LENGTH, range=QUEUE_COPY)
    except OSError as error:
        raise nftables.NftError(
            f"cannot read the kernel's queue {FAST_QUEUE} ({error}): another program "
            "holds it, or this process lacks CAP_NET_ADMIN"
        ) from None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    try:
        server = await asyncio.start_unix_server(service.handle, path=str(path), limit=MAX_LINE)
    except OSError as error:
        raise nftables.NftError(
            f"cannot listen on {path} ({error.strerror or error}): set resolver.fast_path_socket "
            "to a directory this service may write, e.g. /run/schoolgate-fastpath/fastpath.sock "
            "(schoolgate-fastpath.service's runtime directory)"
        ) from None
    if group is not None and group != os.getegid():
        try:
            os.chown(path, -1, group)
        except PermissionError:
            log.error("schoolgate fastpath: cannot give %s to group %d: the resolver may not "
                      "reach it (run the service with that group)", path, group)  # fmt: skip
    path.chmod(0o660)  # the resolver's group writes, nobody else
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Its own thread, blocked in recv() without the GIL: a connection waits for its verdict
    # only as long as the check takes, not for the event loop's turn.
    threading.Thread(target=_read, args=(queue, service), name="first-flight", daemon=True).start()
    tasks = [asyncio.create_task(c) for c in (service.writer_loop(), service.heartbeat_loop())]
    log.warning("schoolgate fastpath listening on %s (the fast path is on while the resolver "
                "checks in; it lapses %d s after it stops)", path, READY_TIMEOUT_S)  # fmt: skip
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        server.close()
        service.stop()
        if service.keeper is not None:
            service.keeper.save()
        with contextlib.suppress(nftables.NftError):
            remove_queue_rules()
        # No unbind: its reply would be read by the reader thread, blocked on the same socket,
        # and the stop would hang (found by the installed gateway's test). The kernel unbinds
        # the queue when the process's socket closes.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    log.warning("schoolgate fastpath stopped: every connection meets the proxy")
    return 0
