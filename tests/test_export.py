"""`ocrfleet export` end to end: real runs (text engine, real PDFs), real ledgers, the real CLI,
read back with pyarrow and DuckDB, and counted against the ledgers."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from ocrfleet.testing import samples
from tests.conftest import Corpus, run_cli

SCRIPTED = ["--engine", "tests.fakes:scripted"]


def run_text(inputs: Path, out: Path | str, *extra: str) -> None:
    result = run_cli("run", str(inputs), "-o", str(out), "--engine", "text", *extra)
    assert result.returncode == 0, result.stderr


def export(*args: str) -> dict[str, Any]:
    result = run_cli("export", *args, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def ledger_counts(out: Path) -> dict[str, int]:
    """Documents and finished pages, straight from every ledger of OUT."""
    docs = pages = 0
    for path in sorted(out.glob("ocrfleet*.sqlite")):
        db = sqlite3.connect(path)
        docs += db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        pages += db.execute("SELECT COUNT(*) FROM pages WHERE status != 'pending'").fetchone()[0]
        db.close()
    return {"documents": docs, "pages": pages}


def one(query: str) -> Any:
    """The first column of the only row DuckDB returns."""
    rows = duckdb.sql(query).fetchall()
    assert len(rows) == 1, rows
    return rows[0][0]


def count(query: str) -> int:
    return int(one(query))


def manifest(dest: Path) -> dict[str, Any]:
    return dict(json.loads((dest / "_manifest.json").read_text("utf-8")))


def test_greek_corpus_to_parquet_documents_and_pages(greek_corpus: Corpus, tmp_path: Path) -> None:
    out, docs, pages = tmp_path / "out", tmp_path / "docs", tmp_path / "pages"
    run_text(greek_corpus.root, out)
    counts = ledger_counts(out)
    assert counts == {"documents": 3, "pages": 8}

    result = export(str(out), "--to", str(docs))
    assert result["documents"] == result["rows"] == result["added"] == counts["documents"]
    assert count(f"SELECT count(*) FROM '{docs}/*.parquet'") == counts["documents"]
    table = pq.read_table(docs / "documents-00000.parquet")
    assert table.schema.metadata[b"ocrfleet_export_schema"] == b"1"
    assert pq.ParquetFile(docs / "documents-00000.parquet").metadata.row_group(0).column(
        0
    ).compression == ("ZSTD")
    rows = {Path(r["source"][0]).name: r for r in table.to_pylist()}
    mixed = rows["Μελέτη με κενά 'και' \"εισαγωγικά\".pdf"]
    assert mixed["pages"] == 3 and mixed["status"] == "done"
    assert (mixed["pages_done"], mixed["pages_blank"], mixed["pages_failed"]) == (2, 1, 0)
    assert [p["status"] for p in mixed["page_records"]] == ["done", "blank", "done"]
    assert mixed["page_records"][2]["quality_flags"] == ["empty_output"]
    assert mixed["page_records"][0]["engine"] == "text" and mixed["engine"] == "text"
    assert mixed["text"].count("<!-- page ") == 3 and "σαρώθηκαν" in mixed["text"]
    assert mixed["text"] == (
        out / "markdown" / f"{Path(mixed['output']).with_suffix('')}.md"
    ).read_text("utf-8")
    assert mixed["run_id"] and json.loads(mixed["settings"])["engine"]["name"] == "text"
    # One shape for every run, old ledgers' flat one: each setting at the top.
    settings = json.loads(mixed["settings"])
    assert settings["dpi"] == 144 and settings["gpus"] == []
    assert not {"render", "policy", "fleet", "sync"} & set(settings)
    assert mixed["model"] is None  # no page went through a model
    assert count(f"SELECT sum(pages) FROM '{docs}/*.parquet'") == 8
    assert (
        count(
            f"SELECT count(*) FROM (SELECT unnest(page_records) AS p FROM '{docs}/*.parquet') "
            "WHERE list_contains(p.quality_flags, 'blank')"
        )
        == 1
    )
    m = manifest(docs)
    assert m["schema_version"] == 1 and m["rows"] == 3 and m["documents"] == 3
    assert [f["path"] for f in m["files"]] == ["documents-00000.parquet"]
    assert m["sources"][0]["ledger"] == "ocrfleet.sqlite" and m["source_runs"] == [mixed["run_id"]]

    export(str(out), "--to", str(pages), "--level", "page")
    assert count(f"SELECT count(*) FROM '{pages}/*.parquet'") == counts["pages"]
    assert "ελληνικής" in one(
        f"SELECT text FROM '{pages}/*.parquet' WHERE source LIKE '%a/report.pdf' AND page = 1"
    )
    jsonl = {(r["source"], r["page"]): r for r in read_page_jsonl(out)}
    for row in pq.read_table(pages).to_pylist():
        record = jsonl[(row["source"], row["page"])]
        for name in ("doc_id", "status", "text", "engine", "quality_flags", "output_tokens"):
            assert row[name] == record.get(name), name


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_page_jsonl(out: Path) -> list[dict[str, Any]]:
    lines = [line for p in (out / "pages").rglob("*.jsonl") for line in p.read_text().splitlines()]
    return [json.loads(line) for line in lines if line]


def test_jsonl_pages_split_by_rows_per_file_and_filtered(
    greek_corpus: Corpus, tmp_path: Path
) -> None:
    out, dest = tmp_path / "out", tmp_path / "dest"
    run_text(greek_corpus.root, out)
    export(
        str(out), "--to", str(dest), "--level", "page", "--format", "jsonl", "--rows-per-file", "2"
    )
    files = sorted(dest.glob("*.jsonl.gz"))
    assert len(files) == 3  # 3 documents of 3, 2 and 3 pages: one file each (never split)
    per_file = [read_jsonl_gz(f) for f in files]
    assert all(len({r["doc_id"] for r in rows}) == 1 for rows in per_file)
    assert count(f"SELECT count(*) FROM read_json_auto('{dest}/*.jsonl.gz')") == 8
    assert [f["rows"] for f in manifest(dest)["files"]] == [len(rows) for rows in per_file]

    flagged = tmp_path / "flagged"
    export(
        str(out),
        "--to",
        str(flagged),
        "--level",
        "page",
        "--format",
        "jsonl",
        "--where",
        "flag = 'empty_output' or status = 'blank'",
    )
    selected = sorted(
        (Path(row["source"]).parent.name, row["page"], row["status"])
        for f in flagged.glob("*.jsonl.gz")
        for row in read_jsonl_gz(f)
    )
    # the two scanned pages of b/report.pdf and the mixed document's scan and blank page
    assert selected == [("b", 1, "done"), ("b", 2, "done"), ("in", 2, "blank"), ("in", 3, "done")]


def test_failed_pages_marked_or_left_out_then_replaced_after_a_retry(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    for k, name in enumerate(("a", "b", "c")):
        samples.text_pdf(inputs / f"{name}.pdf", [samples.paragraph(k + i) for i in range(2)])
    shutil.copy(inputs / "a.pdf", inputs / "copy of a.pdf")  # the same bytes: one document
    (inputs / "empty.pdf").write_bytes(b"")  # unreadable: a failed document with no pages
    failing = ["--vllm-arg", 'script={"2": ["error", "error"]}', "--max-attempts", "2"]
    first = run_cli("run", str(inputs), "-o", str(out), *SCRIPTED, *failing)
    assert first.returncode == 1, first.stderr  # page 2 of every document failed
    dest, complete = tmp_path / "dest", tmp_path / "complete"
    one_per_file = ("--rows-per-file", "1")
    assert export(str(out), "--to", str(dest), *one_per_file)["added"] == 4
    rows = pq.read_table(dest).to_pylist()
    [empty] = [r for r in rows if r["pages"] == 0]
    assert empty["status"] == "failed" and "empty.pdf" in empty["source"][0] and empty["error"]
    assert empty["text"] == "" and empty["page_records"] == []
    rows.remove(empty)
    assert {r["status"] for r in rows} == {"failed"}
    assert all(r["pages_failed"] == 1 and "page(s) failed" in r["error"] for r in rows)
    assert all("<!-- page 2 / 2: failed: engine error: scripted error" in r["text"] for r in rows)
    assert [p["status"] for p in rows[0]["page_records"]] == ["done", "failed"]
    sources = sorted(sorted(Path(s).name for s in r["source"]) for r in rows)
    assert sources == [["a.pdf", "copy of a.pdf"], ["b.pdf"], ["c.pdf"]]
    assert export(str(out), "--to", str(complete), "--complete-only")["left_out"] == 4
    assert not list(complete.glob("*.parquet")) and manifest(complete)["rows"] == 0

    # The failures are retried (the engine works this time) and a new document arrives.
    samples.text_pdf(inputs / "d.pdf", [samples.paragraph(5)])
    keep = sorted(p.name for p in dest.glob("*.parquet"))
    retry = run_cli("run", str(inputs), "-o", str(out), *SCRIPTED, "--retry-failed")
    assert retry.returncode == 1 and "empty.pdf" in retry.stdout  # still unreadable
    again = export(str(out), "--to", str(dest), *one_per_file)
    assert (again["added"], again["replaced"], again["unchanged"]) == (1, 3, 1)
    assert count(f"SELECT count(*) FROM '{dest}/*.parquet'") == 5 == ledger_counts(out)["documents"]
    assert count(f"SELECT count(DISTINCT doc_id) FROM '{dest}/*.parquet'") == 5
    assert count(f"SELECT count(*) FROM '{dest}/*.parquet' WHERE status = 'done'") == 4
    # the three replaced documents' old files are gone; the empty PDF's file stayed
    assert len(set(keep) & {p.name for p in dest.glob("*.parquet")}) == 1
    complete_again = export(str(out), "--to", str(complete), "--complete-only")
    assert complete_again["added"] == 4 and complete_again["left_out"] == 1

    # Nothing changed: nothing is rewritten.
    before = {p.name: p.stat().st_mtime_ns for p in dest.glob("*.parquet")}
    same = export(str(out), "--to", str(dest), *one_per_file)
    assert (same["added"], same["replaced"], same["unchanged"]) == (0, 0, 5)
    assert {p.name: p.stat().st_mtime_ns for p in dest.glob("*.parquet")} == before


def test_two_shards_are_one_export(greek_corpus: Corpus, tmp_path: Path) -> None:
    out, dest = tmp_path / "out", tmp_path / "dest"
    for index in ("0", "1"):
        run_text(greek_corpus.root, out, "--num-shards", "2", "--shard-index", index)
    assert len(list(out.glob("ocrfleet*.sqlite"))) == 2
    counts = ledger_counts(out)
    export(str(out), "--to", str(dest))
    assert count(f"SELECT count(*) FROM '{dest}/*.parquet'") == counts["documents"] == 3
    pages = tmp_path / "pages"
    export(str(out), "--to", str(pages), "--level", "page")
    assert count(f"SELECT count(*) FROM '{pages}/*.parquet'") == counts["pages"] == 8
    sources = manifest(dest)["sources"]
    assert sorted(s["ledger"] for s in sources) == [
        "ocrfleet.shard-0-of-2.sqlite",
        "ocrfleet.shard-1-of-2.sqlite",
    ]
    assert len(manifest(dest)["source_runs"]) == 2


def test_export_from_an_s3_output(bucket: str, tmp_path: Path) -> None:
    from ocrfleet.s3_client import make_filesystem

    inputs = tmp_path / "in"
    samples.text_pdf(inputs / "a" / "έκθεση.pdf", [samples.paragraph(0), samples.paragraph(1)])
    samples.text_pdf(inputs / "b" / "report.pdf", [samples.paragraph(2, greek=False)])
    remote = f"s3://{bucket}/out"
    run_text(inputs, remote, "--work-dir", str(tmp_path / "node"))
    checkpoint = tmp_path / "checkpoint.sqlite"
    make_filesystem().get_file(f"{bucket}/out/ledger/ocrfleet.sqlite", str(checkpoint))
    db = sqlite3.connect(checkpoint)
    documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    db.close()

    dest = tmp_path / "dest"
    result = export(remote, "--to", str(dest))
    assert result["documents"] == documents == 2
    assert count(f"SELECT count(*) FROM '{dest}/*.parquet'") == documents
    assert "ελληνικής" in one(
        f"SELECT text FROM '{dest}/*.parquet' WHERE source[1] LIKE '%έκθεση.pdf'"
    )
    assert manifest(dest)["sources"][0]["output"] == remote

    missing = run_cli("export", f"s3://{bucket}/nothing-here", "--to", str(tmp_path / "x"))
    assert missing.returncode == 2 and "no ocrfleet ledger checkpoint" in missing.stderr


def test_parquet_without_pyarrow_says_how_to_install(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "in" / "a.pdf", ["Καλό έγγραφο."])
    out = tmp_path / "out"
    run_text(tmp_path / "in", out)
    blocker = tmp_path / "no-pyarrow"
    (blocker / "pyarrow").mkdir(parents=True)
    (blocker / "pyarrow" / "__init__.py").write_text("raise ImportError('pyarrow is not here')\n")
    import os
    import subprocess
    import sys

    from tests.conftest import cli_env

    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ocrfleet", "export", str(out), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    refused = cli("--to", str(tmp_path / "dest"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "ocrfleet: --format parquet needs pyarrow: pip install 'ocrfleet[parquet]' "
        "(or uv sync --extra parquet); --format jsonl needs nothing more"
    ]
    assert not list((tmp_path / "dest").glob("*")) if (tmp_path / "dest").exists() else True
    assert cli("--to", str(tmp_path / "jsonl"), "--format", "jsonl").returncode == 0
    assert len(list((tmp_path / "jsonl").glob("*.jsonl.gz"))) == 1


def test_bad_arguments_are_one_line_each(tmp_path: Path) -> None:
    def where(text: str) -> list[str]:
        bad = run_cli("export", str(tmp_path), "--to", str(tmp_path / "d"), "--where", text)
        assert bad.returncode == 2
        return bad.stderr.strip().splitlines()

    assert where("flg = 'x'") == [
        "ocrfleet: --where \"flg = 'x'\": expected a field (status, page_status, doc_status, "
        "route, flag, engine), got 'flg' (e.g. \"status = 'done' and flag != 'repetition_loop'\")"
    ]
    assert where("status = 1") == [
        "ocrfleet: --where 'status = 1': cannot read '1' (character 10); values are 'quoted', "
        "e.g. \"status = 'done'\""
    ]
    no_ledger = run_cli("export", str(tmp_path / "nowhere"), "--to", str(tmp_path / "d"))
    assert no_ledger.returncode == 2
    assert no_ledger.stderr.strip() == (
        f"ocrfleet: no ocrfleet ledger in {tmp_path / 'nowhere'} (expected ocrfleet*.sqlite)"
    )
