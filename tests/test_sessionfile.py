"""The TLS session book across a restart (sniffer.sessionfile): a gateway that forgot the
sessions it saw issued refuses them, and Chromium offers a refused ticket again until it
expires, so a restart must not make every TLS 1.2-only site a pupil had open fail."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from schoolgate.addons.runtime import RuntimeRef
from schoolgate.addons.scope import Scope
from schoolgate.sniffer.sessionfile import (
    FAST_PATH_ENV,
    FAST_PATH_FILE,
    PROXY_FILE,
    SessionKeeper,
    fast_path_sessions,
    journal_of,
)
from schoolgate.sniffer.tlsresume import Resume, SessionBook
from tests.test_tlsresume import CATALOGUED, HARMLESS, contexts, handshake, read

__all__ = ["contexts"]  # the fixture, shared with tests.test_tlsresume


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_a_restored_book_vouches_for_the_sessions_issued_before_the_restart(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts
    before = SessionBook()
    made = handshake(server, client, HARMLESS)
    assert read(made, before, HARMLESS) is Resume.DONE  # issued here: booked
    dump = before.dump()
    assert made.session is not None
    assert made.session.id.hex() not in dump.decode()  # digests only, never a session's id

    restarted = SessionBook()
    assert restarted.restore(dump) == len(before) > 0
    again = handshake(server, client, HARMLESS, made.session)
    assert again.reused
    assert read(again, restarted, HARMLESS) is Resume.DONE
    # and it vouches for nothing more than before: another name is still refused
    moved = handshake(server, client, CATALOGUED, made.session)
    assert read(moved, restarted, CATALOGUED) is Resume.REFUSE
    # a gateway that lost the book refuses the same resumption (why it is kept)
    assert read(handshake(server, client, HARMLESS, made.session), SessionBook(),
                HARMLESS) is Resume.REFUSE  # fmt: skip


def test_a_restore_keeps_each_session_s_age_and_the_book_s_bounds() -> None:
    clock, wall = Clock(1000.0), Clock(1_700_000_000.0)
    book = SessionBook(clock=clock, lifetime=3600.0)
    book.issued("198.51.100.7", "ticket", b"old", HARMLESS)
    clock.at += 3000.0
    book.issued("198.51.100.7", "ticket", b"new", HARMLESS)
    dump = book.dump(wall=wall)

    wall.at += 1200.0  # the gateway was down 20 minutes: "old" is now 70 minutes old
    later = Clock(50.0)  # a new process's monotonic clock starts anywhere
    restored = SessionBook(clock=later, lifetime=3600.0)
    assert restored.restore(dump, wall=wall) == 1
    assert restored.name("198.51.100.7", "ticket", b"old") is None
    assert restored.name("198.51.100.7", "ticket", b"new") == HARMLESS
    later.at += 2401.0  # it was 20 min old when restored: its hour is up
    assert restored.name("198.51.100.7", "ticket", b"new") is None

    small = SessionBook(size=1, clock=Clock(0.0))
    small.issued("198.51.100.7", "id", b"resident", HARMLESS)
    wall.at -= 1190.0  # restored 10 s after the dump: both older than "resident"
    assert small.restore(dump, wall=wall) == 2
    assert len(small) == 1  # the newest survive: the restored ones are older than "resident"
    assert small.name("198.51.100.7", "id", b"resident") == HARMLESS


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"version": 2, "sessions": []}',
        b'{"version": 1, "sessions": [["zz", "a", 1]]}',
        b'{"version": 1, "sessions": [[1]]}',
        b'{"version": 1}',
    ],
)
def test_an_unreadable_dump_adds_nothing_and_says_why(data: bytes) -> None:
    book = SessionBook()
    with pytest.raises(ValueError, match="unreadable session book"):
        book.restore(data)
    assert len(book) == 0


def test_the_keeper_writes_owner_only_in_turns_and_survives_a_broken_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(0.0)
    book = SessionBook()
    path = tmp_path / "sessions.json"
    keeper = SessionKeeper(book, path, every_s=300.0, clock=clock)
    assert keeper.load() == 0  # a first start
    book.issued("198.51.100.7", "id", b"x", HARMLESS)
    assert not keeper.due()
    clock.at = 300.0
    assert keeper.due()
    assert not keeper.due()  # one caller takes the turn
    assert keeper.save()
    assert path.stat().st_mode & 0o777 == 0o640  # the other path (the same group) reads it
    assert len(json.loads(path.read_bytes())["sessions"]) == 1

    path.write_bytes(b"{half a fi")
    fresh = SessionBook()
    with caplog.at_level(logging.WARNING, logger="schoolgate.sessions"):
        assert SessionKeeper(fresh, path).load() == 0
    assert "ignored (unreadable session book" in caplog.text
    assert SessionKeeper(fresh, tmp_path / "missing" / "x.json").save() is False  # logged


def test_the_proxy_keeps_its_book_in_data_dir_across_a_restart(tmp_path: Path) -> None:
    runtime = cast(Any, SimpleNamespace(config=SimpleNamespace(data_dir=tmp_path)))
    first = Scope(RuntimeRef(runtime))
    first.running()
    first.sessions.issued("198.51.100.7", "ticket", b"t", HARMLESS)
    first.done()
    assert (tmp_path / PROXY_FILE).exists()
    second = Scope(RuntimeRef(runtime))
    second.running()
    assert second.sessions.name("198.51.100.7", "ticket", b"t") == HARMLESS


def test_the_fast_path_keeps_its_book_where_its_unit_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FAST_PATH_ENV, raising=False)
    assert fast_path_sessions(tmp_path / "data") == tmp_path / "data" / FAST_PATH_FILE
    monkeypatch.setenv(FAST_PATH_ENV, f"{tmp_path}/state/book.json")
    assert fast_path_sessions(tmp_path / "data") == tmp_path / "state" / "book.json"
    units = Path(__file__).parents[1] / "deploy" / "systemd"
    for unit in ("schoolgate.service", "schoolgate-fastpath.service"):  # the same file for both
        text = (units / unit).read_text()
        assert f"{FAST_PATH_ENV}=/var/lib/schoolgate-fastpath/{FAST_PATH_FILE}" in text, unit


def test_each_path_vouches_for_the_sessions_the_other_saw_issued(tmp_path: Path) -> None:
    """Adversarial pass a34: an address moves between the proxy and the fast path (a pupil's
    refused hello withdraws it for an hour), and each refused every session made through the
    other. Each now reads the other's book when it changes."""
    clock = Clock(0.0)
    fast, proxy = SessionBook(clock=clock), SessionBook(clock=clock)
    fast_file, proxy_file = tmp_path / FAST_PATH_FILE, tmp_path / PROXY_FILE
    fast_keeper = SessionKeeper(fast, fast_file, peer=proxy_file, clock=clock)
    proxy_keeper = SessionKeeper(proxy, proxy_file, peer=fast_file, clock=clock)
    assert proxy_keeper.peer_due()
    assert not proxy_keeper.refresh()  # nothing written yet: nothing known
    fast.issued("198.51.100.7", "ticket", b"made-on-the-fast-path", HARMLESS, "192.0.2.10")
    clock.at += 3.0
    # An address is withdrawn: the book is written before the move (a36 I1: written up to
    # 10 s later, the proxy refused the sessions of devices that arrived sooner) ...
    assert fast_keeper.handoff()
    fast.issued("198.51.100.7", "ticket", b"a-second-later", HARMLESS, "192.0.2.10")
    clock.at += 1.0
    assert not fast_keeper.handoff()  # ... at most every HANDOFF_GAP_S
    # ... and the proxy, finding a session in neither book, looks at the file again at once
    assert not proxy_keeper.peer_due()
    assert proxy.name("198.51.100.7", "ticket", b"made-on-the-fast-path") == HARMLESS
    assert proxy.name("198.51.100.7", "ticket", b"a-second-later") is None
    clock.at += 2.0
    assert fast_keeper.handoff()
    assert proxy.name("198.51.100.7", "ticket", b"a-second-later") == HARMLESS
    assert proxy.name("198.51.100.8", "ticket", b"made-on-the-fast-path") is None  # its address
    assert not proxy_keeper.refresh()  # unchanged: not read again
    assert not proxy_file.exists()
    assert not fast_keeper.refresh()
    proxy.issued("198.51.100.9", "id", b"made-through-the-proxy", HARMLESS)
    proxy_keeper.save()
    assert fast_keeper.refresh()
    assert fast.name("198.51.100.9", "id", b"made-through-the-proxy") == HARMLESS
    proxy_file.write_bytes(b"{broken")
    assert not fast_keeper.refresh()  # logged; what was read stays
    assert fast.name("198.51.100.9", "id", b"made-through-the-proxy") == HARMLESS


def test_a_book_written_before_devices_had_shares_is_read() -> None:
    old = json.dumps({"version": 1, "sessions": [["ab" * 32, HARMLESS, 1_700_000_000.0]]})
    book = SessionBook()
    assert book.restore(old.encode(), wall=Clock(1_700_000_010.0)) == 1
    assert json.loads(book.dump())["sessions"][0][3] == ""


def test_reading_the_peers_book_on_misses_takes_a_bounded_share_of_the_time(
    tmp_path: Path,
) -> None:
    """The proxy reads the fast path's book on a miss on its event loop; a full book takes a
    good part of a second on a Pi, and a pupil can make the file change and a miss happen every
    second or two. After a read that took 0.5 s, the next waits 10 s (5% of the time)."""
    clock = Clock(0.0)
    ticks = iter([0.0, 0.5, 100.0, 100.01])
    fast, proxy = SessionBook(clock=clock), SessionBook(clock=clock)
    fast_file, proxy_file = tmp_path / FAST_PATH_FILE, tmp_path / PROXY_FILE
    fast_keeper = SessionKeeper(fast, fast_file, clock=clock)
    # it hooks itself into the proxy's book (on_miss)
    SessionKeeper(proxy, proxy_file, peer=fast_file, clock=clock, timer=lambda: next(ticks))
    fast.issued("198.51.100.7", "ticket", b"one", HARMLESS, "192.0.2.10")
    fast_keeper.save()
    assert proxy.name("198.51.100.7", "ticket", b"one") == HARMLESS  # read on the miss (0.5 s)
    fast.issued("198.51.100.7", "ticket", b"two", HARMLESS, "192.0.2.10")
    clock.at += 2.0
    fast_keeper.save()
    assert proxy.name("198.51.100.7", "ticket", b"two") is None  # not read again so soon
    clock.at += 8.5
    assert proxy.name("198.51.100.7", "ticket", b"two") == HARMLESS  # 10 s on: read


def test_a_session_made_through_the_proxy_is_known_to_the_fast_path_within_a_flush(
    tmp_path: Path,
) -> None:
    """a40 F5: an address the proxy carried moved to the fast path as soon as a device resolved
    its name through the gateway, and every resumption of a session made through the proxy
    was refused there until the proxy's next dump, minutes later. The journal beside the book
    is written within a second and read on a miss."""
    clock = Clock(0.0)
    fast, proxy = SessionBook(clock=clock), SessionBook(clock=clock)
    fast_file, proxy_file = tmp_path / FAST_PATH_FILE, tmp_path / PROXY_FILE
    fast_keeper = SessionKeeper(fast, fast_file, peer=proxy_file, clock=clock)
    proxy_keeper = SessionKeeper(proxy, proxy_file, peer=fast_file, clock=clock)
    proxy_keeper.save()  # the last dump, minutes ago
    proxy.issued("203.0.113.58", "ticket", b"through-the-proxy", HARMLESS, "192.0.2.10")
    assert fast.name("203.0.113.58", "ticket", b"through-the-proxy") is None  # not yet
    assert proxy_keeper.flush_journal()
    assert not proxy_keeper.flush_journal()  # nothing new
    clock.at += 2.0  # past the miss gap
    assert fast.name("203.0.113.58", "ticket", b"through-the-proxy") == HARMLESS
    # the next dump holds it, and the journal starts again
    clock.at += 400.0
    proxy_keeper.save()
    assert journal_of(proxy_file).read_bytes() == b""
    assert fast_keeper.refresh()
    assert fast.name("203.0.113.58", "ticket", b"through-the-proxy") == HARMLESS


def test_a_restart_after_a_crash_restores_the_journal_too(tmp_path: Path) -> None:
    clock = Clock(0.0)
    book = SessionBook(clock=clock)
    keeper = SessionKeeper(book, tmp_path / PROXY_FILE, clock=clock)
    keeper.save()
    book.issued("203.0.113.59", "id", b"after-the-dump", HARMLESS)
    keeper.flush_journal()
    with journal_of(tmp_path / PROXY_FILE).open("ab") as journal:
        journal.write(b'["torn line')  # the crash came mid-write
    restarted = SessionBook(clock=clock)
    assert SessionKeeper(restarted, tmp_path / PROXY_FILE, clock=clock).load() == 1
    assert restarted.name("203.0.113.59", "id", b"after-the-dump") == HARMLESS


def test_an_unchanged_book_is_not_written_again(tmp_path: Path) -> None:
    clock = Clock(0.0)
    book = SessionBook(clock=clock)
    path = tmp_path / PROXY_FILE
    keeper = SessionKeeper(book, path, clock=clock)
    book.issued("203.0.113.60", "id", b"one", HARMLESS)
    assert keeper.save()
    path.write_bytes(b"marker")  # stands for the file as written
    assert keeper.save()  # nothing issued since: not written
    assert path.read_bytes() == b"marker"
    book.issued("203.0.113.60", "id", b"two", HARMLESS)
    assert keeper.save()
    assert json.loads(path.read_bytes())["sessions"]
