"""Hostile input files, made on the spot: names, file types and page trees that used to
crash, hang or leak. Each is reported with a reason naming the file; nothing else stops."""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrfleet.names import MAX_NAME_BYTES, assign_names, printable, safe_component
from ocrfleet.sources import (
    discover,
    path_to_text,
    probe_all,
    probe_file,
    text_to_path,
)
from ocrfleet.testing import samples


def _discover_in_thread(inputs: list[str], timeout: float = 20.0) -> tuple[list, list]:  # type: ignore[type-arg]
    """discover + probe, failing the test (not hanging it) if they block."""
    out: dict[str, object] = {}

    def work() -> None:
        files, missing = discover(inputs)
        out["files"], out["missing"] = files, missing
        out["probes"] = probe_all([str(f.path) for f in files if f.problem is None], 1)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "planning blocked on a hostile input"
    return out["files"], out["missing"]  # type: ignore[return-value]


def test_fifo_and_device_symlink_and_symlink_loop_are_reported_never_read(tmp_path: Path) -> None:
    root = tmp_path / "in"
    samples.text_pdf(root / "good.pdf", ["fine"])
    os.mkfifo(root / "pipe.pdf")
    (root / "zero.pdf").symlink_to("/dev/zero")
    (root / "loop.pdf").symlink_to(root / "loop2.pdf")
    (root / "loop2.pdf").symlink_to(root / "loop.pdf")
    (root / "dangling.pdf").symlink_to(root / "nowhere.pdf")
    files, missing = _discover_in_thread([str(root)])
    problems = {f.path.name: f.problem for f in files}
    assert problems["good.pdf"] is None
    assert "FIFO" in str(problems["pipe.pdf"])
    assert "character device" in str(problems["zero.pdf"])
    assert "symlink loop" in str(problems["loop.pdf"])
    assert "symlink to nothing" in str(problems["dangling.pdf"])
    assert missing == []


def test_hostile_paths_given_directly_are_reported_too(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "direct.pdf")
    (tmp_path / "loop.pdf").symlink_to(tmp_path / "loop.pdf")
    files, missing = _discover_in_thread([str(tmp_path / "direct.pdf"), str(tmp_path / "loop.pdf")])
    assert [f.problem is not None for f in files] == [True, True]
    assert missing == []


def test_probe_never_opens_a_fifo_for_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "late.pdf"
    os.mkfifo(fifo)  # e.g. swapped in after discovery: probing must not block on it
    done: dict[str, object] = {}
    thread = threading.Thread(target=lambda: done.update(p=probe_file(str(fifo))), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert "FIFO" in str(done["p"].error)  # type: ignore[attr-defined]


def test_not_a_pdf_names_the_type_and_never_echoes_bytes(tmp_path: Path) -> None:
    secret = b"root:$6$SECRETHASHSECRET:19000:0:99999:7:::\n"
    cases = {
        "elf.pdf": (b"\x7fELF\x02\x01\x01" + secret, "ELF"),
        "zip.pdf": (b"PK\x03\x04" + secret, "ZIP"),
        "shadow.pdf": (secret * 3, "text file"),
        "noise.pdf": (bytes([0x80, 0xFF, 0xFE]) + secret, "unknown type"),
        "png.pdf": (b"\x89PNG\r\n\x1a\n" + secret, "PNG"),
    }
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_bytes(data)
        error = probe_file(str(tmp_path / name)).error or ""
        assert error.startswith("not a PDF") and kind in error, error
        assert "root" not in error and "SECRET" not in error and "\\x" not in error


def _page_bomb(path: Path) -> Path:
    """~400 bytes: a root /Pages that claims /Count 1000000 with a single kid."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1000000 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    body = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 4\n0000000000 65535 f \n"
    body += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    body += b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def test_a_page_tree_claiming_a_million_pages_fails_at_once(tmp_path: Path) -> None:
    bomb = _page_bomb(tmp_path / "bomb.pdf")
    assert bomb.stat().st_size < 1000
    probe = probe_file(str(bomb))
    assert probe.pages == 1_000_000
    assert probe.error is not None and "broken page tree" in probe.error


def test_a_pdf_with_one_bad_page_is_not_failed_whole(tmp_path: Path) -> None:
    path = samples.text_pdf(tmp_path / "ok.pdf", [f"page {i}" for i in range(40)])
    probe = probe_file(str(path))
    assert probe.pages == 40 and probe.error is None


def test_long_greek_title_gets_a_short_unique_traceable_name() -> None:
    title = "Μελέτη για την ιστορία της ελληνικής γλώσσας " * 3  # 126+ characters
    title = title[:126]
    a = PurePosixPath("docs") / title
    b = PurePosixPath("docs") / (title[:-1] + "Ω")  # differs only past the cut
    names = assign_names([("a" * 64, a), ("b" * 64, b)])
    for name in names.values():
        last = name.name
        assert len((last + "_figures").encode()) <= 255 and len(last.encode()) <= MAX_NAME_BYTES
        assert last.startswith(title[:40])
    assert names["a" * 64] != names["b" * 64]


def test_non_utf8_names_become_valid_distinct_names_and_round_trip(tmp_path: Path) -> None:
    raw_a = os.fsdecode(b"caf\xe9.pdf")  # Latin-1 é
    raw_b = os.fsdecode(b"caf\xe8.pdf")
    a, b = safe_component(raw_a), safe_component(raw_b)
    a.encode("utf-8")  # valid UTF-8 (would raise otherwise)
    assert a != b and "\ufffd" in a
    assert printable(raw_a) == "caf\\xe9.pdf"
    stored = path_to_text(str(tmp_path / raw_a))
    stored.encode("utf-8")
    assert text_to_path(stored) == str(tmp_path / raw_a)
    assert path_to_text("/plain/ascii.pdf") == "/plain/ascii.pdf"


@pytest.mark.parametrize("count", [1, 3])
def test_names_taken_in_the_ledger_are_never_handed_out_again(count: int) -> None:
    rel = PurePosixPath("report")
    taken = {"report": "old" + "0" * 61}
    names = assign_names([(f"{i:064x}", rel) for i in range(count)], taken)
    assert all(str(n) != "report" for n in names.values())
    assert len({str(n).casefold() for n in names.values()}) == count


_name_chars = st.one_of(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    st.sampled_from([os.fsdecode(bytes([b])) for b in (0x80, 0xE9, 0xFF)]),  # bad UTF-8
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(_name_chars, min_size=1, max_size=180), min_size=1, max_size=12))
def test_every_name_is_distinct_valid_and_short_enough(names: list[str]) -> None:
    entries = [(f"{i:064x}", PurePosixPath("dir") / n) for i, n in enumerate(names)]
    assigned = assign_names(entries)
    folded = [str(p).casefold() for p in assigned.values()]
    assert len(set(folded)) == len(entries)
    for path in assigned.values():
        path.name.encode("utf-8")  # storable in SQLite, JSON and logs
        assert len((path.name + "_figures").encode()) <= 255
    assert assign_names(list(reversed(entries))) == assigned  # every shard agrees


def test_a_page_bomb_fails_in_one_line_with_a_small_ledger(tmp_path: Path) -> None:
    from .conftest import run_cli

    _page_bomb(tmp_path / "in" / "bomb.pdf")
    samples.text_pdf(tmp_path / "in" / "fine.pdf", ["fine"])
    out = tmp_path / "out"
    result = run_cli("run", str(tmp_path / "in"), "-o", str(out), "--engine", "text", timeout=120)
    assert result.returncode == 1, result.stderr
    assert "bomb.pdf: broken page tree" in result.stdout  # results go to stdout
    assert (out / "ocrfleet.sqlite").stat().st_size < 2_000_000
    assert (out / "markdown" / "fine.md").exists()


def _broken_tree(path: Path, real: int, claimed: int) -> Path:
    """A PDF whose page tree holds `real` pages and claims `claimed` (missing kids)."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for _ in range(real):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>")
        kids.append(b"%d 0 R" % len(objects))
    kids += [b"%d 0 R" % (100_000 + i) for i in range(claimed - real)]
    objects[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % claimed
    body, offsets = b"%PDF-1.4\n", []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def test_a_page_tree_broken_past_the_sample_fails_the_rest_in_bulk(tmp_path: Path) -> None:
    import json

    from .conftest import read_records, run_cli

    # 200 of 300 pages load: the probe's sample passes, the run meets 100 missing pages.
    pdf = _broken_tree(tmp_path / "in" / "tree.pdf", 200, 300)
    assert probe_file(str(pdf)).error is None
    out = tmp_path / "out"
    result = run_cli("run", str(pdf), "-o", str(out), "--engine", "text", timeout=240)
    assert result.returncode == 1, result.stderr
    records = read_records(out)
    assert [r["page"] for r in records] == list(range(1, 301))
    bulk = [r for r in records if "in a row" in r.get("error", "")]
    # Only pages past the 200 that load are failed in bulk (which ones exactly depends on
    # the order the failures come back in; pages a worker held fail on their own).
    assert len(bulk) > 60 and all(r["page"] > 200 for r in bulk)
    assert all(r["status"] == "blank" for r in records[:200])
    summary = json.loads((out / "run-summary.json").read_text("utf-8"))
    assert summary["this_run"]["pages_processed"] < 240  # the rest never rendered


def test_a_file_unreadable_for_a_moment_keeps_its_document_and_pages(tmp_path: Path) -> None:
    """A read error at planning (NFS hiccup, permissions) says nothing about the bytes: the
    document and its finished pages stay, and the failed probe is not cached."""
    from ocrfleet.catalog import reconcile
    from ocrfleet.ledger import Ledger
    from ocrfleet.ledger_rows import NewDocument
    from ocrfleet.sources import path_id

    ledger = Ledger(tmp_path / "ocrfleet.sqlite")
    ledger.add_documents([NewDocument("a" * 64, "x.pdf", "/c/x.pdf", "x", 10, 3)])
    assert reconcile(ledger, {"/c/x.pdf": path_id("/c/x.pdf")}, {}) == (0, 0)
    assert len(ledger.stored_pages("a" * 64)) == 3
    # Other readable bytes at the same path do retire it (a file edited in place).
    assert reconcile(ledger, {"/c/x.pdf": "b" * 64}, {}) == (1, 0)
    ledger.close()


def test_failing_a_broken_page_tree_leaves_pages_a_worker_holds(tmp_path: Path) -> None:
    from ocrfleet.ledger import Ledger
    from ocrfleet.ledger_rows import NewDocument
    from ocrfleet.page_tree import fail_after

    ledger = Ledger(tmp_path / "ocrfleet.sqlite")
    ledger.add_documents([NewDocument("d" * 64, "x.pdf", "/c/x.pdf", "x", 10, 5)])
    held = ledger.claim("worker-1", 2, 120.0, suspect=False)
    assert [c.page for c in held] == [1, 2]
    assert fail_after(ledger, "d" * 64, 0, "not tried: broken page tree") == 3
    statuses = {p.page: p.status for p in ledger.stored_pages("d" * 64)}
    assert statuses == {1: "pending", 2: "pending", 3: "failed", 4: "failed", 5: "failed"}
    ledger.close()
