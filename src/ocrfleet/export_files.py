"""The data files of an export: zstd Parquet or gzip JSONL, rolled over every N rows.

Files are written under hidden temporary names (`.NAME.tmp`, which no `*.parquet` or
`*.jsonl.gz` glob matches) and only renamed into place when the export commits, so a reader
never sees half a file. A document's rows always land in one file: the export replaces data
document by document.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("parquet", "jsonl")
LEVELS = ("document", "page")
EXTENSIONS = {"parquet": ".parquet", "jsonl": ".jsonl.gz"}
PREFIXES = {"document": "documents", "page": "pages"}
# Every data file an export may have written (any level, any format): only these are ever
# deleted from DEST.
DATA_FILE = re.compile(r"^(documents|pages)-\d{5,}\.(parquet|jsonl\.gz)$")
PARQUET_BATCH_ROWS = 1000


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to DEST
    rows: int
    documents: int
    bytes: int


def data_file_name(level: str, fmt: str, number: int) -> str:
    return f"{PREFIXES[level]}-{number:05d}{EXTENSIONS[fmt]}"


def temp_path(dest: Path, name: str) -> Path:
    return dest / f".{name}.tmp"


class _Open:
    """One data file being written (under its temporary name)."""

    def __init__(self, dest: Path, name: str, fmt: str, schema: Any) -> None:
        self.name = name
        self.tmp = temp_path(dest, name)
        self.fmt = fmt
        self.rows = 0
        self.documents = 0
        self._batch: list[dict[str, Any]] = []
        self._schema = schema
        self._parquet: Any = None
        self._jsonl: Any = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        else:
            self._jsonl = gzip.open(self.tmp, "wt", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows += len(rows)
        self.documents += 1
        if self._jsonl is not None:
            for row in rows:
                self._jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        self._batch.extend(rows)
        if len(self._batch) >= PARQUET_BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            import pyarrow as pa

            self._parquet.write_table(pa.Table.from_pylist(self._batch, schema=self._schema))
            self._batch = []

    def close(self) -> DataFile:
        if self._parquet is not None:
            self._flush()
            self._parquet.close()
        else:
            self._jsonl.close()
        return DataFile(self.name, self.rows, self.documents, self.tmp.stat().st_size)

    def abort(self) -> None:
        try:
            if self._parquet is not None:
                self._parquet.close()
            elif self._jsonl is not None:
                self._jsonl.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class RollingWriter:
    """Writes documents' rows into numbered files of about `rows_per_file` rows each."""

    def __init__(
        self, dest: Path, level: str, fmt: str, rows_per_file: int, first_number: int, schema: Any
    ) -> None:
        self.dest = dest
        self.level = level
        self.fmt = fmt
        self.rows_per_file = rows_per_file
        self.next_number = first_number
        self.schema = schema
        self.written: list[DataFile] = []
        self._open: _Open | None = None

    def add(self, rows: Sequence[dict[str, Any]]) -> str:
        """Write one document's rows; returns the file (relative name) they went to."""
        if self._open is not None and self._open.rows >= self.rows_per_file:
            self.written.append(self._open.close())
            self._open = None
        if self._open is None:
            name = data_file_name(self.level, self.fmt, self.next_number)
            self.next_number += 1
            self._open = _Open(self.dest, name, self.fmt, self.schema)
        self._open.add(rows)
        return self._open.name

    def close(self) -> list[DataFile]:
        if self._open is not None:
            self.written.append(self._open.close())
            self._open = None
        return self.written

    def abort(self) -> None:
        if self._open is not None:
            self._open.abort()
            self._open = None
        for done in self.written:
            temp_path(self.dest, done.path).unlink(missing_ok=True)
