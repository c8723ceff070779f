"""`ocrfleet preflight`: is this node ready for a long run? Checked in minutes, before hours.

The checks follow the order in which a node breaks: the GPUs and their driver (nvidia-smi),
the Python stack that must drive them (torch, vLLM, CUDA, FP8 KV cache support), the model,
then one real page through `ocrfleet run` on GPU 0 and the throughput baseline it gives.
Every command goes through one `runner` callable, so the tests replay recorded nvidia-smi
outputs instead of needing a GPU. Without a GPU the later checks are meaningless: they are
reported as failed ("skipped: no GPU") rather than attempted, and nothing raises.

This module runs the checks in order and reports them; the checks themselves are in
preflight_checks.py (machine, software, model) and preflight_smoke.py (a real run).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .preflight_checks import (
    CHECK_NAMES,
    ENGINE_START_ALLOWANCE,
    NVIDIA_SMI_QUERY,
    Check,
    PreflightOptions,
    Runner,
    check_gpus,
    check_model,
    parse_nvidia_smi,
    probe_software,
    software_checks,
    subprocess_runner,
    tail_lines,
)
from .preflight_smoke import smoke_check, throughput_check
from .redact import redact, secret_values

# A smoke run without these cannot work: it is skipped, not attempted.
BLOCKING_CHECKS = ("torch", "vllm", "cuda", "model")

__all__ = ["Check", "PreflightOptions", "exit_code", "report", "run_preflight"]


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
        said = tail_lines(out + "\n" + err, 2) or f"exit {rc}"
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
    software = probe_software(probe)
    checks += software_checks(software, gpus)
    model = options.resolved_model()
    checks.append(check_model(model))
    if options.skip_smoke:
        return checks + [
            Check(n, True, "skipped (--skip-smoke)", None, skipped=True)
            for n in ("smoke", "throughput")
        ]
    blocking = [c.name for c in checks if not c.ok and c.name in BLOCKING_CHECKS]
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
