"""Run history: every run's summary is kept in OUT/runs/, and run-summary.json, which
describes the corpus as it stands, also carries the last run that processed pages, so a
no-op re-run does not hide the numbers of the run that did the work.
"""

from __future__ import annotations

from typing import Any

from .ledger import Ledger


def last_run_with_pages(
    ledger: Ledger, run_id: str, summary: dict[str, Any]
) -> dict[str, Any] | None:
    """This run's numbers if it processed pages, else those of the latest run that did."""
    this_run = summary.get("this_run") or {}
    if this_run.get("pages_processed"):
        return {"run_id": run_id, **this_run}
    for earlier_id, earlier in ledger.run_summaries():
        earlier_run = earlier.get("this_run") or {}
        if earlier_run.get("pages_processed"):
            return {"run_id": earlier_id, **earlier_run}
    return None
