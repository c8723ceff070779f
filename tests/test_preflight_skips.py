"""Preflight on a machine that is not ready: skipped checks are told apart from failures,
and the driver the wheels' CUDA build needs is checked."""

from __future__ import annotations

import pytest

from ocrfleet.cuda_driver import check_driver_for_cuda
from ocrfleet.preflight import PreflightOptions, exit_code, report, run_preflight
from ocrfleet.preflight_checks import CHECK_NAMES
from tests.conftest import run_cli


def _no_nvidia_smi(cmd: list[str]) -> tuple[int, str, str]:
    raise FileNotFoundError(cmd[0])


def test_a_cpu_box_has_one_failure_and_the_rest_skipped(tmp_path: object) -> None:
    checks = run_preflight(PreflightOptions(skip_smoke=True), _no_nvidia_smi)
    text = report(checks, as_json=False).splitlines()
    assert text[0].startswith("FAIL  gpus")
    assert [line.split()[0] for line in text[2:-1]] == ["SKIP"] * (len(CHECK_NAMES) - 1)
    assert text[-1] == f"preflight: 0 passed, 1 failed, {len(CHECK_NAMES) - 1} skipped (fix: gpus)"
    assert exit_code(checks) == 1


def test_preflight_command_on_this_machine_counts_skips_apart() -> None:
    result = run_cli("preflight", "--skip-smoke")
    last = result.stdout.strip().splitlines()[-1]
    assert " skipped" in last and " failed" in last and " passed" in last
    failed = int(last.split(" failed")[0].rsplit(" ", 1)[1])
    assert result.returncode == (1 if failed else 0)
    assert "checks failed" not in result.stdout


@pytest.mark.parametrize(
    ("cuda", "driver", "ok", "said"),
    [
        ("12.8", "570.86.15", True, "runs torch/vLLM wheels built for CUDA 12.8"),
        ("12.8", "550.127.05", True, "minor-version compatibility"),
        ("12.8", "470.256.02", False, "too old"),
        ("13.0", "575.51.03", False, "needs ≥ 580.65.6"),
        ("11.8", "535.183.01", True, "runs"),
    ],
)
def test_the_driver_the_wheels_cuda_build_needs(
    cuda: str, driver: str, ok: bool, said: str
) -> None:
    verdict = check_driver_for_cuda(cuda, driver)
    assert verdict.ok is ok and said in verdict.detail
    assert (verdict.fix is not None) is (not ok)
