"""`ocrfleet export --where`: a small filter language, parsed and evaluated here, never SQL.

    expr   := term (("and" | "or") term)*      "and" binds tighter than "or"
    term   := "not" term | "(" expr ")" | field ("=" | "!=") 'value' | field ["not"] "in" ('v', …)
    field  := status | page_status | doc_status | route | flag | engine

At page level a field is that page's (`doc_status` its document's). At document level
`status`/`doc_status` is the document's status, and `page_status`, `route`, `flag`, `engine`
hold when *any* page of the document has that value (so `flag != 'x'`: no page has flag x).
Values are single-quoted strings ('' escapes a quote). The filter only ever compares strings
in Python, so nothing a user types reaches the ledger's SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ConfigError

FIELDS = ("status", "page_status", "doc_status", "route", "flag", "engine")
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>!=|=|\(|\)|,)|(?P<word>[A-Za-z_][A-Za-z_0-9]*))"
)


@dataclass(frozen=True)
class Subject:
    """What a filter sees of a row: one value per field (a set: a document has many pages)."""

    values: dict[str, frozenset[str]]


Predicate = Callable[[Subject], bool]


@dataclass(frozen=True)
class Filter:
    text: str
    predicate: Predicate

    def __call__(self, subject: Subject) -> bool:
        return self.predicate(subject)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            rest = text[pos:].lstrip()
            raise ConfigError(
                f"--where {text!r}: cannot read {rest[:30]!r} (character "
                f"{len(text) - len(rest) + 1}); values are 'quoted', e.g. \"status = 'done'\""
            )
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        elif kind == "word":
            value = value.lower()
        tokens.append((kind, value))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def fail(self, expected: str) -> ConfigError:
        got = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "the end"
        return ConfigError(
            f"--where {self.text!r}: expected {expected}, got {got!r} "
            f"(e.g. \"status = 'done' and flag != 'repetition_loop'\")"
        )

    def peek(self, kind: str, value: str | None = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        k, v = self.tokens[self.pos]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, value: str | None = None, expected: str = "") -> str:
        if not self.peek(kind, value):
            raise self.fail(expected or value or kind)
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def parse(self) -> Predicate:
        if not self.tokens:
            raise ConfigError("--where is empty")
        predicate = self.expr()
        if self.pos != len(self.tokens):
            raise self.fail("'and', 'or' or the end")
        return predicate

    def expr(self) -> Predicate:
        alternatives = [self.conjunction()]
        while self.peek("word", "or"):
            self.pos += 1
            alternatives.append(self.conjunction())
        if len(alternatives) == 1:
            return alternatives[0]
        return lambda s: any(p(s) for p in alternatives)

    def conjunction(self) -> Predicate:
        parts = [self.term()]
        while self.peek("word", "and"):
            self.pos += 1
            parts.append(self.term())
        if len(parts) == 1:
            return parts[0]
        return lambda s: all(p(s) for p in parts)

    def term(self) -> Predicate:
        if self.peek("word", "not"):
            self.pos += 1
            inner = self.term()
            return lambda s: not inner(s)
        if self.peek("op", "("):
            self.pos += 1
            inner = self.expr()
            self.take("op", ")", "')'")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        field = self.take("word", expected="a field (" + ", ".join(FIELDS) + ")")
        if field not in FIELDS:
            self.pos -= 1
            raise self.fail("a field (" + ", ".join(FIELDS) + ")")
        negate = False
        if self.peek("word", "not"):
            self.pos += 1
            negate = True
            self.take("word", "in", "'in'")
            wanted = self.values()
        elif self.peek("word", "in"):
            self.pos += 1
            wanted = self.values()
        else:
            op = self.take("op", expected="'=', '!=' or 'in'")
            if op not in ("=", "!="):
                self.pos -= 1
                raise self.fail("'=', '!=' or 'in'")
            negate = op == "!="
            wanted = frozenset([self.take("str", expected="a 'quoted' value")])
        return _compare(field, wanted, negate)

    def values(self) -> frozenset[str]:
        self.take("op", "(", "'('")
        found = [self.take("str", expected="a 'quoted' value")]
        while self.peek("op", ","):
            self.pos += 1
            found.append(self.take("str", expected="a 'quoted' value"))
        self.take("op", ")", "')'")
        return frozenset(found)


def _compare(field: str, wanted: frozenset[str], negate: bool) -> Predicate:
    def predicate(subject: Subject) -> bool:
        hit = not wanted.isdisjoint(subject.values.get(field, frozenset()))
        return hit != negate

    return predicate


def parse_where(text: str | None) -> Filter | None:
    """The filter of a --where text; None for no filter. Raises ConfigError on bad input."""
    if text is None or not text.strip():
        return None
    return Filter(text.strip(), _Parser(text).parse())


def subject(**values: Sequence[str] | str | None) -> Subject:
    """A Subject from field=value(s); None and missing values match nothing."""
    built: dict[str, frozenset[str]] = {}
    for name, value in values.items():
        if value is None:
            built[name] = frozenset()
        elif isinstance(value, str):
            built[name] = frozenset([value])
        else:
            built[name] = frozenset(v for v in value if v is not None)
    return Subject(built)
