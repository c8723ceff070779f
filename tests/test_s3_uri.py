"""A malformed s3:// URI fails at once in one line (never retried as if transient), and
credentials written into it are never echoed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ocrfleet.config import RunConfig
from ocrfleet.errors import ConfigError
from ocrfleet.s3_client import _is_transient, with_retries
from ocrfleet.storage import split_uri
from ocrfleet.testing import samples
from tests.conftest import run_cli

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY99"
BAD = [
    "s3://My_Bucket/corpus",
    "s3://bucket with spaces/x",
    "s3://ab/x",
    "s3://a..b/x",
    "s3://192.168.0.1/x",
    "s3:///only/a/key",
    f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/x",
    "s3://bucket:9000/x",
    "s3://-bucket-/x",
]


@pytest.mark.parametrize("uri", BAD)
def test_malformed_uris_are_config_errors_without_credentials(uri: str) -> None:
    with pytest.raises(ConfigError) as err:
        split_uri(uri)
    assert SECRET not in str(err.value) and "AKIAIOSFODNN7EXAMPLE" not in str(err.value)
    with pytest.raises(ConfigError):
        RunConfig(inputs=("x.pdf",), output_dir=Path("o"), sync_to=uri)
    with pytest.raises(ConfigError):
        RunConfig(inputs=(uri,), output_dir=Path("o"))


def test_a_request_botocore_rejects_is_not_retried() -> None:
    from botocore.exceptions import ParamValidationError

    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise ParamValidationError(report="Invalid bucket name")

    assert not _is_transient(ParamValidationError(report="x"))
    with pytest.raises(ParamValidationError):
        with_retries(action, "list", retries=5, sleep=lambda _s: None)
    assert len(calls) == 1


def test_the_cli_fails_at_once_in_one_line(tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "a.pdf", ["x"])
    for args in (
        (str(pdf), "-o", str(tmp_path / "o1"), "--sync-to", "s3://Bad_Bucket/x"),
        ("s3://bad bucket/corpus", "-o", str(tmp_path / "o2")),
        (str(pdf), "-o", f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/out"),
    ):
        began = time.monotonic()
        result = run_cli("run", *args, "--engine", "text", "--no-progress", timeout=60)
        assert result.returncode == 2, result.stderr
        assert time.monotonic() - began < 20
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert SECRET not in result.stderr and "AKIAIOSFODNN7EXAMPLE" not in result.stderr
