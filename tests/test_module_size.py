"""No module over 500 lines (issue 16): a module that grows past it has two jobs."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ocrfleet"
LIMIT = 500


def test_every_module_is_under_the_limit() -> None:
    over = {
        str(path.relative_to(SRC)): n
        for path in sorted(SRC.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert over == {}, f"split these by job: {over}"
