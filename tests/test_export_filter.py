"""The --where language of `ocrfleet export`: what it selects, and what it refuses."""

from __future__ import annotations

import pytest

from ocrfleet.errors import ConfigError
from ocrfleet.export_filter import Subject, parse_where, subject

DONE_LOOP = subject(status="done", route="ocr", flag=["repetition_loop", "long"], engine="vllm")
DONE_CLEAN = subject(status="done", route="text", flag=[], engine="text")
FAILED = subject(status="failed", route=None, flag=[], engine="vllm")


def matches(where: str) -> list[bool]:
    selected = parse_where(where)
    assert selected is not None
    return [selected(s) for s in (DONE_LOOP, DONE_CLEAN, FAILED)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("status = 'done'", [True, True, False]),
        ("status != 'done'", [False, False, True]),
        ("route = 'ocr'", [True, False, False]),
        ("flag = 'repetition_loop'", [True, False, False]),
        ("flag != 'repetition_loop'", [False, True, True]),
        ("status = 'done' and flag != 'repetition_loop'", [False, True, False]),
        ("STATUS = 'failed' OR route = 'text'", [False, True, True]),
        # "and" binds tighter than "or"
        ("status = 'failed' or route = 'ocr' and flag = 'long'", [True, False, True]),
        ("(status = 'failed' or route = 'ocr') and flag = 'long'", [True, False, False]),
        ("not status = 'done'", [False, False, True]),
        ("engine in ('vllm', 'tesseract')", [True, False, True]),
        ("engine not in ('vllm')", [False, True, False]),
        ("route = 'ocr' and route != 'text'", [True, False, False]),
    ],
)
def test_the_filter_selects_what_it_says(where: str, expected: list[bool]) -> None:
    assert matches(where) == expected


def test_a_document_matches_when_any_page_does() -> None:
    document = subject(status="done", flag=["blank", "repetition_loop"], route=["text", "ocr"])
    assert matches_one("flag = 'repetition_loop'", document)
    assert matches_one("route = 'text' and route = 'ocr'", document)
    assert not matches_one("flag != 'blank'", document)


def matches_one(where: str, item: Subject) -> bool:
    selected = parse_where(where)
    assert selected is not None
    return selected(item)


def test_quotes_are_values_not_code() -> None:
    # A value with quotes, semicolons and SQL in it is only ever compared as a string.
    sneaky = subject(status="x'; DROP TABLE pages; --")
    assert matches_one("status = 'x''; DROP TABLE pages; --'", sneaky)
    assert not matches_one("status = 'x'", sneaky)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("status = done", "expected a 'quoted' value, got 'done'"),
        ("flg = 'x'", "expected a field"),
        ("status == 'done'", "expected a 'quoted' value, got '='"),
        ("status = 'done' and", "got 'the end'"),
        ("status = 'done'; DROP TABLE pages", "cannot read ';"),
        ("(status = 'done'", "expected ')'"),
        ("status = 'done' status = 'x'", "expected 'and', 'or' or the end"),
        ("status in 'done'", "expected '('"),
        ("status = 'unterminated", "cannot read"),
    ],
)
def test_bad_filters_fail_with_one_clear_line(where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_where(where)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_no_filter_is_none() -> None:
    assert parse_where(None) is None and parse_where("   ") is None
