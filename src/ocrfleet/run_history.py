"""Run history: every run's summary is kept in OUT/runs/, and run-summary.json, which
describes the corpus as it stands, also carries the last run that processed pages, so a
no-op re-run does not hide the numbers of the run that did the work.
"""

from __future__ import annotations

from .ledger import Ledger
from .run_summary import LastRun, ThisRun


def last_run_with_pages(ledger: Ledger, run_id: str, this_run: ThisRun) -> LastRun | None:
    """This run's numbers if it processed pages, else those of the latest run that did."""
    if this_run.pages_processed:
        return LastRun(run_id, this_run)
    for earlier_id, earlier in ledger.run_summaries():
        earlier_run = ThisRun.from_json(earlier.get("this_run"))
        if earlier_run.pages_processed:
            return LastRun(earlier_id, earlier_run)
    return None
