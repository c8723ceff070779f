"""Output names: one distinct, writable, traceable path under OUT for every input path.

A name mirrors where the PDF sat in its input. Three things can make that impossible, and
each is solved the same way, by a short hash of what was lost, so the name stays unique and
traceable to its source (the manifest lists every source with its output):
- two inputs want the same name (case-insensitively): the later ones get `__<id>`;
- a file name is not valid UTF-8: undecodable bytes become U+FFFD, plus a hash of the bytes;
- a name is too long once `.jsonl` or `_figures` is added (255 bytes on most filesystems):
  it is cut at a character boundary, plus a hash of the whole name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import PurePosixPath

# The longest suffix a writer adds to a document's name is "_figures" (8 bytes); the rest
# of a 255-byte file-name limit leaves room for it, with a margin for "__<hash>" suffixes.
MAX_NAME_BYTES = 200
HASH_CHARS = 12


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_CHARS]


def printable(text: str) -> str:
    """A str that encodes to UTF-8: bytes of a non-UTF-8 file name shown as \\xNN (for
    sources, logs and the ledger; the file itself is opened by its real name)."""
    raw = text.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def safe_component(name: str, *, limit: int = MAX_NAME_BYTES) -> str:
    """One path component that is valid UTF-8 and at most `limit` bytes."""
    raw = name.encode("utf-8", "surrogateescape")
    lossy = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text, lossy = raw.decode("utf-8", "replace"), True
    if not lossy and len(raw) <= limit:
        return text
    suffix = "__" + hashlib.sha256(raw).hexdigest()[:HASH_CHARS]
    budget = limit - len(suffix)
    cut = text.encode("utf-8")[:budget].decode("utf-8", "ignore")  # never half a character
    return cut + suffix


def safe_rel(rel: PurePosixPath) -> PurePosixPath:
    return PurePosixPath(*(safe_component(part) for part in rel.parts))


def with_suffix_tag(rel: PurePosixPath, tag: str) -> PurePosixPath:
    """rel with `__tag` appended to its last part, still within the length limit."""
    limit = MAX_NAME_BYTES - len(tag) - 2
    name = safe_component(rel.name, limit=limit)
    return rel.with_name(f"{name}__{tag}")


def assign_names(
    entries: Sequence[tuple[str, PurePosixPath]], taken: dict[str, str] | None = None
) -> dict[str, PurePosixPath]:
    """Give every key (a doc id, or a duplicate path's key) a distinct, safe output path.

    Deterministic for a given set of entries, whatever their order, so every shard computes
    the same names. `taken` maps names (casefolded) already used in the ledger to the key
    that holds them: a name held by another key is never handed out again.
    """
    taken = taken or {}
    by_name: dict[str, list[tuple[str, PurePosixPath]]] = {}
    for key, rel in entries:
        safe = safe_rel(rel)
        by_name.setdefault(str(safe).casefold(), []).append((key, safe))
    out: dict[str, PurePosixPath] = {}
    used: set[str] = set(taken)
    for folded, group in sorted(by_name.items()):
        group.sort(key=lambda item: item[0])
        holder = taken.get(folded)
        for index, (key, rel) in enumerate(group):
            if holder == key or (holder is None and index == 0 and folded not in used):
                name = rel
            else:
                name, attempt = with_suffix_tag(rel, key_tag(key)), 0
                while str(name).casefold() in used and taken.get(str(name).casefold()) != key:
                    attempt += 1  # a clash of hashes: practically never
                    name = with_suffix_tag(rel, short_hash(f"{key}:{attempt}"))
            out[key] = name
            used.add(str(name).casefold())
    return out


def key_tag(key: str) -> str:
    """What a clashing name gets appended: the start of its key (a content id, or the hash
    part of a duplicate path's key `dup:<hash>`)."""
    return key.split(":", 1)[-1][:HASH_CHARS]
