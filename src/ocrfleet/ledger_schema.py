"""The ledger's schema: its tables, the statuses a page and a document can have, and the
one-way upgrades of ledgers made by earlier versions (same SCHEMA_VERSION: old ledgers keep
opening). New tables go in SCHEMA with CREATE TABLE IF NOT EXISTS.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import LedgerError

SCHEMA_VERSION = 1
PAGE_STATUSES = ("pending", "done", "blank", "truncated", "failed", "needs_ocr")
DOC_STATUSES = ("pending", "assembling", "done", "failed")
FINISHED_PAGE_STATUSES = ("done", "blank", "truncated", "failed", "needs_ocr")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    doc_id TEXT NOT NULL, pages INTEGER NOT NULL, error TEXT
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    rel TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'assembling', 'done', 'failed')),
    error TEXT,
    assembler TEXT,
    added_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS aliases (
    doc_id TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (doc_id, source)
);
CREATE TABLE IF NOT EXISTS pages (
    doc_id TEXT NOT NULL REFERENCES documents (doc_id),
    page INTEGER NOT NULL,
    doc_seq INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'done', 'blank', 'truncated', 'failed', 'needs_ocr')),
    claimed_by TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated_at REAL,
    UNIQUE (doc_id, page)
);
CREATE INDEX IF NOT EXISTS pages_todo ON pages (doc_seq, page) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS pages_claims ON pages (claimed_by) WHERE claimed_by IS NOT NULL;
-- The suspects' claim (crashes > 0) must not scan every pending page (89 ms at 1 M pages).
CREATE INDEX IF NOT EXISTS pages_crashed ON pages (doc_seq, page)
    WHERE status = 'pending' AND crashes > 0;
CREATE TABLE IF NOT EXISTS page_text (
    doc_id TEXT NOT NULL, page INTEGER NOT NULL, text TEXT NOT NULL, raw TEXT,
    record TEXT NOT NULL, PRIMARY KEY (doc_id, page)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL, page INTEGER NOT NULL, attempt INTEGER NOT NULL,
    worker TEXT NOT NULL, prompt TEXT,
    started_at REAL NOT NULL, finished_at REAL,
    outcome TEXT, finish_reason TEXT, output_tokens INTEGER, error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_open ON attempts (worker) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY, slot INTEGER, pid INTEGER, gpu TEXT,
    started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, stopped_at REAL
);
CREATE TABLE IF NOT EXISTS gpu_samples (
    t REAL NOT NULL, worker TEXT NOT NULL, gpu INTEGER NOT NULL, util REAL,
    mem_used_mib REAL, mem_total_mib REAL, power_w REAL, temp_c REAL
);
CREATE INDEX IF NOT EXISTS gpu_samples_t ON gpu_samples (t);
CREATE TABLE IF NOT EXISTS route_overrides (
    doc_id TEXT NOT NULL, page INTEGER NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (doc_id, page)
);
CREATE TABLE IF NOT EXISTS corpus_listing (
    doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, shard INTEGER NOT NULL,
    num_shards INTEGER NOT NULL, pages INTEGER NOT NULL, seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    source TEXT PRIMARY KEY, doc_id TEXT NOT NULL, path TEXT NOT NULL, rel TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS doc_files (
    doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, ctime_ns INTEGER
);
CREATE TABLE IF NOT EXISTS retired (
    doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL
);
-- Output names whose files no input holds any more, to be set aside (stale_outputs.py).
CREATE TABLE IF NOT EXISTS stale_outputs (
    rel TEXT PRIMARY KEY, key TEXT NOT NULL, reason TEXT NOT NULL, figures_to TEXT,
    at REAL NOT NULL
);
-- Set-aside output names whose uploaded copies (--sync-to) are still to move (stale_remote.py).
CREATE TABLE IF NOT EXISTS stale_remote (
    rel TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (rel, at)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    config TEXT NOT NULL, summary TEXT
);
"""


def create_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create what is missing and stamp (or check) the schema version; inside a transaction."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    _allow_needs_ocr(db)
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
    elif int(row["value"]) != SCHEMA_VERSION:
        raise LedgerError(
            f"{path} has ledger schema {row['value']}, this ocrfleet writes "
            f"{SCHEMA_VERSION}: use a new --output-dir or the matching ocrfleet version"
        )


def _allow_needs_ocr(db: sqlite3.Connection) -> None:
    """Ledgers made before the needs_ocr status get it added to the pages CHECK constraint:
    only the stored definition changes (SQLite's documented way to loosen a constraint), so
    columns other versions added stay, and no row is rewritten."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='pages'").fetchone()
    if row is None or "needs_ocr" in row[0]:
        return
    version = int(db.execute("PRAGMA schema_version").fetchone()[0])
    db.execute("PRAGMA writable_schema=ON")
    try:
        db.execute(
            "UPDATE sqlite_master SET sql=replace(sql, \"'truncated', 'failed')\", "
            "\"'truncated', 'failed', 'needs_ocr')\") WHERE type='table' AND name='pages'"
        )
        db.execute(f"PRAGMA schema_version={version + 1}")
    finally:
        db.execute("PRAGMA writable_schema=OFF")
