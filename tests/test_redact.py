"""Secrets never reach logs, error messages or the run summary."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterator

import pytest

from ocrfleet.redact import (
    MASK,
    RedactingFilter,
    install_redaction,
    redact,
    redact_obj,
    secret_values,
)

HF = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ENVIRON = {
    "HF_TOKEN": HF,
    "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEBYaDOSESSIONTOKENVALUE",
    "GITHUB_TOKEN": "ghp_githubtokenvalue123",
    "DB_PASSWORD": "correct horse battery",
    "CLIENT_SECRET_VALUE": "client-secret-xyz",
    "SHORT_TOKEN": "abc",  # too short to be a secret
    "EMPTY_TOKEN": "",
    "HOME": "/home/ubuntu",
    "TOKENIZERS_PARALLELISM": "false",
    "AWS_DEFAULT_REGION": "eu-central-1",
}


def test_secret_values_picks_secret_names_and_skips_short_ones() -> None:
    values = secret_values(ENVIRON)
    assert set(values) == {
        HF,
        AWS_KEY_ID,
        AWS_SECRET,
        "FwoGZXIvYXdzEBYaDOSESSIONTOKENVALUE",
        "ghp_githubtokenvalue123",
        "correct horse battery",
        "client-secret-xyz",
    }
    assert all(len(a) >= len(b) for a, b in itertools.pairwise(values))


def test_environment_values_are_redacted_in_text() -> None:
    secrets = secret_values(ENVIRON)
    text = f"download with {HF} as {AWS_KEY_ID}:{AWS_SECRET}; db 'correct horse battery'"
    out = redact(text, secrets)
    for value in (HF, AWS_KEY_ID, AWS_SECRET, "correct horse battery"):
        assert value not in out
    assert out.count(MASK) == 4
    assert out.startswith("download with ***")


def test_token_shaped_strings_are_redacted_without_the_environment() -> None:
    other_hf = "hf_ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210"
    text = (
        f"token={other_hf} key AKIAABCDEFGHIJKLMNOP temp ASIAABCDEFGHIJKLMNOP\n"
        "aws_secret_access_key = abcdEFGHijklMNOPqrstUVWXyz0123456789+/AB\n"
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig"
    )
    out = redact(text, secrets=[])
    assert other_hf not in out
    assert "AKIAABCDEFGHIJKLMNOP" not in out and "ASIAABCDEFGHIJKLMNOP" not in out
    assert "abcdEFGHijklMNOPqrstUVWXyz0123456789+/AB" not in out
    assert "aws_secret_access_key = ***" in out
    assert "Bearer ***" in out


def test_short_and_empty_values_do_not_over_redact() -> None:
    environ = {"X_TOKEN": "a", "Y_TOKEN": "", "Z_PASSWORD": "1234567", "REGION_SECRET": "  "}
    assert secret_values(environ) == []
    text = "page 1 of 12: a table with 1234567 rows"
    assert redact(text, secret_values(environ)) == text
    # Ordinary words that merely resemble token prefixes stay.
    assert redact("the shf_module and hf_short stay", []) == "the shf_module and hf_short stay"
    # A short value passed explicitly is ignored too.
    assert redact("a b c", ["a"]) == "a b c"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(secret_values(ENVIRON)))
    logger = logging.getLogger("ocrfleet.test_redact")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_logging_pipeline_redacts_args_and_exceptions(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("running hf download with token %s (key %s)", HF, AWS_KEY_ID)
    logger.warning("dict args %(token)s", {"token": AWS_SECRET})
    try:
        raise RuntimeError(f"401 Unauthorized for token {HF}")
    except RuntimeError:
        logger.exception("download failed")
    child = logging.getLogger("ocrfleet.test_redact.child")
    child.error("child logger: %s", "correct horse battery")
    out = stream.getvalue()
    for value in (HF, AWS_KEY_ID, AWS_SECRET, "correct horse battery"):
        assert value not in out
    assert "running hf download with token *** (key ***)" in out
    assert "RuntimeError: 401 Unauthorized for token ***" in out
    assert "child logger: ***" in out


def test_install_redaction_adds_the_filter_once() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install_redaction([handler], secrets=[HF])
    install_redaction([handler], secrets=[HF])
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "t=%s", (HF,), None)
    handler.handle(record)
    assert stream.getvalue() == "t=***\n"


def test_summary_dict_is_deep_redacted() -> None:
    summary = {
        "model": "deepseek-ai/DeepSeek-OCR",
        "failed_documents": [
            {"source": "a.pdf", "reason": f"HTTP 401 with {HF}"},
            {"source": "b.pdf", "reason": "render error", "pages": (1, 2)},
        ],
        "engine": {"env": {"AWS_SECRET_ACCESS_KEY": AWS_SECRET}, "gpus": [0, 1], "fp8": True},
        "pages": 12,
        "rate": 1.5,
        "note": None,
    }
    out = redact_obj(summary, secret_values(ENVIRON))
    text = json.dumps(out)
    assert HF not in text and AWS_SECRET not in text
    assert out["failed_documents"][0]["reason"] == "HTTP 401 with ***"
    assert out["failed_documents"][1] == {
        "source": "b.pdf",
        "reason": "render error",
        "pages": (1, 2),
    }
    assert out["engine"]["gpus"] == [0, 1] and out["engine"]["fp8"] is True
    assert out["pages"] == 12 and out["rate"] == 1.5 and out["note"] is None
    assert summary["failed_documents"][0]["reason"].endswith(HF)  # the input is not mutated
