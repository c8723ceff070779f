"""The node checks of `ocrfleet preflight` that need no run: the GPUs and their driver
(nvidia-smi), the Python stack that must drive them (torch, vLLM, CUDA, FP8 KV cache support)
and the model. Every command goes through one `Runner` callable, so the tests replay recorded
nvidia-smi outputs instead of needing a GPU.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Runner = Callable[[list[str]], tuple[int, str, str]]

CHECK_NAMES = (
    "gpus",
    "driver",
    "torch",
    "vllm",
    "cuda",
    "cuda_driver",
    "fp8_kv",
    "model",
    "smoke",
    "throughput",
)
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,driver_version,memory.total,compute_cap",
    "--format=csv,noheader",
]
DEFAULT_LOCAL_MODEL = Path("/opt/models/DeepSeek-OCR")
DEFAULT_HUB_MODEL = "deepseek-ai/DeepSeek-OCR"
# FP8 tensor cores: Ada (L4, L40S: 8.9) and Hopper (9.0) have them, Ampere (A100: 8.0) not.
FP8_MIN_COMPUTE_CAP = (8, 9)
# Keep in step with the `vllm` extra of pyproject.toml; 0.26.0 is the pin the AWS setup uses.
VLLM_SUPPORTED = ((0, 26), (0, 34))
VLLM_PIN = "0.26.0"
# A first vLLM start (weights, profiling, CUDA graphs) takes minutes: the smoke run gets this
# on top of its per-page timeout.
ENGINE_START_ALLOWANCE = 1200.0
PROBE_MARK = "OCRFLEET_PROBE "
INSTALL_HINT = (
    f"install the GPU stack: sudo deploy/aws/setup_multi_gpu_env.sh, or "
    f"uv pip install 'ocrfleet[vllm]' vllm=={VLLM_PIN}"
)

# Runs in a child interpreter: importing vLLM and initialising CUDA in the preflight process
# itself would hold GPU memory during the smoke run, and a crash there would take us down.
_PROBE = """
import json, sys
out = {"python": sys.version.split()[0]}
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = bool(torch.cuda.is_available())
    if out["cuda_available"]:
        n = torch.cuda.device_count()
        out["device_count"] = n
        out["capabilities"] = [list(torch.cuda.get_device_capability(i)) for i in range(n)]
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    import vllm
    out["vllm"] = vllm.__version__
except Exception as exc:
    out["vllm_error"] = f"{type(exc).__name__}: {exc}"
print("OCRFLEET_PROBE " + json.dumps(out), flush=True)
"""


@dataclass(frozen=True)
class Check:
    """One line of the preflight report."""

    name: str
    ok: bool
    detail: str  # what was found
    fix: str | None = None  # what to do when not ok
    skipped: bool = False  # not attempted (an earlier check failed, or --skip-smoke)


@dataclass(frozen=True)
class GpuInfo:
    """One row of `nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap`."""

    index: int
    name: str
    driver_version: str
    memory_mib: int
    compute_cap: tuple[int, int]

    @property
    def driver_major(self) -> int:
        match = re.match(r"\d+", self.driver_version)
        return int(match.group()) if match else 0


@dataclass(frozen=True)
class PreflightOptions:
    expect_gpus: int | None = None
    expect_model: str | None = None  # e.g. "L4": matched as a word of the GPU name
    min_driver: int = 550
    smoke_pdf: Path | None = None  # default: a one-page sample made with reportlab
    model: str | None = None  # default: DEFAULT_LOCAL_MODEL if present, else the hub id
    output_dir: Path | None = None  # where the smoke run writes; default: a new temp dir
    throughput_json: Path | None = None  # default: <smoke run dir>/preflight-throughput.json
    timeout: float = 300.0  # per page of the smoke run (and for the software probe)
    skip_smoke: bool = False

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        return str(DEFAULT_LOCAL_MODEL) if DEFAULT_LOCAL_MODEL.is_dir() else DEFAULT_HUB_MODEL


def subprocess_runner(timeout: float) -> Runner:
    """A runner that executes the command; a missing program gives 127, a timeout 124."""

    def run(cmd: list[str]) -> tuple[int, str, str]:
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return 127, "", f"{cmd[0]}: command not found"
        except subprocess.TimeoutExpired:
            return 124, "", f"{cmd[0]}: no answer after {timeout:g} s"
        return done.returncode, done.stdout, done.stderr

    return run


def parse_nvidia_smi(csv_text: str) -> list[GpuInfo]:
    """GPUs from the query's CSV; lines that are not GPU rows ("No devices were found") are
    ignored, so no GPU gives an empty list."""
    gpus: list[GpuInfo] = []
    for row in csv.reader(csv_text.splitlines(), skipinitialspace=True):
        parts = [p.strip() for p in row]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        name = ", ".join(parts[1:-3])
        driver, memory, cap = parts[-3], parts[-2], parts[-1]
        mem_match = re.match(r"\d+", memory)
        cap_match = re.fullmatch(r"(\d+)\.(\d+)", cap)
        gpus.append(
            GpuInfo(
                index=int(parts[0]),
                name=name,
                driver_version=driver,
                memory_mib=int(mem_match.group()) if mem_match else 0,
                compute_cap=(int(cap_match[1]), int(cap_match[2])) if cap_match else (0, 0),
            )
        )
    return gpus


def _model_matches(expect: str, name: str) -> bool:
    """ "L4" matches "NVIDIA L4" but not "NVIDIA L40S"; "A100" matches "NVIDIA A100-SXM4-40GB"."""
    pattern = rf"(?<![A-Za-z0-9]){re.escape(expect.strip())}(?![A-Za-z0-9])"
    return re.search(pattern, name, re.IGNORECASE) is not None


def cap_text(cap: tuple[int, int]) -> str:
    return f"{cap[0]}.{cap[1]}"


def _describe(gpus: Sequence[GpuInfo]) -> str:
    names = sorted({g.name for g in gpus})
    caps = sorted({cap_text(g.compute_cap) for g in gpus})
    mems = sorted({g.memory_mib for g in gpus})
    return (
        f"{len(gpus)} × {' + '.join(names)} ({'/'.join(map(str, mems))} MiB, "
        f"compute capability {'/'.join(caps)})"
    )


def check_gpus(
    gpus: list[GpuInfo],
    expect_count: int | None,
    expect_model: str | None,
    min_driver: int = 550,
) -> list[Check]:
    """The `gpus` check (count and model) and the `driver` check."""
    if not gpus:
        return [
            Check(
                "gpus",
                False,
                "no GPU found",
                "use a GPU instance (g6.12xlarge: 4× L4) with the NVIDIA driver loaded",
            ),
            Check("driver", False, "skipped: no GPU", "fix the gpus check first", skipped=True),
        ]
    problems: list[str] = []
    if expect_count is not None and len(gpus) != expect_count:
        problems.append(f"expected {expect_count} GPU(s), found {len(gpus)}")
    if expect_model:
        other = sorted({g.name for g in gpus if not _model_matches(expect_model, g.name)})
        if other:
            problems.append(f"expected {expect_model}, found {', '.join(other)}")
    fix = None
    if problems:
        fix = (
            "check the instance type (g6.12xlarge has 4× L4), CUDA_VISIBLE_DEVICES, and that "
            "no GPU fell off the bus (`nvidia-smi -q | grep -i -A2 xid`, `dmesg | grep -i nvrm`)"
            "; or pass the --expect-gpus/--expect-model this node really has"
        )
    gpu_check = Check(
        "gpus",
        not problems,
        _describe(gpus) + ("; " + "; ".join(problems) if problems else ""),
        fix,
    )
    drivers = sorted({g.driver_version for g in gpus})
    oldest = min(g.driver_major for g in gpus)
    driver_ok = oldest >= min_driver
    driver_check = Check(
        "driver",
        driver_ok,
        f"NVIDIA driver {', '.join(drivers)}"
        + ("" if driver_ok else f"; older than the required {min_driver}"),
        None
        if driver_ok
        else f"install NVIDIA driver {min_driver} or newer (a current AWS Deep Learning Base "
        "GPU AMI has one; on Ubuntu: the nvidia-driver-<version>-server package), then reboot",
    )
    return [gpu_check, driver_check]


def probe_software(runner: Runner) -> dict[str, Any]:
    """torch/vLLM versions and CUDA state, from a child interpreter."""
    try:
        rc, out, err = runner([sys.executable, "-c", _PROBE])
    except OSError as exc:
        return {"probe_error": f"{type(exc).__name__}: {exc}"}
    for line in out.splitlines():
        if line.startswith(PROBE_MARK):
            try:
                data: dict[str, Any] = json.loads(line[len(PROBE_MARK) :])
            except json.JSONDecodeError:
                break
            return data
    tail = " | ".join((err or out).strip().splitlines()[-3:])
    return {"probe_error": f"the probe exited with {rc}: {tail or 'no output'}"}


def _version_tuple(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def software_checks(info: dict[str, Any], gpus: Sequence[GpuInfo]) -> list[Check]:
    probe_error = info.get("probe_error")
    checks: list[Check] = []
    if "torch" in info:
        checks.append(
            Check("torch", True, f"torch {info['torch']} (CUDA {info.get('torch_cuda')})")
        )
    else:
        detail = probe_error or info.get("torch_error") or "torch is not importable"
        checks.append(Check("torch", False, f"torch: {detail}", INSTALL_HINT))
    if "vllm" in info:
        version = str(info["vllm"])
        parsed = _version_tuple(version)
        low, high = VLLM_SUPPORTED
        supported = parsed is not None and low <= parsed < high
        checks.append(
            Check(
                "vllm",
                supported,
                f"vLLM {version}"
                + ("" if supported else f"; ocrfleet supports {_v(low)} ≤ vLLM < {_v(high)}"),
                None if supported else f"uv pip install vllm=={VLLM_PIN} (the tested pin)",
            )
        )
    else:
        detail = probe_error or info.get("vllm_error") or "vllm is not importable"
        checks.append(Check("vllm", False, f"vLLM: {detail}", INSTALL_HINT))
    if info.get("cuda_available"):
        count = int(info.get("device_count") or 0)
        checks.append(Check("cuda", True, f"torch sees {count} CUDA device(s)"))
    else:
        why = (
            "torch is not importable"
            if "torch" not in info
            else "torch.cuda.is_available() is False"
        )
        checks.append(
            Check(
                "cuda",
                False,
                why,
                "torch cannot use the GPUs: a CPU-only torch build, CUDA_VISIBLE_DEVICES hiding "
                "them, or a driver too old for torch's CUDA; reinstall with the setup script",
            )
        )
    checks.append(_cuda_driver_check(info, gpus))
    caps = [g.compute_cap for g in gpus] or [
        (int(c[0]), int(c[1])) for c in info.get("capabilities") or []
    ]
    checks.append(fp8_kv_check(caps))
    return checks


def _cuda_driver_check(info: dict[str, Any], gpus: Sequence[GpuInfo]) -> Check:
    """The driver the installed wheels' CUDA build needs (cuda_driver.py has the table)."""
    from .cuda_driver import check_driver_for_cuda

    if "torch" not in info or not gpus:
        return Check("cuda_driver", False, "skipped: torch or the GPUs unknown", None, skipped=True)
    verdict = check_driver_for_cuda(info.get("torch_cuda"), gpus[0].driver_version)
    return Check("cuda_driver", verdict.ok, verdict.detail, verdict.fix)


def _v(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def fp8_kv_check(caps: Sequence[tuple[int, int]]) -> Check:
    """FP8 KV cache (ocrfleet's default `--kv-cache-dtype fp8`) needs compute capability 8.9+."""
    if not caps:
        return Check("fp8_kv", False, "no compute capability known", "fix the gpus check first")
    lowest = min(caps)
    if lowest >= FP8_MIN_COMPUTE_CAP:
        return Check(
            "fp8_kv", True, f"FP8 KV cache supported (compute capability {cap_text(lowest)})"
        )
    return Check(
        "fp8_kv",
        False,
        f"compute capability {cap_text(lowest)} < {cap_text(FP8_MIN_COMPUTE_CAP)}: no FP8 KV cache",
        "run with --kv-cache-dtype auto (bf16 KV cache) on this GPU; FP8 needs 8.9+ "
        "(L4, L40S, H100)",
    )


def check_model(model: str) -> Check:
    """A local checkpoint must be complete; a hub id is downloaded by vLLM on first start."""
    path = Path(model).expanduser()
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors"))
        if (path / "config.json").is_file() and weights:
            size = sum(w.stat().st_size for w in weights) / 1e9
            return Check("model", True, f"{path}: {len(weights)} weight file(s), {size:.1f} GB")
        return Check(
            "model",
            False,
            f"{path} has no config.json or no *.safetensors: an interrupted download?",
            "rerun the model step: sudo deploy/aws/setup_multi_gpu_env.sh --skip-nvme",
        )
    if model.startswith(("/", ".", "~")):
        return Check(
            "model",
            False,
            f"{model} does not exist",
            f"download it (deploy/aws/setup_multi_gpu_env.sh) or pass --model {DEFAULT_HUB_MODEL}",
        )
    return Check(
        "model",
        True,
        f"{model} (hub id): vLLM downloads it on first start; pre-download it with the setup "
        "script for a faster start that needs no network",
    )


def tail_lines(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())
