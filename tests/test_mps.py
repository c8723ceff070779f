"""CUDA MPS for engines that share a GPU (`--mps`): a private daemon per GPU, its engines
pointed at it, quit at the end; the rule, the fallbacks and the one-line errors.

This machine has no GPU and no MPS: a stand-in `nvidia-cuda-mps-control` on PATH logs how it
was called (environment included) and makes or removes the control socket's file, as the real
one does in its pipe folder. Real `ocrfleet run` processes with the scripted engine, which
records the CUDA variables each engine process was given."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.errors import ConfigError
from ocrfleet.gpu_sharing import (
    MPS_CONTROL,
    MpsDaemon,
    choose_mps,
    gpu_sharing,
    pipe_root,
    probe_daemon,
)
from tests.conftest import cli_env, run_cli
from tests.test_supervisor import SCRIPTED, finished_pages, make_corpus, scripted_args, wait_for

STAND_IN = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
env = {{k: v for k, v in os.environ.items() if k.startswith("CUDA_")}}
pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
log = Path(os.environ["STAND_IN_LOG"])
def note(what):
    with log.open("a") as f:
        f.write(json.dumps({{"call": what, "env": env}}) + "\\n")
if sys.argv[1:] == ["-d"]:
    note("start")
    if os.environ.get("STAND_IN_FAIL"):
        sys.exit("An instance of this daemon is already running")
    (pipe / "control").touch()
else:
    for line in sys.stdin:
        note(line.strip())
        if line.strip() == "quit":
            (pipe / "control").unlink(missing_ok=True)
"""


def path_without_mps() -> str:
    """PATH minus any folder holding a real nvidia-cuda-mps-control (a GPU host)."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if not (Path(f) / MPS_CONTROL).exists())


def environment(tmp_path: Path, *, stand_in: bool = True, **extra: str) -> dict[str, str]:
    env = cli_env()
    env.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    env["PATH"] = path_without_mps()
    if stand_in:
        folder = tmp_path / "bin"
        folder.mkdir(exist_ok=True)
        tool = folder / MPS_CONTROL
        tool.write_text(STAND_IN)
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
        env["PATH"] = f"{folder}{os.pathsep}{env['PATH']}"
    env["STAND_IN_LOG"] = str(tmp_path / "mps-calls.jsonl")
    return {**env, **extra}


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "mps-calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def engine_envs(tmp_path: Path) -> list[dict[str, str]]:
    folder = tmp_path / "engines"
    return (
        [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if folder.exists()
        else []
    )


def run(
    tmp_path: Path,
    env: dict[str, str],
    gpus: str,
    engines: int,
    *options: str,
    out_name: str = "out",
    delay: float = 0.05,
) -> tuple[Any, dict[str, Any] | None]:
    out = tmp_path / out_name
    result = run_cli(
        "run", str(tmp_path / "in"), "-o", str(out), *SCRIPTED, "--gpus", gpus,
        "--engines-per-gpu", str(engines), "--no-progress", *options,
        *scripted_args(record_env=str(tmp_path / "engines"), delay=delay, concurrency=1),
        env=env,
    )  # fmt: skip
    summary = out / "run-summary.json"
    return result, json.loads(summary.read_text("utf-8")) if summary.exists() else None


@pytest.mark.slow
def test_engines_sharing_a_gpu_run_under_a_private_daemon_per_gpu(tmp_path: Path) -> None:
    # Pages for ~24 s of one engine: the four, started one after another on each GPU, all work.
    total = make_corpus(tmp_path / "in", docs=4, pages=12)
    result, summary = run(tmp_path, environment(tmp_path), "0,1", 2, delay=0.5)
    assert result.returncode == 0, result.stderr
    assert summary is not None and summary["engines_per_gpu"]["mps"] is True
    pages = [w["pages"] for w in summary["workers"]]
    assert len(pages) == 4 and sum(pages) == total and min(pages) > 0, pages

    made = calls(tmp_path)
    starts = [c["env"] for c in made if c["call"] == "start"]
    # One daemon per GPU, given that GPU alone, each with its own pipe and log folders.
    assert sorted(s["CUDA_VISIBLE_DEVICES"] for s in starts) == ["0", "1"]
    pipes = {s["CUDA_VISIBLE_DEVICES"]: s["CUDA_MPS_PIPE_DIRECTORY"] for s in starts}
    assert len(set(pipes.values())) == 2
    assert all(
        Path(s["CUDA_MPS_LOG_DIRECTORY"]).parent == tmp_path / "out" / "logs" for s in starts
    )
    # Each engine joins its GPU's daemon, which shows that GPU as device 0.
    engines = engine_envs(tmp_path)
    assert len(engines) == 4
    assert all(e["CUDA_VISIBLE_DEVICES"] == "0" for e in engines), engines
    assert sorted(e["CUDA_MPS_PIPE_DIRECTORY"] for e in engines) == sorted(
        [pipes["0"], pipes["0"], pipes["1"], pipes["1"]]
    )
    # Both daemons are quit at the end, after their starts, and their folders are gone.
    quits = [c["env"]["CUDA_MPS_PIPE_DIRECTORY"] for c in made if c["call"] == "quit"]
    assert sorted(quits) == sorted(pipes.values())
    assert [c["call"] for c in made][-2:] == ["quit", "quit"]
    assert not any(Path(p).exists() for p in pipes.values())


@pytest.mark.slow
def test_one_engine_per_gpu_runs_without_mps(tmp_path: Path) -> None:
    make_corpus(tmp_path / "in", docs=1, pages=4)
    result, summary = run(tmp_path, environment(tmp_path), "0", 1)
    assert result.returncode == 0, result.stderr
    assert summary is not None and summary["engines_per_gpu"]["mps"] is False
    assert "one engine per GPU" in summary["engines_per_gpu"]["mps_reason"]
    assert calls(tmp_path) == []
    assert all("CUDA_MPS_PIPE_DIRECTORY" not in e for e in engine_envs(tmp_path))


@pytest.mark.slow
def test_without_the_control_program_auto_goes_on_and_on_stops_in_one_line(
    tmp_path: Path,
) -> None:
    total = make_corpus(tmp_path / "in", docs=1, pages=4)
    env = environment(tmp_path, stand_in=False)
    result, summary = run(tmp_path, env, "0", 2)
    assert result.returncode == 0, result.stderr
    assert summary is not None and summary["engines_per_gpu"]["mps"] is False
    assert summary["engines_per_gpu"]["mps_reason"] == f"{MPS_CONTROL} not found"
    assert sum(w["pages"] for w in summary["workers"]) == total
    assert all("CUDA_MPS_PIPE_DIRECTORY" not in e for e in engine_envs(tmp_path))

    shutil.rmtree(tmp_path / "engines")
    result, _ = run(tmp_path, env, "0", 2, "--mps", "on", out_name="out-on")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "--mps on" in line]
    assert len(errors) == 1 and MPS_CONTROL in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "engines").exists()  # stopped before any engine started


@pytest.mark.slow
def test_a_daemon_that_does_not_start_leaves_the_run_without_mps(tmp_path: Path) -> None:
    total = make_corpus(tmp_path / "in", docs=1, pages=4)
    result, summary = run(tmp_path, environment(tmp_path, STAND_IN_FAIL="1"), "0", 2)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "did not start" in line]
    assert len(warning) == 1 and "already running" in warning[0], result.stderr
    assert summary is not None and summary["engines_per_gpu"]["mps"] is False
    assert "CUDA MPS for GPU 0 did not start" in summary["engines_per_gpu"]["mps_reason"]
    assert sum(w["pages"] for w in summary["workers"]) == total
    assert all("CUDA_MPS_PIPE_DIRECTORY" not in e for e in engine_envs(tmp_path))


@pytest.mark.slow
def test_an_mps_daemon_already_set_up_is_used_as_it_is(tmp_path: Path) -> None:
    make_corpus(tmp_path / "in", docs=1, pages=4)
    theirs = str(tmp_path / "their-mps")
    result, summary = run(tmp_path, environment(tmp_path, CUDA_MPS_PIPE_DIRECTORY=theirs), "0", 2)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == []  # neither started nor quit
    assert summary is not None and theirs in summary["engines_per_gpu"]["mps_reason"]
    assert all(e.get("CUDA_MPS_PIPE_DIRECTORY") == theirs for e in engine_envs(tmp_path))


def test_a_daemon_left_by_a_killed_run_is_quit_before_a_new_one_starts(tmp_path: Path) -> None:
    env = environment(tmp_path)
    left = pipe_root("run-key") / "gpu0"
    left.mkdir(parents=True, exist_ok=True)
    (left / "control").touch()
    with gpu_sharing("auto", 2, (0,), "run-key", tmp_path / "logs", environ=env) as sharing:
        assert sharing.pipes() == {0: (str(left), str(tmp_path / "logs" / "mps-gpu0"))}
        assert (left / "control").exists()
    assert [c["call"] for c in calls(tmp_path)] == ["quit", "start", "quit"]
    assert not pipe_root("run-key").exists()


def test_daemons_are_quit_when_the_run_fails(tmp_path: Path) -> None:
    env = environment(tmp_path)
    with (
        pytest.raises(RuntimeError),
        gpu_sharing("on", 1, (0, 1), "failing-run", tmp_path / "logs", environ=env),
    ):
        raise RuntimeError("a worker crashed the supervisor")
    assert [c["call"] for c in calls(tmp_path)] == ["start", "start", "quit", "quit"]
    assert not pipe_root("failing-run").exists()


def test_the_rule(tmp_path: Path) -> None:
    found = environment(tmp_path)
    missing = environment(tmp_path, stand_in=False)
    assert choose_mps("auto", 4, (0,), found).use
    assert choose_mps("on", 1, (0,), found).use  # on: for a single engine too
    assert not choose_mps("auto", 1, (0,), found).use
    assert not choose_mps("off", 4, (0,), found).use
    assert not choose_mps("auto", 4, (), found).use
    assert not choose_mps("auto", 4, (0,), missing).use
    assert not choose_mps("auto", 4, (0, 1), found, tensor_parallel=2).use
    with pytest.raises(ConfigError, match="tensor parallel"):
        choose_mps("on", 1, (0, 1), found, tensor_parallel=2)
    with pytest.raises(ConfigError, match=f"--mps on: {MPS_CONTROL} is not installed"):
        choose_mps("on", 4, (0,), missing)


def test_a_daemon_that_serves_no_cuda_client_is_quit_and_the_run_goes_on_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each daemon is probed with a CUDA context, as an engine will make one (here the probe
    is scripted to fail: this machine has no GPU, where the real probe passes untried)."""
    env = environment(tmp_path)

    def refused(daemon: MpsDaemon, _environ: Mapping[str, str]) -> str | None:
        return "cuDevicePrimaryCtxRetain returned CUDA error 805" if daemon.gpu == 1 else None

    with gpu_sharing(
        "auto", 2, (0, 1), "probed", tmp_path / "logs", environ=env, probe=refused
    ) as sharing:
        assert sharing.daemons == {} and not sharing.choice.use
        assert "CUDA MPS for GPU 1 did not start" in sharing.choice.reason
        assert "error 805" in sharing.choice.reason
    # Both daemons started, then both quit at once (GPU 0's too), before any engine.
    assert [c["call"] for c in calls(tmp_path)] == ["start", "start", "quit", "quit"]
    assert any("without MPS" in r.message for r in caplog.records)
    with (
        pytest.raises(ConfigError, match="--mps on: CUDA MPS for GPU 1 did not start"),
        gpu_sharing("on", 2, (0, 1), "probed", tmp_path / "logs", environ=env, probe=refused),
    ):
        pass


def test_the_probe_passes_where_there_is_no_cuda_driver(tmp_path: Path) -> None:
    daemon = MpsDaemon(0, tmp_path / "pipe", tmp_path / "logs")
    if ctypes.util.find_library("cuda") is not None:
        pytest.skip("a CUDA driver is installed here: the probe would really run")
    assert probe_daemon(daemon, {"PATH": os.environ.get("PATH", "")}) is None


def start_run(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`ocrfleet run`, 2 slow engines on "GPU 0", in the background."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "ocrfleet", "run", str(tmp_path / "in"), "-o",
            str(tmp_path / "out"), *SCRIPTED, "--gpus", "0", "--engines-per-gpu", "2",
            "--no-progress", *scripted_args(delay=0.5, concurrency=1),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_a_stopped_run_quits_its_daemon_and_a_killed_runs_daemon_is_quit_by_the_next(
    tmp_path: Path,
) -> None:
    total = make_corpus(tmp_path / "in", docs=2, pages=10)
    out = tmp_path / "out"
    env = environment(tmp_path)

    proc = start_run(tmp_path, env)  # SIGTERM: a graceful stop quits the daemon
    wait_for(lambda: finished_pages(out) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr  # stopped with pages left
    made = [c["call"] for c in calls(tmp_path)]
    assert made == ["start", "quit"], made
    pipe = Path(calls(tmp_path)[0]["env"]["CUDA_MPS_PIPE_DIRECTORY"])
    assert not pipe.parent.exists()

    proc = start_run(tmp_path, env)  # kill -9: no chance to quit the daemon
    wait_for(lambda: len(calls(tmp_path)) == 3 and finished_pages(out) >= 4)
    proc.kill()
    proc.communicate(timeout=60)
    assert [c["call"] for c in calls(tmp_path)][2:] == ["start"]
    assert (pipe / "control").exists()  # the daemon outlived its run

    result, summary = run(tmp_path, env, "0", 2)  # the next run on OUT quits it first
    assert result.returncode == 0, result.stderr
    assert [c["call"] for c in calls(tmp_path)][3:] == ["quit", "start", "quit"]
    assert not pipe.parent.exists()
    assert summary is not None and summary["pages"]["done"] == total
