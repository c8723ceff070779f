"""`ocrfleet preflight` against nvidia-smi outputs replayed through an injected runner.

tests/data/nvidia-smi/: h200_driver580.txt was recorded on a real H200 node with the exact
query preflight runs; the L4/A100 files follow that recorded format with the values those
cards report (L4: 23034 MiB, compute capability 8.9; A100-SXM4-40GB: 40960 MiB, 8.0);
no_devices.txt is nvidia-smi's message (exit status 6) when it finds no GPU, and
driver_not_loaded.txt its message when the kernel module is not loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.preflight import Check, PreflightOptions, exit_code, report, run_preflight
from ocrfleet.preflight_checks import (
    CHECK_NAMES,
    NVIDIA_SMI_QUERY,
    check_gpus,
    check_model,
    parse_nvidia_smi,
)

DATA = Path(__file__).parent / "data" / "nvidia-smi"
GOOD_PROBE = {
    "python": "3.12.11",
    "torch": "2.9.0+cu128",
    "torch_cuda": "12.8",
    "cuda_available": True,
    "device_count": 4,
    "capabilities": [[8, 9]] * 4,
    "vllm": "0.26.0",
}
Smoke = Callable[[list[str]], tuple[int, str, str]]


def smi(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def good_smoke(text: str = "A survey of municipal records", rc: int = 0) -> Smoke:
    """Plays `ocrfleet run`: writes the page JSONL and the run summary it would write."""

    def run(cmd: list[str]) -> tuple[int, str, str]:
        out = Path(arg(cmd, "-o"))
        pages = out / "pages" / "preflight-sample.jsonl"
        pages.parent.mkdir(parents=True)
        record = {"page": 1, "pages": 1, "status": "done", "text": text}
        pages.write_text(json.dumps(record) + "\n", encoding="utf-8")
        summary = {
            "this_run": {
                "pages_processed": 1,
                "wall_seconds": 95.0,
                "engine_start_seconds": 90.0,
                "pages_per_second_after_engine_start": 0.5,
            },
            "engines_per_gpu": {
                "engines": 1,
                "mps": False,
                "mps_reason": "one engine per GPU: nothing to share",
            },
        }
        (out / "run-summary.json").write_text(json.dumps(summary), encoding="utf-8")
        return rc, "", "12:00:00 INFO 1 document(s) in this shard\n"

    return run


class FakeRunner:
    """Answers nvidia-smi from a recorded file, the software probe from a dict, and
    `ocrfleet run` with a smoke function; records every command."""

    def __init__(
        self,
        smi_file: str | None,
        smi_rc: int = 0,
        probe: dict[str, Any] | None = None,
        smoke: Smoke | None = None,
        missing: bool = False,
    ) -> None:
        self.smi_text = smi(smi_file) if smi_file else ""
        self.smi_rc = smi_rc
        self.probe = GOOD_PROBE if probe is None else probe
        self.smoke = smoke or good_smoke()
        self.missing = missing
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> tuple[int, str, str]:
        self.calls.append(cmd)
        if cmd[0] == "nvidia-smi":
            assert cmd == NVIDIA_SMI_QUERY
            if self.missing:
                raise FileNotFoundError(2, "No such file or directory", "nvidia-smi")
            return self.smi_rc, self.smi_text, ""
        if cmd[1] == "-c":
            return 0, "INFO vllm noise\nOCRFLEET_PROBE " + json.dumps(self.probe) + "\n", ""
        assert cmd[1:4] == ["-m", "ocrfleet", "run"], cmd
        return self.smoke(cmd)

    def smoke_calls(self) -> list[list[str]]:
        return [c for c in self.calls if c[1:4] == ["-m", "ocrfleet", "run"]]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "DeepSeek-OCR"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "model-00001-of-000001.safetensors").write_bytes(b"\0" * 1024)
    return model


@pytest.fixture
def options(tmp_path: Path, model_dir: Path) -> PreflightOptions:
    pdf = tmp_path / "one.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    return PreflightOptions(
        expect_gpus=4,
        expect_model="L4",
        smoke_pdf=pdf,
        model=str(model_dir),
        output_dir=tmp_path / "preflight",
        throughput_json=tmp_path / "baseline.json",
    )


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_parse_recorded_and_l4_outputs() -> None:
    (h200,) = parse_nvidia_smi(smi("h200_driver580.txt"))
    assert (h200.index, h200.name, h200.driver_version) == (0, "NVIDIA H200", "580.159.04")
    assert (h200.memory_mib, h200.compute_cap, h200.driver_major) == (143771, (9, 0), 580)
    l4 = parse_nvidia_smi(smi("l4x4_driver550.txt"))
    assert [g.index for g in l4] == [0, 1, 2, 3]
    assert {(g.name, g.memory_mib, g.compute_cap, g.driver_major) for g in l4} == {
        ("NVIDIA L4", 23034, (8, 9), 550)
    }
    assert parse_nvidia_smi(smi("no_devices.txt")) == []
    assert parse_nvidia_smi(smi("driver_not_loaded.txt")) == []
    assert parse_nvidia_smi("") == []


@pytest.mark.parametrize("smi_file", ["l4x4_driver550.txt", "l4x4_driver570.txt"])
def test_four_l4_node_passes_everything(smi_file: str, options: PreflightOptions) -> None:
    runner = FakeRunner(smi_file)
    checks = run_preflight(options, runner)
    assert [c.name for c in checks] == list(CHECK_NAMES)
    assert all(c.ok and not c.skipped for c in checks), report(checks, as_json=False)
    assert exit_code(checks) == 0
    (smoke,) = runner.smoke_calls()
    assert arg(smoke, "--batch-pages") == "1"
    assert arg(smoke, "--timeout-seconds") == "300"
    assert arg(smoke, "--gpus") == "0"
    assert arg(smoke, "--model") == options.model
    assert "--no-progress" in smoke and "--kv-cache-dtype" not in smoke
    assert smoke[4] == str(options.smoke_pdf)
    assert "A survey of municipal records" in by_name(checks)["smoke"].detail
    assert options.throughput_json is not None
    baseline = json.loads(options.throughput_json.read_text(encoding="utf-8"))
    assert baseline["gpu"]["name"] == "NVIDIA L4" and baseline["gpu"]["count"] == 4
    assert baseline["gpu"]["compute_cap"] == "8.9"
    assert baseline["versions"]["vllm"] == "0.26.0" and baseline["versions"]["torch"]
    assert baseline["pages_per_second"] == 0.5 and baseline["date"]
    assert "0.500 pages/s" in by_name(checks)["throughput"].detail
    # How GPU 0 was shared in the smoke run, as a long run with the same defaults would.
    assert baseline["engines_per_gpu"]["engines"] == 1
    assert (
        "1 engine(s), CUDA MPS off (one engine per GPU: nothing to share)"
        in by_name(checks)["throughput"].detail
    )


def test_old_driver_fails_with_a_hint(options: PreflightOptions) -> None:
    checks = by_name(run_preflight(options, FakeRunner("l4x4_driver535.txt")))
    assert not checks["driver"].ok
    assert "535.183.01" in checks["driver"].detail and "550" in checks["driver"].detail
    assert checks["driver"].fix and "550 or newer" in checks["driver"].fix
    assert checks["gpus"].ok and checks["smoke"].ok


def test_three_gpus_when_four_expected(options: PreflightOptions) -> None:
    checks = by_name(run_preflight(options, FakeRunner("l4x3_driver550.txt")))
    assert not checks["gpus"].ok
    assert "expected 4 GPU(s), found 3" in checks["gpus"].detail
    assert checks["gpus"].fix and "g6.12xlarge" in checks["gpus"].fix
    assert checks["driver"].ok


@pytest.mark.parametrize("how", ["raises", "127"])
def test_no_nvidia_smi_fails_fast(how: str, options: PreflightOptions) -> None:
    runner = FakeRunner(None, missing=True) if how == "raises" else FakeRunner(None, smi_rc=127)
    checks = run_preflight(options, runner)
    assert [c.name for c in checks] == list(CHECK_NAMES)
    gpus, *rest = checks
    assert not gpus.ok and "nvidia-smi not found" in gpus.detail and gpus.fix
    assert all(not c.ok and c.skipped and c.detail == "skipped: no GPU" for c in rest)
    assert len(runner.calls) == 1  # nothing else was attempted
    assert exit_code(checks) == 1


def test_no_nvidia_smi_with_the_real_runner(
    options: PreflightOptions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    checks = run_preflight(options)  # the subprocess runner: must not raise
    assert not checks[0].ok and "nvidia-smi not found" in checks[0].detail
    assert "FAIL  gpus" in report(checks, as_json=False)


@pytest.mark.parametrize(
    ("smi_file", "rc", "said"),
    [
        ("no_devices.txt", 6, "No devices were found"),
        ("driver_not_loaded.txt", 9, "couldn't communicate with the NVIDIA driver"),
    ],
)
def test_nvidia_smi_without_gpus(
    smi_file: str, rc: int, said: str, options: PreflightOptions
) -> None:
    runner = FakeRunner(smi_file, smi_rc=rc)
    checks = run_preflight(options, runner)
    assert not checks[0].ok and said in checks[0].detail and checks[0].fix
    assert all(c.detail == "skipped: no GPU" for c in checks[1:])
    assert len(runner.calls) == 1


def test_a100_has_no_fp8_kv_and_the_smoke_run_uses_bf16(
    options: PreflightOptions,
) -> None:
    probe = {**GOOD_PROBE, "capabilities": [[8, 0]] * 4}
    runner = FakeRunner("a100x4_driver550.txt", probe=probe)
    opts = PreflightOptions(**{**options.__dict__, "expect_model": "A100"})
    checks = by_name(run_preflight(opts, runner))
    assert checks["gpus"].ok, checks["gpus"].detail
    assert not checks["fp8_kv"].ok and "8.0 < 8.9" in checks["fp8_kv"].detail
    assert checks["fp8_kv"].fix and "--kv-cache-dtype auto" in checks["fp8_kv"].fix
    (smoke,) = runner.smoke_calls()
    assert arg(smoke, "--kv-cache-dtype") == "auto"


def test_expected_model_is_matched_as_a_word() -> None:
    (l4,) = parse_nvidia_smi("0, NVIDIA L4, 550.127.05, 23034 MiB, 8.9")
    (l40s,) = parse_nvidia_smi("0, NVIDIA L40S, 550.127.05, 46068 MiB, 8.9")
    assert check_gpus([l4], 1, "L4")[0].ok
    gpus = check_gpus([l40s], 1, "L4")[0]
    assert not gpus.ok and "expected L4, found NVIDIA L40S" in gpus.detail
    assert check_gpus([l4], None, "nvidia l4")[0].ok


def test_missing_software_skips_the_smoke_run(options: PreflightOptions) -> None:
    probe = {
        "python": "3.12.11",
        "torch_error": "ModuleNotFoundError: No module named 'torch'",
        "vllm_error": "ModuleNotFoundError: No module named 'vllm'",
    }
    runner = FakeRunner("l4x4_driver550.txt", probe=probe)
    checks = by_name(run_preflight(options, runner))
    for name in ("torch", "vllm", "cuda"):
        assert not checks[name].ok and checks[name].fix
    assert "No module named 'vllm'" in checks["vllm"].detail
    assert checks["fp8_kv"].ok  # known from nvidia-smi
    assert checks["smoke"].skipped and not checks["smoke"].ok
    assert not runner.smoke_calls()


def test_unsupported_vllm_version(options: PreflightOptions) -> None:
    probe = {**GOOD_PROBE, "vllm": "0.10.1"}
    checks = by_name(run_preflight(options, FakeRunner("l4x4_driver550.txt", probe=probe)))
    assert not checks["vllm"].ok and "0.10.1" in checks["vllm"].detail
    assert checks["vllm"].fix and "vllm==0.26.0" in checks["vllm"].fix


def test_cuda_unavailable(options: PreflightOptions) -> None:
    probe = {**GOOD_PROBE, "cuda_available": False}
    del probe["device_count"], probe["capabilities"]
    checks = by_name(run_preflight(options, FakeRunner("l4x4_driver550.txt", probe=probe)))
    assert not checks["cuda"].ok and "is_available() is False" in checks["cuda"].detail


def test_smoke_run_that_fails(options: PreflightOptions) -> None:
    def crash(cmd: list[str]) -> tuple[int, str, str]:
        return 1, "", "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory\n"

    checks = by_name(run_preflight(options, FakeRunner("l4x4_driver550.txt", smoke=crash)))
    smoke = checks["smoke"]
    assert not smoke.ok and "exited with 1" in smoke.detail and "out of memory" in smoke.detail
    assert smoke.fix and "rerun by hand" in smoke.fix and "logs/run.log" in smoke.fix
    assert checks["throughput"].skipped and not checks["throughput"].ok


def test_smoke_run_without_text_fails(options: PreflightOptions) -> None:
    runner = FakeRunner("l4x4_driver550.txt", smoke=good_smoke(text="   "))
    smoke = by_name(run_preflight(options, runner))["smoke"]
    assert not smoke.ok and "no page came back with text" in smoke.detail


def test_default_sample_pdf(options: PreflightOptions) -> None:
    pytest.importorskip("reportlab")
    opts = PreflightOptions(**{**options.__dict__, "smoke_pdf": None, "throughput_json": None})
    runner = FakeRunner("l4x4_driver550.txt")
    checks = by_name(run_preflight(opts, runner))
    assert checks["smoke"].ok, checks["smoke"].detail
    (smoke,) = runner.smoke_calls()
    sample = Path(smoke[4])
    assert sample.name == "preflight-sample.pdf" and sample.read_bytes().startswith(b"%PDF")
    assert opts.output_dir is not None
    assert sample.parent == opts.output_dir
    baseline = Path(arg(smoke, "-o")) / "preflight-throughput.json"
    assert baseline.is_file() and checks["throughput"].ok


def test_skip_smoke(options: PreflightOptions) -> None:
    opts = PreflightOptions(**{**options.__dict__, "skip_smoke": True})
    runner = FakeRunner("l4x4_driver550.txt")
    checks = run_preflight(opts, runner)
    assert exit_code(checks) == 0 and not runner.smoke_calls()
    text = report(checks, as_json=False)
    assert "SKIP  smoke" in text and "SKIP  throughput" in text


def test_model_check(tmp_path: Path, model_dir: Path) -> None:
    assert check_model(str(model_dir)).ok
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}", encoding="utf-8")
    assert not check_model(str(partial)).ok
    assert not check_model(str(tmp_path / "absent")).ok
    assert check_model("deepseek-ai/DeepSeek-OCR").ok


def test_report_text_and_json(options: PreflightOptions, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_PreflightReportSecret0123456789"
    monkeypatch.setenv("HF_TOKEN", token)

    def leaky(cmd: list[str]) -> tuple[int, str, str]:
        return 1, "", f"401 Client Error for token {token}"

    checks = run_preflight(options, FakeRunner("l4x4_driver535.txt", smoke=leaky))
    text = report(checks, as_json=False)
    lines = text.splitlines()
    assert any(line.startswith("PASS  gpus") for line in lines)
    assert any(line.startswith("FAIL  driver") for line in lines)
    assert any(line.strip().startswith("fix: install NVIDIA driver 550") for line in lines)
    assert any(line.startswith("SKIP  throughput") for line in lines)  # not attempted
    assert lines[-1] == "preflight: 7 passed, 2 failed, 1 skipped (fix: driver, smoke)"
    assert token not in text and "***" in text
    data = json.loads(report(checks, as_json=True))
    assert data["ok"] is False and data["failed"] == ["driver", "smoke"]
    assert data["skipped"] == ["throughput"]
    assert {c["name"] for c in data["checks"]} == set(CHECK_NAMES)
    assert all({"name", "ok", "detail", "fix", "skipped"} <= set(c) for c in data["checks"])
    assert token not in json.dumps(data)


def test_the_smoke_run_forces_the_vllm_engine(tmp_path: Path) -> None:
    """The smoke page is born-digital: under the default auto engine it would never reach the
    GPU, and the smoke test would prove nothing about vLLM."""
    from ocrfleet.preflight_smoke import smoke_command

    cmd = smoke_command(tmp_path / "p.pdf", tmp_path / "run", "model", 60.0, fp8=True)
    assert cmd[cmd.index("--engine") + 1] == "vllm"
