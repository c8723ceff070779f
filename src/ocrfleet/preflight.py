"""`ocrfleet preflight`: is this node ready for a long run? Checked in minutes, before hours.

The checks follow the order in which a node breaks: the GPUs and their driver (nvidia-smi),
the Python stack that must drive them (torch, vLLM, CUDA, FP8 KV cache support), the model,
then one real page through `ocrfleet run` on GPU 0 and the throughput baseline it gives.
Every command goes through one `runner` callable, so the tests replay recorded nvidia-smi
outputs instead of needing a GPU. Without a GPU the later checks are meaningless: they are
reported as failed ("skipped: no GPU") rather than attempted, and nothing raises.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .layout import OutputLayout
from .redact import redact, secret_values
from .run_summary import ThisRun

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


def _cap(cap: tuple[int, int]) -> str:
    return f"{cap[0]}.{cap[1]}"


def _describe(gpus: Sequence[GpuInfo]) -> str:
    names = sorted({g.name for g in gpus})
    caps = sorted({_cap(g.compute_cap) for g in gpus})
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


def _probe_software(runner: Runner) -> dict[str, Any]:
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


def _software_checks(info: dict[str, Any], gpus: Sequence[GpuInfo]) -> list[Check]:
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
        return Check("fp8_kv", True, f"FP8 KV cache supported (compute capability {_cap(lowest)})")
    return Check(
        "fp8_kv",
        False,
        f"compute capability {_cap(lowest)} < {_cap(FP8_MIN_COMPUTE_CAP)}: no FP8 KV cache",
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


def make_sample_pdf(path: Path) -> Path:
    """One page of English and Greek text (reportlab and the DejaVu font needed)."""
    from .testing import samples

    text = samples.paragraph(0, greek=False) + " " + samples.paragraph(0)
    return samples.text_pdf(path, [text])


def smoke_command(pdf: Path, run_dir: Path, model: str, timeout: float, fp8: bool) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "ocrfleet",
        "run",
        str(pdf),
        "-o",
        str(run_dir),
        "--engine",
        "vllm",  # the smoke page is born-digital: auto would keep its text layer
        "--batch-pages",
        "1",
        "--timeout-seconds",
        f"{timeout:g}",
        "--gpus",
        "0",
        "--model",
        model,
        "--no-progress",
    ]
    return cmd if fp8 else [*cmd, "--kv-cache-dtype", "auto"]


def _first_text_record(run_dir: Path) -> dict[str, Any] | None:
    for path in sorted(OutputLayout(run_dir).pages_dir.glob("**/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(record, dict)
                and record.get("status") in ("done", "truncated")
                and str(record.get("text") or "").strip()
            ):
                return record
    return None


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def smoke_check(
    options: PreflightOptions, runner: Runner, fp8: bool, base_dir: Path
) -> tuple[Check, Path | None]:
    """One page through `ocrfleet run` on GPU 0; returns the check and the run directory."""
    pdf = options.smoke_pdf
    if pdf is None:
        if importlib.util.find_spec("reportlab") is None:
            return (
                Check(
                    "smoke",
                    False,
                    "skipped: no sample PDF to OCR (reportlab is not installed)",
                    "pass --smoke-pdf FILE (any one-page PDF), or pip install reportlab",
                    skipped=True,
                ),
                None,
            )
        try:
            pdf = make_sample_pdf(base_dir / "preflight-sample.pdf")
        except Exception as exc:
            return (
                Check(
                    "smoke",
                    False,
                    f"skipped: the sample PDF could not be made ({type(exc).__name__}: {exc})",
                    "install fonts-dejavu (Greek glyphs), or pass --smoke-pdf FILE",
                    skipped=True,
                ),
                None,
            )
    elif not pdf.is_file():
        return Check("smoke", False, f"{pdf} does not exist", "pass an existing PDF"), None
    run_dir = base_dir / f"smoke-{time.strftime('%Y%m%dT%H%M%S')}"
    cmd = smoke_command(pdf, run_dir, options.resolved_model(), options.timeout, fp8)
    rerun = f"see {OutputLayout(run_dir).run_log}; rerun by hand: {shlex.join(cmd)}"
    try:
        rc, out, err = runner(cmd)
    except OSError as exc:
        return Check("smoke", False, f"could not start ocrfleet: {exc}", rerun), run_dir
    record = _first_text_record(run_dir) if run_dir.is_dir() else None
    if rc == 0 and record is not None:
        text = " ".join(str(record["text"]).split())
        excerpt = text[:60] + ("…" if len(text) > 60 else "")
        return (
            Check("smoke", True, f"page 1 → {len(text)} characters: {excerpt!r} ({run_dir})"),
            run_dir,
        )
    if rc == 0:
        detail = "the run finished but no page came back with text"
    else:
        detail = f"`ocrfleet run` exited with {rc}: {_tail(err or out) or 'no output'}"
    return Check("smoke", False, detail, rerun), run_dir


def throughput_check(
    run_dir: Path,
    out_path: Path,
    gpus: Sequence[GpuInfo],
    software: dict[str, Any],
    model: str,
) -> Check:
    """A baseline from the smoke run's summary, written down with the machine and versions."""
    summary_path = OutputLayout(run_dir).summary()
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        this_run = ThisRun.from_json(summary["this_run"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Check(
            "throughput",
            False,
            f"no run summary to read ({type(exc).__name__}: {exc})",
            f"check {summary_path}",
        )
    pages = int(this_run.pages_processed or 0)
    wall = float(this_run.wall_seconds or 0.0)
    rate = this_run.pages_per_second_after_engine_start
    basis = "after engine start"
    if not rate and pages and wall > 0:
        rate, basis = pages / wall, "over the whole run, engine start included"
    if not rate:
        return Check(
            "throughput", False, "the smoke run processed no page", f"check {summary_path}"
        )
    baseline = {
        "kind": "ocrfleet-preflight-baseline",
        "note": "one page on one GPU: a smoke baseline, not a benchmark",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "gpu": {
            "name": gpus[0].name if gpus else None,
            "count": len(gpus),
            "driver": gpus[0].driver_version if gpus else None,
            "memory_mib": gpus[0].memory_mib if gpus else None,
            "compute_cap": _cap(gpus[0].compute_cap) if gpus else None,
        },
        "versions": {
            "ocrfleet": __version__,
            "python": platform.python_version(),
            "torch": software.get("torch"),
            "torch_cuda": software.get("torch_cuda"),
            "vllm": software.get("vllm"),
        },
        "model": model,
        "pages": pages,
        "pages_per_second": round(float(rate), 4),
        "pages_per_second_basis": basis,
        "engine_start_seconds": this_run.engine_start_seconds,
        "wall_seconds": wall,
        "run_summary": str(summary_path),
    }
    from .writers import write_json

    write_json(out_path, baseline)
    return Check("throughput", True, f"{float(rate):.3f} pages/s on GPU 0 ({basis}) → {out_path}")


def _skipped(names: Sequence[str], reason: str, fix: str | None) -> list[Check]:
    return [Check(name, False, f"skipped: {reason}", fix, skipped=True) for name in names]


def run_preflight(options: PreflightOptions, runner: Runner | None = None) -> list[Check]:
    """Every check, in order; never raises for a machine that is not ready."""
    quick = runner or subprocess_runner(120.0)
    probe = runner or subprocess_runner(options.timeout)
    slow = runner or subprocess_runner(options.timeout + ENGINE_START_ALLOWANCE)
    later = CHECK_NAMES[CHECK_NAMES.index("torch") :]
    try:
        rc, out, err = quick(list(NVIDIA_SMI_QUERY))
    except OSError as exc:  # FileNotFoundError from a runner that does not catch it
        rc, out, err = 127, "", str(exc)
    if rc == 127:
        return [
            Check(
                "gpus",
                False,
                "nvidia-smi not found: no NVIDIA driver on this machine",
                "run on a GPU instance with the NVIDIA driver installed (AWS: a Deep Learning "
                "Base GPU AMI on g6.12xlarge)",
            ),
            *_skipped(["driver", *later], "no GPU", "fix the gpus check first"),
        ]
    gpus = parse_nvidia_smi(out) if rc == 0 else []
    if not gpus:
        said = _tail(out + "\n" + err, 2) or f"exit {rc}"
        return [
            Check(
                "gpus",
                False,
                f"nvidia-smi finds no usable GPU: {said}",
                "check that this is a GPU instance and the driver is loaded (`lsmod | grep "
                "nvidia`, `dmesg | grep -i nvrm`); after a kernel update reinstall the driver "
                "or reboot",
            ),
            *_skipped(["driver", *later], "no GPU", "fix the gpus check first"),
        ]
    checks = check_gpus(gpus, options.expect_gpus, options.expect_model, options.min_driver)
    software = _probe_software(probe)
    checks += _software_checks(software, gpus)
    model = options.resolved_model()
    checks.append(check_model(model))
    if options.skip_smoke:
        return checks + [
            Check(n, True, "skipped (--skip-smoke)", None, skipped=True)
            for n in ("smoke", "throughput")
        ]
    blocking = [c.name for c in checks if not c.ok and c.name in ("torch", "vllm", "cuda", "model")]
    if blocking:
        return checks + _skipped(
            ["smoke", "throughput"],
            f"{', '.join(blocking)} failed",
            f"fix the {', '.join(blocking)} check(s) first",
        )
    base_dir = options.output_dir or Path(tempfile.mkdtemp(prefix="ocrfleet-preflight-"))
    base_dir.mkdir(parents=True, exist_ok=True)
    fp8 = next(c.ok for c in checks if c.name == "fp8_kv")
    smoke, run_dir = smoke_check(options, slow, fp8, base_dir)
    checks.append(smoke)
    if not smoke.ok or run_dir is None:
        return checks + _skipped(["throughput"], "the smoke run failed", "fix the smoke check")
    out_path = options.throughput_json or run_dir / "preflight-throughput.json"
    checks.append(throughput_check(run_dir, out_path, gpus, software, model))
    return checks


def exit_code(checks: Sequence[Check]) -> int:
    """0 when no check failed; skipped checks (not attempted) are not failures."""
    return 1 if any(not c.ok and not c.skipped for c in checks) else 0


def report(checks: Sequence[Check], as_json: bool) -> str:
    """PASS/FAIL/SKIP lines with a fix under each failure, or JSON; secrets redacted.
    A skipped check was not attempted (an earlier one failed, or --skip-smoke): it is
    counted apart from the failures, which are the ones to fix."""
    secrets = secret_values()
    failed = [c for c in checks if not c.ok and not c.skipped]
    skipped = [c for c in checks if c.skipped]
    if as_json:
        data = {
            "ok": not failed,
            "checks": [asdict(c) for c in checks],
            "failed": [c.name for c in failed],
            "skipped": [c.name for c in skipped],
        }
        return redact(json.dumps(data, indent=2, ensure_ascii=False), secrets)
    width = max((len(c.name) for c in checks), default=0)
    lines: list[str] = []
    for c in checks:
        label = "SKIP" if c.skipped else "PASS" if c.ok else "FAIL"
        lines.append(f"{label}  {c.name:<{width}}  {c.detail}")
        if not c.ok and not c.skipped and c.fix:
            lines.append(f"      {'':<{width}}  fix: {c.fix}")
    passed = len(checks) - len(failed) - len(skipped)
    counts = f"{passed} passed, {len(failed)} failed, {len(skipped)} skipped"
    if failed:
        lines.append(f"preflight: {counts} (fix: {', '.join(c.name for c in failed)})")
    else:
        lines.append(f"preflight: {counts}")
    return redact("\n".join(lines), secrets)
