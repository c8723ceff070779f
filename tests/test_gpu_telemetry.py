"""GPU telemetry: samples into the ledger, per-GPU means in the summary, util in the progress."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocrfleet.gpu_telemetry import GpuReadings, GpuSampler
from ocrfleet.ledger import Ledger
from ocrfleet.telemetry import Progress
from ocrfleet.testing import samples
from tests.conftest import cli_env
from tests.fake_nvml import FakeNvml


def _run(
    tmp_path: Path, *extra: str, nvml: str | None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    samples.text_pdf(tmp_path / "in" / "doc.pdf", [f"page {i}" for i in range(1, 9)])
    out = tmp_path / "out"
    env = cli_env()
    env.pop("OCRFLEET_NVML", None)
    if nvml:
        env["OCRFLEET_NVML"] = nvml
    command = [sys.executable, "-m", "ocrfleet", "run", str(tmp_path / "in"), "-o", str(out)]
    command += ["--engine", "tests.fakes:scripted", "--vllm-arg", "delay=0.1", *extra]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    return result, out


def test_gpu_workers_sample_nvml_into_the_ledger_and_the_summary_has_means(tmp_path: Path) -> None:
    result, out = _run(
        tmp_path, "--gpus", "0,1", "--gpu-sample-seconds", "0.2", nvml="tests.fake_nvml:FakeNvml"
    )
    assert result.returncode == 0, result.stderr
    ledger = Ledger(out / "ocrfleet.sqlite")
    try:
        rows = ledger._db.execute(
            "SELECT gpu, COUNT(*), MIN(util), MAX(util) FROM gpu_samples GROUP BY gpu"
        ).fetchall()
    finally:
        ledger.close()
    assert [(r[0], r[2], r[3]) for r in rows] == [(0, 30.0, 30.0), (1, 50.0, 50.0)]
    assert all(r[1] >= 2 for r in rows)  # at least a sample at start and one at stop
    gpus = json.loads((out / "run-summary.json").read_text("utf-8"))["gpus"]
    assert gpus["gpu0"]["util_mean_percent"] == 30.0 and gpus["gpu1"]["util_mean_percent"] == 50.0
    assert gpus["gpu1"]["memory_mean_mib"] == 2048.0 and gpus["gpu0"]["power_mean_w"] == 250.0
    assert gpus["gpu1"]["temperature_mean_c"] == 51.0 and gpus["gpu0"]["samples"] >= 2
    html = (out / "report.html").read_text("utf-8")
    assert "GPU utilisation" in html and "<h2>GPU means</h2>" in html


def test_without_nvml_a_gpu_worker_runs_on_and_says_why_there_is_no_telemetry(
    tmp_path: Path,
) -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pynvml is installed here")
    result, out = _run(tmp_path, "--gpus", "0", nvml=None)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run-summary.json").read_text("utf-8"))["gpus"] == {}
    assert "no GPU telemetry: NVML is not available" in (out / "logs" / "worker-0.log").read_text()


def test_the_sampler_writes_at_start_every_interval_and_at_stop(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    Ledger(db).close()
    nvml = FakeNvml()
    sampler = GpuSampler(db, "w", (0, 3), nvml, interval=0.05).start()
    time.sleep(0.4)
    sampler.stop()
    assert nvml.closed
    readings = GpuReadings(db, since=0.0)
    means = readings.means()
    assert set(means) == {"gpu0", "gpu3"} and means["gpu3"]["util_mean_percent"] == 90.0
    assert means["gpu0"]["samples"] >= 4
    assert readings.utilisation() == {"gpu0": 30.0, "gpu3": 90.0}
    assert GpuReadings(db, since=time.time() + 60).means() == {}  # another run's samples


def test_the_progress_line_shows_each_gpus_utilisation(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(10, 0, enabled=True)
    progress.advance({"gpu0": 1.5, "gpu1": 1.25}, {"gpu0": 87.0, "gpu1": 12.4})
    progress.close()
    line = capsys.readouterr().err
    assert "gpu0 busy=87%" in line and "gpu1 busy=12%" in line and "gpu0=1.50/s" in line


def test_the_live_progress_bar_of_a_gpu_run_shows_utilisation(tmp_path: Path) -> None:
    """On a terminal (a real pty), the progress bar carries each GPU's sampled utilisation."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    samples.text_pdf(tmp_path / "in" / "doc.pdf", [f"page {i}" for i in range(1, 7)])
    env = {**cli_env(), "OCRFLEET_NVML": "tests.fake_nvml:FakeNvml"}
    command = [sys.executable, "-m", "ocrfleet", "run", str(tmp_path / "in")]
    command += ["-o", str(tmp_path / "out"), "--engine", "tests.fakes:scripted", "--gpus", "0,1"]
    command += ["--vllm-arg", "delay=0.2", "--gpu-sample-seconds", "0.2"]
    leader, follower = pty.openpty()
    # A pty starts 0 columns wide, and tqdm draws a bar as wide as the terminal.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 220, 0, 0))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert "gpu0 busy=30%" in terminal and "gpu1 busy=50%" in terminal, terminal[-2000:]
