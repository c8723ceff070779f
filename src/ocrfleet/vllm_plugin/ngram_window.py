"""The n-gram processor's host copy of each batch row's last output tokens (Model Runner V1):
only the new token of each row is copied per step, not the whole window."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ngram_rule import PAD, IntArray


class WindowCache:
    """Host copy of each batch row's last output tokens, right-aligned in a [rows, width] array.

    Re-reading every window from the Python lists converts every token every step; this copies
    only the new token of each row. vLLM appends to the lists in place; it can also shrink them
    (discarded tokens) or write -1 placeholders that it fixes later (async scheduling). A row
    is therefore re-read from its list unless the list grew by at most one (non-negative) token
    and still holds the row's last cached token at the same place, and while its cached window
    holds a negative id. (Between two steps vLLM only appends, fixes placeholders appended
    since the last step, or shrinks the list: those checks catch every such change.)
    """

    def __init__(self, rows: int) -> None:
        self.tokens: IntArray = np.full((rows, 0), PAD, dtype=np.int64)
        # Output length each row reflects; -1 forces a re-read from the list.
        self.synced: IntArray = np.full(rows, -1, dtype=np.int64)
        self.rereads = 0  # rows re-read from their lists so far (tests watch it)

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])

    def reserve(self, rows: int, width: int) -> None:
        old_rows, old_width = self.tokens.shape
        if rows <= old_rows and width <= old_width:
            return
        rows = max(rows, old_rows, 2 * old_rows if rows > old_rows else 0)
        width = max(width, old_width)
        tokens = np.full((rows, width), PAD, dtype=np.int64)
        tokens[:old_rows, width - old_width :] = self.tokens  # stays right-aligned
        synced = np.full(rows, -1, dtype=np.int64)
        synced[:old_rows] = self.synced
        self.tokens, self.synced = tokens, synced

    def invalidate(self, row: int) -> None:
        self.synced[row] = -1

    def move(self, src: int, dst: int) -> None:
        self.reserve(max(src, dst) + 1, 0)
        self.tokens[dst] = self.tokens[src]
        self.synced[dst] = self.synced[src]
        self.synced[src] = -1

    def swap(self, a: int, b: int) -> None:
        self.reserve(max(a, b) + 1, 0)
        self.tokens[[a, b]] = self.tokens[[b, a]]
        self.synced[[a, b]] = self.synced[[b, a]]

    def sync(self, rows: Sequence[int], outputs: Sequence[list[int]]) -> list[int]:
        """Bring ``rows`` up to date with their output lists; returns the lists' lengths."""
        lengths: list[int] = []
        checked: list[int] = []  # positions in rows: cached, list grew by at most one token
        probes: list[int] = []  # the list's token where the row's last cached token should be
        new_tokens: list[int] = []  # the token to append, or PAD for none
        reread: list[int] = []
        synced = self.synced[list(rows)].tolist()
        for k, (ids, done) in enumerate(zip(outputs, synced, strict=True)):
            length = len(ids)
            lengths.append(length)
            if done >= 0 and (length == done or (length == done + 1 and ids[-1] >= 0)):
                checked.append(k)
                probes.append(ids[done - 1] if done else PAD)  # an empty row holds only PAD
                new_tokens.append(ids[-1] if length > done else PAD)
            else:
                reread.append(k)
        if checked:
            at = np.array([rows[k] for k in checked], dtype=np.int64)
            new = np.array(new_tokens, dtype=np.int64)
            # A list that no longer holds the row's last token there was rewritten.
            same = self.tokens[at, -1] == np.array(probes, dtype=np.int64)
            grow = same & (new != PAD)
            grown = at[grow]
            self.tokens[grown, :-1] = self.tokens[grown, 1:]
            self.tokens[grown, -1] = new[grow]
            self.synced[grown] += 1
            reread.extend(np.array(checked, dtype=np.int64)[~same].tolist())
        width = self.width
        self.rereads += len(reread)
        for k in reread:
            row, ids = rows[k], outputs[k]
            m = min(len(ids), width)
            window = self.tokens[row]
            window[: width - m] = PAD
            if m:
                window[width - m :] = ids[len(ids) - m :]
            self.synced[row] = -1 if m and window[width - m :].min() < 0 else len(ids)
        return lengths
