"""One place knows the output directory's layout: layout.OutputLayout."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ocrfleet.layout import (
    LEDGER_NAME,
    SHARD_LEDGER_NAME,
    OutputLayout,
    is_ledger_file,
    ledger_name,
    shard_ledger_glob,
    shard_suffix,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "ocrfleet"
# Fragments of file names under OUT: only layout.py may spell them.
NAME_FRAGMENT = re.compile(
    r"run-summary|report\.html|run\.log|ray-job|\.sqlite|\.shard-|_figures"
    r"|^\.ocrfleet(?:$|-(?:layout|upload|checkpoint|inputs))"
    r"|^manifest|^worker-|^\.(?:log|out)$|^(?:logs|pages|markdown)/[\w*./-]*[*.]"
)
# Directories under OUT, caught where a path is built with them (`x / "logs"`): as words
# they are also JSON keys and prompt names.
DIR_NAMES = {"logs", "pages", "markdown"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def layout_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every string that spells a path under OUT. Prose (docstrings,
    help and log messages: any string with a space) names files for people, not code."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and right.value in DIR_NAMES:
                found.append((node.lineno, str(right.value)))
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in skip or re.search(r"\s", node.value):
            continue
        if NAME_FRAGMENT.search(node.value):
            found.append((node.lineno, node.value))
    return found


def test_no_module_but_layout_spells_a_path_under_out() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {literal!r}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "layout.py"
        for line, literal in layout_literals(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "ask layout.OutputLayout instead:\n" + "\n".join(offenders)


def test_the_scan_finds_each_kind_of_literal() -> None:
    # The guard above is only as good as this: each way of spelling a path is caught.
    source = '''
"""Docstring naming run-summary.json is prose."""
a = out / "logs" / "run.log"
b = out / f"run-summary{suffix}.json"
c = out / "report.html"
d = f"worker-{slot}.out"
e = out / "markdown" / rel
f = "ocrfleet*.sqlite"
g = f"{rel}_figures"
h = f"manifest{suffix}.jsonl"
i = log.info("see logs/worker-1.log and run-summary.json")
j = out / f".ocrfleet{suffix}.lock"
k = "pages/s"
l = out / ".ocrfleet-inputs"
'''
    lines = sorted({line for line, _ in layout_literals(source)})
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10, 12, 14]


def test_every_path_under_out(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path)
    rel = "a/Μελέτη 1"
    assert layout.markdown(rel) == tmp_path / "markdown" / "a" / "Μελέτη 1.md"
    assert layout.pages(rel) == tmp_path / "pages" / "a" / "Μελέτη 1.jsonl"
    assert layout.figure(rel, 3, 0) == tmp_path / "markdown/a/Μελέτη 1_figures/p0003_0.jpg"
    assert (
        layout.figure_link(rel, 3, 0)
        == "%CE%9C%CE%B5%CE%BB%CE%AD%CF%84%CE%B7%201_figures/p0003_0.jpg"
    )
    assert layout.summary() == tmp_path / "run-summary.json"
    assert layout.summary(".shard-1-of-4") == tmp_path / "run-summary.shard-1-of-4.json"
    assert layout.history("R1", ".shard-1-of-4") == tmp_path / "runs" / "R1.shard-1-of-4.json"
    assert layout.manifest(".shard-1-of-4") == tmp_path / "manifest.shard-1-of-4.jsonl"
    assert layout.report == tmp_path / "report.html"
    assert layout.run_log == tmp_path / "logs" / "run.log"
    assert layout.worker_log(2) == tmp_path / "logs" / "worker-2.log"
    assert layout.worker_out(2) == tmp_path / "logs" / "worker-2.out"
    assert layout.shard_log(4, 1) == tmp_path / "logs" / "shard-1-of-4.log"
    assert layout.run_lock(".shard-1-of-4") == tmp_path / ".ocrfleet.shard-1-of-4.lock"
    assert layout.staging_dir == tmp_path / ".ocrfleet-inputs"
    assert layout.ledger(1, 0) == tmp_path / "ocrfleet.sqlite"
    assert layout.ledger(4, 1) == tmp_path / "ocrfleet.shard-1-of-4.sqlite"


def test_ledger_names_and_their_patterns_agree(tmp_path: Path) -> None:
    assert shard_suffix(1, 0) == "" and shard_suffix(4, 3) == ".shard-3-of-4"
    for shards, index in ((1, 0), (4, 3)):
        name = ledger_name(shards, index)
        match = LEDGER_NAME.match(name)
        assert match is not None and int(match.group(2) or 1) == shards
        assert is_ledger_file(name) and is_ledger_file(name + "-wal")
    assert SHARD_LEDGER_NAME.match(ledger_name(1, 0)) is None
    layout = OutputLayout(tmp_path)
    for shards, index in ((4, 0), (4, 1), (2, 0)):
        layout.ledger(shards, index).touch()
    (tmp_path / "notes.sqlite").touch()
    assert [p.name for p in layout.ledgers()] == [
        "ocrfleet.shard-0-of-2.sqlite",
        "ocrfleet.shard-0-of-4.sqlite",
        "ocrfleet.shard-1-of-4.sqlite",
    ]
    assert sorted(p.name for p in tmp_path.glob(shard_ledger_glob(4))) == [
        "ocrfleet.shard-0-of-4.sqlite",
        "ocrfleet.shard-1-of-4.sqlite",
    ]
    assert not is_ledger_file("report.html")
