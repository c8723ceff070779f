"""One output directory, one way of sharding it.

A sharded run and an unsharded one (or two runs split into different numbers of shards)
on the same OUT would each plan the whole corpus into their own ledger: the work is done
twice and `status` adds both up. The first run to use OUT records its shard count there;
any other count is refused before a ledger is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path

from .errors import ConfigError
from .layout import LEDGER_NAME, OutputLayout


def describe(num_shards: int) -> str:
    return "an unsharded run" if num_shards == 1 else f"a run split into {num_shards} shards"


def ledger_layouts(output_dir: Path) -> set[int]:
    """Shard counts of the ledgers already in OUT (1 for an unsharded one)."""
    counts: set[int] = set()
    for path in OutputLayout(output_dir).ledgers():
        match = LEDGER_NAME.match(path.name)
        if match:
            counts.add(int(match.group(2) or 1))
    return counts


def check_layout(output_dir: Path, num_shards: int) -> None:
    """Refuse a run whose sharding differs from what OUT already holds; record it if new."""
    try:
        _check_layout(output_dir, num_shards)
    except OSError as exc:  # OUT is a file, or not writable: one line, not a traceback
        raise ConfigError(
            f"cannot use {output_dir} as the output directory: {exc.strerror or exc}"
        ) from exc


def _check_layout(output_dir: Path, num_shards: int) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    layout = OutputLayout(output_dir)
    marker = layout.layout_marker
    with layout.layout_lock.open("a+", encoding="utf-8") as lock:
        # Held for a moment only: two shards starting together agree on one layout.
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        layouts = ledger_layouts(output_dir)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            layouts.add(int(json.loads(marker.read_text("utf-8"))["num_shards"]))
        others = sorted(layouts - {num_shards})
        if others:
            raise ConfigError(
                f"{output_dir} already holds {describe(others[0])}; {describe(num_shards)} "
                "there would redo its documents: use the same --num-shards, or another "
                "--output-dir"
            )
        if not marker.exists():
            marker.write_text(json.dumps({"num_shards": num_shards}) + "\n", encoding="utf-8")
