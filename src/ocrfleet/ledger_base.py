"""A connection to one shard's ledger: opening it (WAL, schema), transactions, raw reads.

The ledger's operations build on this (ledger_claims.LedgerClaims, then ledger.Ledger).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from .ledger_schema import create_schema


class LedgerConnection:
    """A connection to one shard's ledger. One per process; not shared between threads."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 120.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed transaction survives a process crash (kill -9); only power
        # loss can lose the last ones, which resume then redoes.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        with self.transaction() as db:
            create_schema(db, path)

    @classmethod
    def read_only(cls, path: Path) -> Self:
        """A ledger opened only to read (status): no schema created, no version stamped,
        nothing written; works in a read-only directory. LedgerError if unreadable."""
        from .ledger_file import connect_read_only

        self = cls.__new__(cls)
        self.path = path
        self._db = connect_read_only(path)
        return self

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: takes the write lock up front, so no deadlock on upgrade."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only statement (for modules that keep their own tables here)."""
        return self._db.execute(sql, tuple(args)).fetchall()
