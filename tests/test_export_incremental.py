"""The export library over a real ledger that a test fills page by page: incremental exports,
documents still in progress, filters on route and flags, and recovery from a killed export."""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from ocrfleet.errors import ConfigError
from ocrfleet.export import ExportOptions, export
from ocrfleet.ledger import Ledger
from ocrfleet.ledger_rows import NewDocument, PageOutcome
from tests.conftest import cli_env


def add(ledger: Ledger, doc_id: str, pages: int) -> None:
    doc = NewDocument(doc_id, f"/corpus/{doc_id}.pdf", f"/corpus/{doc_id}.pdf", doc_id, 1, pages)
    ledger.add_documents([doc])


def finish(ledger: Ledger, doc_id: str, page: int, *, status: str = "done", **record: Any) -> None:
    text = f"κείμενο {doc_id} σελίδα {page}" if status == "done" else ""
    outcome = PageOutcome(
        doc_id,
        page,
        status,
        text,
        None,
        {"engine": "vllm", "status": status, "text": text, "quality_flags": [], **record},
        1,
        "engine error" if status == "failed" else None,
    )
    ledger.finish_page("test", outcome)


def rows(dest: Path) -> list[dict[str, Any]]:
    files = sorted(str(p) for p in dest.glob("*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


def duck_count(dest: Path) -> int:
    return int(duckdb.sql(f"SELECT count(*) FROM '{dest}/*.parquet'").fetchall()[0][0])


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    made = Ledger(tmp_path / "out" / "ocrfleet.sqlite")
    made.begin_run("run-1", json.dumps({"engine": {"name": "vllm", "model": "deepseek-ocr"}}))
    return made


def options(tmp_path: Path, dest: str = "dest", **extra: Any) -> ExportOptions:
    return ExportOptions(outputs=(str(tmp_path / "out"),), dest=tmp_path / dest, **extra)


def test_documents_in_progress_arrive_when_their_last_page_lands(
    ledger: Ledger, tmp_path: Path
) -> None:
    add(ledger, "a", 2)
    add(ledger, "b", 2)
    finish(ledger, "a", 1)
    finish(ledger, "b", 1)
    finish(ledger, "b", 2)

    first = export(options(tmp_path))
    assert (first.documents, first.unfinished) == (1, 1)
    assert [r["doc_id"] for r in rows(tmp_path / "dest")] == ["b"]
    assert rows(tmp_path / "dest")[0]["model"] == "deepseek-ocr"
    pages = export(options(tmp_path, "pages", level="page"))
    assert pages.rows == 3 and duck_count(tmp_path / "pages") == 3  # finished pages only

    finish(ledger, "a", 2)
    second = export(options(tmp_path))
    assert (second.added, second.replaced, second.unchanged, second.unfinished) == (1, 0, 1, 0)
    assert sorted(r["doc_id"] for r in rows(tmp_path / "dest")) == ["a", "b"]
    a = next(r for r in rows(tmp_path / "dest") if r["doc_id"] == "a")
    assert a["text"].count("<!-- page ") == 2 and "κείμενο a σελίδα 2" in a["text"]
    pages_again = export(options(tmp_path, "pages", level="page"))
    # b shared a's file: it is rewritten with it ("moved"), never left in two files
    assert (pages_again.replaced, pages_again.moved, pages_again.unchanged) == (1, 1, 0)
    assert duck_count(tmp_path / "pages") == 4
    distinct = duckdb.sql(
        f"SELECT count(DISTINCT (doc_id, page)) FROM '{tmp_path}/pages/*.parquet'"
    )
    assert distinct.fetchall()[0][0] == 4


def test_where_on_route_flags_and_status(ledger: Ledger, tmp_path: Path) -> None:
    add(ledger, "looping", 2)
    add(ledger, "clean", 1)
    add(ledger, "broken", 2)
    finish(ledger, "looping", 1, route="text")
    finish(ledger, "looping", 2, route={"route": "ocr", "scores": {"chars": 3}},
           quality_flags=["repetition_loop"])  # fmt: skip
    finish(ledger, "clean", 1, route="text")
    finish(ledger, "broken", 1, route="ocr")
    finish(ledger, "broken", 2, status="failed")

    def selected(where: str, level: str = "document") -> list[Any]:
        dest = f"w{abs(hash((where, level)))}"
        export(options(tmp_path, dest, where=where, level=level))
        return sorted(
            r["doc_id"] if level == "document" else (r["doc_id"], r["page"])
            for r in rows(tmp_path / dest)
        )

    assert selected("flag = 'repetition_loop'") == ["looping"]
    assert selected("flag != 'repetition_loop'") == ["broken", "clean"]
    assert selected("status = 'done' and route = 'ocr'") == ["looping"]
    assert selected("status = 'failed'") == ["broken"]
    assert selected("page_status = 'failed' or route not in ('ocr')") == ["broken", "clean"]
    assert selected("route = 'ocr'", "page") == [("broken", 1), ("looping", 2)]
    assert selected("doc_status = 'done' and flag != 'repetition_loop'", "page") == [
        ("clean", 1),
        ("looping", 1),
    ]
    export(options(tmp_path, "loop", level="page", where="flag = 'repetition_loop'"))
    [page] = rows(tmp_path / "loop")
    assert page["route"] == "ocr" and json.loads(page["extra"])["route_detail"]["scores"]


def test_a_killed_export_leaves_no_duplicates(ledger: Ledger, tmp_path: Path) -> None:
    for doc in ("a", "b", "c"):
        add(ledger, doc, 1)
        finish(ledger, doc, 1)
    dest = tmp_path / "dest"
    export(options(tmp_path, rows_per_file=1))
    assert duck_count(dest) == 3
    # What a kill -9 can leave: a temporary file, and a data file renamed into place whose
    # manifest was never written (here a copy of a real one: its rows would count twice).
    (dest / ".documents-00009.parquet.tmp").write_bytes(b"half a file")
    (dest / "._manifest.json.k2j3.tmp").write_bytes(b"{")
    (dest / ".notes.tmp").write_bytes(b"the user's, not ours")
    shutil.copy(dest / "documents-00000.parquet", dest / "documents-00007.parquet")
    assert duck_count(dest) == 4
    again = export(options(tmp_path, rows_per_file=1))
    assert again.unchanged == 3 and duck_count(dest) == 3
    assert [p.name for p in dest.glob(".*.tmp")] == [".notes.tmp"]
    assert not (dest / "documents-00007.parquet").exists()

    # An index that does not match the manifest (killed between the two): all again.
    (dest / ".index.json.gz").write_bytes(b"not the index")
    redo = export(options(tmp_path, rows_per_file=1))
    assert redo.added == 3 and duck_count(dest) == 3 and len(list(dest.glob("*.parquet"))) == 3


def test_other_options_replace_the_whole_export(ledger: Ledger, tmp_path: Path) -> None:
    add(ledger, "a", 2)
    finish(ledger, "a", 1)
    finish(ledger, "a", 2, status="failed")
    dest = tmp_path / "dest"
    export(options(tmp_path))
    assert len(rows(dest)) == 1
    assert export(options(tmp_path, complete_only=True)).documents == 0
    assert not list(dest.glob("*.parquet"))
    pages = export(options(tmp_path, level="page", format="jsonl"))
    assert pages.rows == 2 and [p.name for p in dest.glob("*-0*")] == ["pages-00001.jsonl.gz"]
    manifest = json.loads((dest / "_manifest.json").read_text("utf-8"))
    assert manifest["options"]["level"] == "page" and manifest["file_format"] == "jsonl"


def test_one_export_at_a_time(ledger: Ledger, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(dest / ".ocrfleet-export.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another ocrfleet export is writing there"):
            export(options(tmp_path))


def test_an_export_reads_while_a_run_writes(ledger: Ledger, tmp_path: Path) -> None:
    add(ledger, "a", 1)
    add(ledger, "b", 1)
    finish(ledger, "a", 1)
    # The run holds the write lock: the export reads its snapshot without waiting for it.
    with ledger.transaction():
        started = time.monotonic()
        assert export(options(tmp_path)).documents == 1
        assert time.monotonic() - started < 30


def test_page_rows_of_a_document_in_progress_follow_its_pages(
    ledger: Ledger, tmp_path: Path
) -> None:
    add(ledger, "long", 3)
    finish(ledger, "long", 1)
    assert export(options(tmp_path, level="page")).rows == 1
    finish(ledger, "long", 2)
    again = export(options(tmp_path, level="page"))
    assert (again.replaced, again.rows) == (1, 2) and duck_count(tmp_path / "dest") == 2


def test_the_dataset_card_names_the_data_files_only(ledger: Ledger, tmp_path: Path) -> None:
    add(ledger, "a", 1)
    finish(ledger, "a", 1)
    dest = tmp_path / "dest"
    export(options(tmp_path, level="page", format="jsonl"))
    card = (dest / "README.md").read_text("utf-8")
    pattern = card.split('data_files: "', 1)[1].split('"', 1)[0]
    matched = sorted(p.name for p in dest.iterdir() if fnmatch(p.name, pattern))
    assert matched == ["pages-00000.jsonl.gz"]  # not _manifest.json
    export(options(tmp_path, level="page"))  # Parquet: no card (pyarrow reads the directory)
    assert not (dest / "README.md").exists() and len(rows(dest)) == 1
    assert len(pq.read_table(dest).to_pylist()) == 1
    (dest / "README.md").write_text("my own card\n", "utf-8")
    export(options(tmp_path, level="page", format="jsonl"))
    assert (dest / "README.md").read_text("utf-8") == "my own card\n"


def test_complete_only_wants_every_page_finished_for_good(ledger: Ledger, tmp_path: Path) -> None:
    add(ledger, "waiting", 2)
    finish(ledger, "waiting", 1)
    finish(ledger, "waiting", 2)
    add(ledger, "whole", 1)
    finish(ledger, "whole", 1, status="blank")
    # A page status of the routing branch (routed to OCR, no OCR engine): finished, not complete.
    db = sqlite3.connect(ledger.path)
    db.execute("PRAGMA ignore_check_constraints = ON")
    with db:
        db.execute("UPDATE pages SET status = 'needs_ocr' WHERE doc_id = 'waiting' AND page = 2")
    db.close()
    everything = export(options(tmp_path, "all"))
    assert everything.documents == 2
    waiting = next(r for r in rows(tmp_path / "all") if r["doc_id"] == "waiting")
    assert (waiting["pages_done"], waiting["pages_other"]) == (1, 1)
    assert export(options(tmp_path, complete_only=True)).documents == 1
    assert [r["doc_id"] for r in rows(tmp_path / "dest")] == ["whole"]


def test_a_document_in_two_outputs_is_taken_once_from_the_one_further_on(
    ledger: Ledger, tmp_path: Path
) -> None:
    add(ledger, "shared", 2)
    finish(ledger, "shared", 1)
    other = Ledger(tmp_path / "other" / "ocrfleet.sqlite")
    other.begin_run("run-2", json.dumps({"engine": {"name": "vllm"}}))
    add(other, "shared", 2)
    finish(other, "shared", 1)
    finish(other, "shared", 2)
    both = ExportOptions(
        outputs=(str(tmp_path / "out"), str(tmp_path / "other")), dest=tmp_path / "d"
    )
    result = export(both)
    assert (result.documents, result.unfinished) == (1, 0)
    [row] = rows(tmp_path / "d")
    assert row["status"] == "done" and row["ledger"].endswith("other/ocrfleet.sqlite")


def test_an_export_killed_mid_write_is_finished_by_the_next(ledger: Ledger, tmp_path: Path) -> None:
    for d in range(400):
        add(ledger, f"doc{d:03d}", 1)
        finish(ledger, f"doc{d:03d}", 1)
    dest = tmp_path / "dest"
    args = ["export", str(tmp_path / "out"), "--to", str(dest), "--rows-per-file", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocrfleet", *args], env=cli_env(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while len(list(dest.glob(".documents-*.tmp"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # killed while writing, not finished
    assert list(dest.glob(".documents-*.tmp")) and not (dest / "_manifest.json").exists()

    result = export(options(tmp_path, rows_per_file=1))
    assert result.added == 400 and duck_count(dest) == 400
    assert not list(dest.glob(".*.tmp")) and len(list(dest.glob("*.parquet"))) == 400
