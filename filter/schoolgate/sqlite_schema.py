"""The one way schoolgate's SQLite files (banks, alert outbox, console) get their tables: every
statement of a schema applied idempotently, and the schema's version kept in the file's `meta`
table, so that an older schoolgate refuses a file a newer one wrote instead of misreading it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from schoolgate.errors import SchoolgateError


def apply_schema(
    cur: sqlite3.Cursor,
    schema: str,
    version: int,
    *,
    what: str,
    path: Path,
    error: type[SchoolgateError],
    key: str = "schema",
) -> bool:
    """Create what `schema` declares (it must declare `meta (key TEXT PRIMARY KEY, value
    INTEGER)`) inside the caller's transaction. True when the file is new. Raises `error` when
    the file holds a newer version than this schoolgate knows."""
    for statement in schema.split(";"):
        if statement.strip():
            cur.execute(statement)
    row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        cur.execute("INSERT INTO meta VALUES (?, ?)", (key, version))
        return True
    if row[0] > version:
        raise error(
            f"{path} has {what} schema {row[0]}, newer than this schoolgate supports "
            f"({version}): upgrade schoolgate"
        )
    return False
