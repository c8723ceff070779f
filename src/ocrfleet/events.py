"""What an engine worker tells its supervisor, one dataclass per kind of event.

A worker process sends `encode(event)` down its pipe and the supervisor reads it back with
`decode`: the wire format (a plain dict with a "kind") is known here only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class EngineReady:
    """The worker's engine started and takes pages."""

    capacity: int  # pages the worker keeps in flight
    engine: dict[str, Any]  # the engine's own description (OcrEngine.describe)


@dataclass(frozen=True)
class PageFinished:
    """A page reached a final status; `stored` is False when another worker's copy won."""

    status: str
    stored: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    render_seconds: float = 0.0
    queue_seconds: float = 0.0
    infer_seconds: float = 0.0
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class DocumentFinished:
    """A document's last page landed and its Markdown was assembled (or it failed)."""

    status: str
    source: str


WorkerEvent = EngineReady | PageFinished | DocumentFinished
EventSink = Callable[[WorkerEvent], None]

KINDS: dict[str, type[WorkerEvent]] = {
    "engine_ready": EngineReady,
    "page": PageFinished,
    "document": DocumentFinished,
}
_KIND_OF = {cls: kind for kind, cls in KINDS.items()}


def encode(event: WorkerEvent) -> dict[str, Any]:
    """The event as a plain dict for the pipe."""
    return {"kind": _KIND_OF[type(event)], **asdict(event)}


def decode(message: object) -> WorkerEvent:
    """An event from what `encode` made; ValueError for anything else."""
    if not isinstance(message, dict) or message.get("kind") not in KINDS:
        kind = message.get("kind") if isinstance(message, dict) else type(message).__name__
        raise ValueError(f"not a worker event: {kind!r}")
    cls = KINDS[message["kind"]]
    try:
        return cls(**{f.name: message[f.name] for f in fields(cls) if f.name in message})
    except TypeError as exc:  # a field missing: a worker of another version
        raise ValueError(f"not a {message['kind']!r} event: {exc}") from None
