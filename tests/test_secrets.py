"""Secrets never reach a file under OUT, nor the terminal: ledger (its stored config is the
uploaded checkpoint), logs, the worker's raw output (vLLM's own logging), the summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ocrfleet.testing import samples
from tests.conftest import cli_env

HF = "hf_" + "Q" * 8 + "leakyTokenValue123"
PLAIN = "plainVllmSecret77"  # no token shape: only its name (hf_token) says it is secret
AWS_KEY = "AKIA" + "ABCDEFGHIJ234567"
URL_PASS = "hunter2urlpass"


def test_no_secret_lands_in_any_output_file_or_on_the_terminal(tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "in" / "a.pdf", [samples.paragraph(0)])
    out = tmp_path / "out"
    env = cli_env()
    env.update(HF_TOKEN=HF, AWS_ACCESS_KEY_ID=AWS_KEY, AWS_SECRET_ACCESS_KEY="x" * 40)
    args = [
        *("run", str(pdf), "-o", str(out), "--engine", "tests.leaky_engine:leaky"),
        *("--no-progress", "--vllm-arg", f"hf_token={PLAIN}", "--vllm-arg"),
        f"endpoint=https://bob:{URL_PASS}@models.example.invalid/x",
        *("--vllm-arg", f"note=fetched with {HF}"),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "ocrfleet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    worker_out = (out / "logs" / "worker-0.out").read_text("utf-8")
    assert "engine args" in worker_out and "child sees" in worker_out  # the leaks were made
    assert "RuntimeError: denied for key" in worker_out
    for path in [p for p in out.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        for secret in (HF, PLAIN, AWS_KEY, URL_PASS):
            assert secret.encode() not in data, (secret, path)
    for secret in (HF, PLAIN, AWS_KEY, URL_PASS):
        assert secret not in result.stderr + result.stdout


def test_an_uncaught_traceback_is_printed_redacted() -> None:
    code = (
        "from ocrfleet.redact_stream import install_excepthooks\n"
        "install_excepthooks()\n"
        f"raise RuntimeError('signature mismatch for {AWS_KEY} at https://u:{URL_PASS}@h/x')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=False
    )
    assert result.returncode == 1
    assert "RuntimeError: signature mismatch for ***" in result.stderr
    assert AWS_KEY not in result.stderr and URL_PASS not in result.stderr
