"""BankStore: banks, signals, validation, versions, multi-process access."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from schoolgate.banks.model import BankError, SignalInput, SignalType
from schoolgate.banks.store import SCHEMA_VERSION, BankStore

SHA = "ab" * 32
PDQ = "f0" * 32
MD5 = "0123456789abcdef" * 2
SHA1 = "a1" * 20


@pytest.fixture
def store(tmp_path: Path) -> BankStore:
    return BankStore(tmp_path / "banks.db")


def test_create_and_list_banks(store: BankStore) -> None:
    bank = store.create_bank("incident-2024.1", "one video", source="DSL")
    assert bank.name == "incident-2024.1"
    assert bank.description == "one video"
    assert bank.source == "DSL"
    assert bank.counts == {}
    assert bank.created_at.tzinfo is not None
    store.create_bank("a-list")
    assert [b.name for b in store.banks()] == ["a-list", "incident-2024.1"]


@pytest.mark.parametrize("name", ["", "Upper", "-dash", "a" * 65, "sp ace", "slash/x", "é"])
def test_invalid_bank_names(store: BankStore, name: str) -> None:
    with pytest.raises(BankError, match="invalid bank name"):
        store.create_bank(name)


def test_duplicate_and_unknown_banks(store: BankStore) -> None:
    store.create_bank("x")
    with pytest.raises(BankError, match="already exists"):
        store.create_bank("x")
    with pytest.raises(BankError, match="no bank named 'y'"):
        store.bank("y")
    with pytest.raises(BankError, match="no bank named"):
        store.add_signals("y", [SignalInput(SignalType.SHA256, SHA)], source="t")
    assert store.ensure_bank("x", "ignored").description == ""
    assert store.ensure_bank("z", "new").description == "new"


def test_add_signals_counts_dedupes_and_lowercases(store: BankStore) -> None:
    store.create_bank("b")
    signals = [
        SignalInput(SignalType.SHA256, SHA.upper(), note="from list"),
        SignalInput(SignalType.SHA256, SHA),  # duplicate once lowercased
        SignalInput(SignalType.MD5, MD5),
        SignalInput(SignalType.SHA1, SHA1),
        SignalInput(SignalType.PDQ, PDQ, quality=90),
    ]
    assert store.add_signals("b", signals, source="file.txt") == 4
    assert store.add_signals("b", signals, source="file.txt") == 0
    bank = store.bank("b")
    assert bank.counts == {
        SignalType.SHA256: 1,
        SignalType.MD5: 1,
        SignalType.SHA1: 1,
        SignalType.PDQ: 1,
    }
    stored = list(store.iter_signals("b"))
    assert [s.value for s in stored] == [SHA, MD5, SHA1, PDQ]
    assert stored[0].note == "from list"
    assert stored[0].source == "file.txt"
    assert stored[3].quality == 90
    assert stored[0].frame is None
    assert stored[0].content_id is None
    assert [s.value for s in store.iter_signals(signal_type=SignalType.PDQ)] == [PDQ]


def test_same_value_in_two_banks(store: BankStore) -> None:
    for name in ("one", "two"):
        store.create_bank(name)
        store.add_signals(name, [SignalInput(SignalType.SHA256, SHA)], source="s")
    assert sorted(s.bank for s in store.iter_signals()) == ["one", "two"]


@pytest.mark.parametrize(
    ("signal", "problem"),
    [
        (SignalInput(SignalType.SHA256, "ab" * 31), "expected 64 hex digits"),
        (SignalInput(SignalType.MD5, "zz" * 16), "expected 32 hex digits"),
        (SignalInput(SignalType.SHA1, "ab" * 32), "expected 40 hex digits"),
        (SignalInput(SignalType.PDQ, "ab cd" + "ab" * 29 + "a"), "expected 64 hex digits"),
        (SignalInput(SignalType.PDQ, PDQ, quality=101), "invalid quality"),
        (SignalInput(SignalType.PDQ, PDQ, frame=1), "only to vpdq"),
        (SignalInput(SignalType.VPDQ, PDQ, quality=80, frame=0, timestamp=0.0), "content_id"),
        (SignalInput(SignalType.VPDQ, PDQ, content_id="v", timestamp=0.0), "frame number"),
        (SignalInput(SignalType.VPDQ, PDQ, content_id="v", frame=0), "timestamp"),
    ],
)
def test_invalid_signals_abort_the_whole_import(
    store: BankStore, signal: SignalInput, problem: str
) -> None:
    store.create_bank("b")
    good = SignalInput(SignalType.SHA256, SHA)
    with pytest.raises(BankError, match=problem) as info:
        store.add_signals("b", [good, signal], source="s")
    assert "signal #2" in str(info.value)
    assert store.bank("b").counts == {}


def test_vpdq_frames_roundtrip(store: BankStore) -> None:
    store.create_bank("videos")
    frames = [
        SignalInput(SignalType.VPDQ, PDQ, quality=80, content_id="vid1", frame=i, timestamp=i * 1.0)
        for i in range(3)
    ]
    assert store.add_signals("videos", frames, source="v.txt") == 3  # same hash, three frames
    stored = list(store.iter_signals("videos"))
    assert [(s.frame, s.timestamp, s.content_id) for s in stored] == [
        (0, 0.0, "vid1"),
        (1, 1.0, "vid1"),
        (2, 2.0, "vid1"),
    ]


def test_remove_and_delete(store: BankStore) -> None:
    store.create_bank("b")
    store.add_signals("b", [SignalInput(SignalType.SHA256, SHA)], source="s")
    assert store.remove_signal("b", SignalType.SHA256, SHA.upper()) is True
    assert store.remove_signal("b", SignalType.SHA256, SHA) is False
    store.add_signals("b", [SignalInput(SignalType.SHA256, SHA)], source="s")
    store.delete_bank("b")
    assert store.banks() == []
    assert list(store.iter_signals()) == []
    with pytest.raises(BankError, match="no bank"):
        store.delete_bank("b")


def test_version_increments_on_every_change(store: BankStore) -> None:
    versions = [store.version()]
    store.create_bank("b")
    versions.append(store.version())
    store.add_signals("b", [SignalInput(SignalType.SHA256, SHA)], source="s")
    versions.append(store.version())
    store.remove_signal("b", SignalType.SHA256, SHA)
    versions.append(store.version())
    assert versions == sorted(set(versions))
    before = store.version()
    with pytest.raises(BankError):
        store.add_signals("b", [SignalInput(SignalType.SHA256, "x")], source="s")
    assert store.version() == before  # a failed import changes nothing


def test_stats(store: BankStore) -> None:
    store.create_bank("b", source="NCMEC-like list")
    store.add_signals("b", [SignalInput(SignalType.MD5, MD5)], source="s")
    stats = store.stats()
    assert stats["total"] == 1
    assert stats["banks"]["b"]["counts"] == {"md5": 1}
    assert stats["banks"]["b"]["source"] == "NCMEC-like list"
    assert stats["db_bytes"] > 0
    assert stats["version"] == store.version()


def test_reopen_persists_and_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with BankStore(path) as first:
        first.create_bank("b")
        first.add_signals("b", [SignalInput(SignalType.PDQ, PDQ)], source="s")
    with BankStore(path) as again:
        assert again.bank("b").counts == {SignalType.PDQ: 1}
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(BankError, match="newer than this schoolgate"):
        BankStore(path)


def test_unopenable_path_is_a_bank_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(BankError, match="cannot open"):
        BankStore(tmp_path / "dir.db")


def _writer(path: str, worker: int) -> None:
    store = BankStore(Path(path))
    store.ensure_bank("shared")
    for batch in range(5):
        values = [
            SignalInput(SignalType.SHA256, f"{worker:02x}{batch:02x}{i:060x}") for i in range(200)
        ]
        store.add_signals("shared", values, source=f"worker{worker}")
    store.close()


@pytest.mark.timeout(120)
def test_several_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    BankStore(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(path), w)) for w in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=100)
        assert process.exitcode == 0
    with BankStore(path) as store:
        assert store.bank("shared").counts == {SignalType.SHA256: 3 * 5 * 200}
        assert store.version() >= 15
