"""Every SQLite file of schoolgate refuses to be read by an older schoolgate than wrote it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from schoolgate.alerts.outbox import AlertOutbox, OutboxError
from schoolgate.banks.model import BankError
from schoolgate.banks.store import BankStore
from schoolgate.console.store import ConsoleError, ConsoleStore
from schoolgate.errors import SchoolgateError

OPENERS: list[tuple[Callable[[Path], object], str, type[SchoolgateError]]] = [
    (BankStore, "schema_version", BankError),
    (AlertOutbox, "schema", OutboxError),
    (ConsoleStore, "schema", ConsoleError),
]


@pytest.mark.parametrize(("opener", "key", "error"), OPENERS, ids=["banks", "outbox", "console"])
def test_a_file_from_a_newer_schoolgate_is_refused_with_a_clear_error(
    tmp_path: Path, opener: Callable[[Path], object], key: str, error: type[SchoolgateError]
) -> None:
    path = tmp_path / "file.sqlite"
    opened = opener(path)
    opened.close()  # type: ignore[attr-defined]
    reopened = opener(path)  # the same version opens again
    reopened.close()  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 99 WHERE key = ?", (key,))
    with pytest.raises(error, match=r"newer than this schoolgate supports .*upgrade schoolgate"):
        opener(path)
