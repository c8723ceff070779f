"""Split a corpus into shards: each document in exactly one, and never moved once assigned.

A document's shard is a function of its id alone (a hash of its content id modulo the shard
count), so every node, tmux pane or SLURM array task computes the same split with no
coordination, whenever it starts: a file that arrives between two shards' runs lands in one
shard and moves no other document. Balance is statistical (documents, not pages): the price
of stability, and close enough at corpus scale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def shard_of(doc_id: str, num_shards: int) -> int:
    """The shard of one document: stable for a given id and shard count."""
    if num_shards < 1:
        raise ValueError("num_shards must be at least 1")
    # Hash the id again: ids of unreadable files are not hex, and a second hash spreads any id.
    digest = hashlib.sha256(doc_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def assign_shards(docs: Sequence[tuple[str, int]], num_shards: int) -> dict[str, int]:
    """Map doc_id → shard index for (doc_id, page_count) pairs (page counts are not used:
    a split balanced by pages would move documents whenever the corpus grows)."""
    if num_shards < 1:
        raise ValueError("num_shards must be at least 1")
    return {doc_id: shard_of(doc_id, num_shards) for doc_id, _pages in docs}


def shard_loads(assignment: dict[str, int], pages: dict[str, int], num_shards: int) -> list[int]:
    """Pages per shard, for reports and tests."""
    loads = [0] * num_shards
    for doc_id, shard in assignment.items():
        loads[shard] += max(pages[doc_id], 1)
    return loads
