"""Shared fixtures: sample corpora made on the spot, and a way to run the CLI for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.testing import samples

REPO = Path(__file__).resolve().parent.parent


def _vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


# tests/vllm/ needs torch and vLLM: it runs inside the CPU vLLM environment, started by
# tests/test_vllm_suite.py (scripts/setup_vllm_cpu_env.sh installs that environment).
collect_ignore_glob = [] if _vllm_importable() else ["vllm/*"]


@dataclass
class Corpus:
    root: Path
    pages: dict[str, int]  # relative output path -> pages


@pytest.fixture
def greek_corpus(tmp_path: Path) -> Corpus:
    """Born-digital and image-only Greek/English PDFs, with awkward names and nesting."""
    root = tmp_path / "in"
    samples.text_pdf(root / "a" / "report.pdf", [samples.paragraph(i) for i in range(3)])
    samples.image_pdf(root / "b" / "report.pdf", [samples.paragraph(i, False) for i in range(2)])
    samples.mixed_pdf(
        root / "Μελέτη με κενά 'και' \"εισαγωγικά\".pdf",
        [("text", samples.paragraph(1)), ("blank", ""), ("image", samples.paragraph(2))],
    )
    return Corpus(
        root,
        {"a/report": 3, "b/report": 2, "Μελέτη με κενά 'και' \"εισαγωγικά\"": 3},
    )


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3 server (moto); the product reaches it through AWS_ENDPOINT_URL_S3 only."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    from ocrfleet.s3_client import make_filesystem

    name = f"ocrfleet-{uuid.uuid4().hex[:12]}"
    make_filesystem().mkdir(name)
    return name


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m ocrfleet ARGS` in a real process, as a user would run it (env: in place of
    the test's own environment)."""
    return subprocess.run(
        [sys.executable, "-m", "ocrfleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env() if env is None else env,
        check=False,
    )


def read_records(out: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((out / "pages").rglob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
    return records


def outputs_without_timings(out: Path) -> dict[str, Any]:
    """Every Markdown file and every page record, minus the fields that time a run."""
    timing = {"render_seconds", "queue_seconds", "infer_seconds", "engine_timings", "attempts"}
    markdown = {str(p.relative_to(out)): p.read_text("utf-8") for p in sorted(out.rglob("*.md"))}
    records = {
        (r["source"], r["page"]): {k: v for k, v in r.items() if k not in timing}
        for r in read_records(out)
    }
    return {"markdown": markdown, "records": records}
