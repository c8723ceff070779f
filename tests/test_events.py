"""Worker events are typed: what a worker sends down its pipe comes back as the same dataclass,
and the run's statistics are counted from them."""

from __future__ import annotations

import multiprocessing

import pytest

from ocrfleet.events import (
    DocumentFinished,
    EngineReady,
    PageFinished,
    WorkerEvent,
    decode,
    encode,
)
from ocrfleet.telemetry import RunStats

EVENTS: list[WorkerEvent] = [
    EngineReady(capacity=12, engine={"name": "text"}),
    PageFinished("done", True, prompt_tokens=5, output_tokens=40, infer_seconds=0.5),
    PageFinished("failed", False),
    DocumentFinished("done", "a/έκθεση.pdf"),
]


def test_every_event_crosses_a_real_pipe_unchanged() -> None:
    parent, child = multiprocessing.Pipe()
    for event in EVENTS:
        child.send(encode(event))
        assert decode(parent.recv()) == event
    parent.close()
    child.close()


@pytest.mark.parametrize("message", [{"kind": "starting"}, {"kind": "slot_gave_up"}, "page", {}])
def test_anything_else_is_refused_by_name(message: object) -> None:
    with pytest.raises(ValueError, match="not a worker event"):
        decode(message)


def test_a_known_kind_with_a_field_missing_is_refused_not_a_crash() -> None:
    message = encode(EVENTS[0])
    message.pop(next(k for k in message if k != "kind"))
    with pytest.raises(ValueError, match="not a"):
        decode(message)


def test_run_statistics_count_stored_pages_documents_and_the_first_engine() -> None:
    stats = RunStats()
    for event in EVENTS:
        stats.add(event)
    assert stats.pages == 1 and stats.statuses["done"] == 1
    assert stats.output_tokens == 40 and stats.prompt_tokens == 5
    assert stats.stage_seconds["infer_seconds"] == 0.5
    assert stats.documents["done"] == 1 and stats.engines == [{"name": "text"}]
