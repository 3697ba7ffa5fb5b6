"""What every command module shares: exit codes, the usage error, the configuration and the
bank store as a command opens them, and the files it is given."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path

from schoolgate.banks.store import BankStore
from schoolgate.config import Config, load_config
from schoolgate.errors import SchoolgateError

EXIT_OK, EXIT_BLOCKED, EXIT_ERROR = 0, 1, 2

# argparse's sub-command collection, as every `add_commands` receives it (a lazy alias: the class
# is not subscriptable at run time).
type Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


class UsageError(SchoolgateError):
    """A command was asked for something it cannot do (a missing file, a bad option)."""


def config_from(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def open_store(config: Config) -> BankStore:
    config.banks.path.parent.mkdir(parents=True, exist_ok=True)
    return BankStore(config.banks.path)


def iter_files(paths: Sequence[str]) -> Iterator[Path]:
    for text in paths:
        path = Path(text)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise UsageError(f"{path}: no such file or folder")


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from None
