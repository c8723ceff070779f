"""CUDA MPS for the engines that share a GPU (`--mps auto|on|off`).

Without MPS the CUDA contexts of K engines on one GPU take turns (time slices), and one
engine's small kernels leave most of the GPU idle during its turn. Under MPS their kernels run
side by side: H200, vLLM 0.26, 4 engines, 512 tokens a page (2026-12-02): 27.35 pages/s with
MPS, 23.20 without, on the host where vLLM's recipe did 8.61.

ocrfleet starts a private control daemon per GPU: its own pipe and log folders, the GPU given
to it alone (CUDA_VISIBLE_DEVICES), and quits it when the run ends. Nothing system-wide
changes (no compute mode, no /tmp/nvidia-mps): a CUDA program joins an MPS daemon only through
the pipe folder in its environment, so other processes on the host do not see it. The daemon
shows its one GPU as device 0, so that GPU's engines get CUDA_VISIBLE_DEVICES=0 and its pipe
folder (NVIDIA's MPS guide: a client must not name the GPU by its host index).

auto (the default) uses MPS where more than one engine shares a GPU, nvidia-cuda-mps-control
is installed and no MPS daemon is already set up (CUDA_MPS_PIPE_DIRECTORY in the environment
or the system daemon's pipe folder): engines then join that one as they would anyway. A
daemon that does not start, or through which a CUDA context cannot be made (the probe, before
any engine starts), leaves the run without MPS, with a warning. `on` uses it for one
engine per GPU too and fails in one line where it cannot; `off` never uses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

MPS_CONTROL = "nvidia-cuda-mps-control"
MPS_MODES = ("auto", "on", "off")
SYSTEM_PIPE_DIRECTORY = Path("/tmp/nvidia-mps")
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
# The control socket a started daemon creates in its pipe folder.
CONTROL_SOCKET = "control"
START_SECONDS = 15.0
COMMAND_SECONDS = 30.0
PROBE_SECONDS = 120.0
# A CUDA context made through a daemon, as each engine will make one: the MPS server starts
# and must take a client. Exit 0: it did; NO_DRIVER: no CUDA driver library on this machine
# (nothing to probe: the engines could not use a GPU either); else the failing call's error.
NO_DRIVER = 3
PROBE = """
import ctypes, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError:
    sys.exit(3)
device, context = ctypes.c_int(), ctypes.c_void_p()
calls = (("cuInit", (0,)), ("cuDeviceGet", (ctypes.byref(device), 0)),
         ("cuDevicePrimaryCtxRetain", (ctypes.byref(context), device)))
for name, args in calls:
    code = getattr(cuda, name)(*args)
    if code:
        sys.exit(f"{name} returned CUDA error {code}")
release = getattr(cuda, "cuDevicePrimaryCtxRelease_v2", None) or cuda.cuDevicePrimaryCtxRelease
release(device)
"""


@dataclass(frozen=True)
class MpsChoice:
    """Whether this run's engines share their GPUs under MPS, and why (run summary)."""

    use: bool
    reason: str


@dataclass(frozen=True)
class MpsDaemon:  # one GPU's private daemon
    gpu: int
    pipe: Path
    logs: Path

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        return {**base, PIPE_ENV: str(self.pipe), LOG_ENV: str(self.logs)}


@dataclass
class GpuSharing:
    """What the run's workers need: each GPU's daemon (none without MPS)."""

    choice: MpsChoice
    daemons: dict[int, MpsDaemon] = field(default_factory=dict)

    def pipes(self) -> dict[int, tuple[str, str]]:
        """GPU → (pipe folder, log folder) for the engines on it."""
        return {g: (str(d.pipe), str(d.logs)) for g, d in self.daemons.items()}


# A check that a started daemon serves CUDA clients: None, or why not (one line).
Probe = Callable[[MpsDaemon, Mapping[str, str]], str | None]


def choose_mps(
    mode: str,
    engines_per_gpu: int,
    gpus: tuple[int, ...],
    environ: Mapping[str, str],
    tensor_parallel: int = 1,
) -> MpsChoice:
    """The rule, without starting anything (see the module's docstring)."""
    if mode not in MPS_MODES:
        raise ConfigError(f"--mps takes auto, on or off, not {mode!r}")
    if mode == "off":
        return MpsChoice(False, "off (--mps off)")
    if not gpus:
        return MpsChoice(False, "no GPU in this run")
    if tensor_parallel > 1:
        if mode == "on":
            raise ConfigError("--mps on: an engine over several GPUs (tensor parallel) cannot")
        return MpsChoice(False, "tensor-parallel engines: one engine per GPU group")
    if mode == "auto" and engines_per_gpu < 2:
        return MpsChoice(False, "one engine per GPU: nothing to share")
    existing = environ.get(PIPE_ENV)
    if existing or (SYSTEM_PIPE_DIRECTORY / CONTROL_SOCKET).exists():
        where = existing or str(SYSTEM_PIPE_DIRECTORY)
        return MpsChoice(False, f"an MPS daemon is already set up ({where}): engines use it")
    if shutil.which(MPS_CONTROL, path=environ.get("PATH")) is None:
        if mode == "on":
            raise ConfigError(
                f"--mps on: {MPS_CONTROL} is not installed (it comes with the NVIDIA driver's "
                "utilities); install it or use --mps off"
            )
        return MpsChoice(False, f"{MPS_CONTROL} not found")
    return MpsChoice(True, f"a private MPS daemon per GPU ({engines_per_gpu} engine(s) each)")


def pipe_root(run_key: str) -> Path:
    """This run's daemons' folders: short (a Unix socket path has ~107 bytes), private to the
    user and the run (output directory and shard), the same on a resume, so a daemon a killed
    run left behind is found and quit."""
    key = hashlib.sha256(run_key.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ocrfleet-mps-{os.getuid()}-{key}"


def _run(
    argv: list[str], env: Mapping[str, str], timeout: float, stdin: str | None = None
) -> subprocess.CompletedProcess[str] | str:
    """A short command's result, or why it could not run (one line)."""
    try:
        return subprocess.run(
            argv,
            input=stdin,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)


def _last_line(text: str) -> str | None:
    lines = text.strip().splitlines()
    return lines[-1] if lines else None


def _control(daemon: MpsDaemon, environ: Mapping[str, str], command: str) -> None:
    """Send one command ("quit") to a daemon; a daemon already gone is fine."""
    _run([MPS_CONTROL], daemon.env(environ), COMMAND_SECONDS, stdin=command + "\n")


def probe_daemon(daemon: MpsDaemon, environ: Mapping[str, str]) -> str | None:
    """None when a CUDA context through the daemon works (or there is no CUDA driver here to
    try it with), else what failed (one line)."""
    env = {**daemon.env(environ), "CUDA_VISIBLE_DEVICES": "0"}  # as the engines will see it
    done = _run([sys.executable, "-c", PROBE], env, PROBE_SECONDS)
    if isinstance(done, str):
        return f"a CUDA context through it: {done}"
    if done.returncode in (0, NO_DRIVER):
        return None
    return f"a CUDA context through it failed: {_last_line(done.stderr) or done.returncode}"


def _start(daemon: MpsDaemon, environ: Mapping[str, str]) -> str | None:
    """Start one daemon; None when its control socket is up, else why not (one line)."""
    if (daemon.pipe / CONTROL_SOCKET).exists():
        _control(daemon, environ, "quit")  # left by a run killed before it could quit it
    shutil.rmtree(daemon.pipe, ignore_errors=True)
    for folder in (daemon.pipe, daemon.logs):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**daemon.env(environ), "CUDA_VISIBLE_DEVICES": str(daemon.gpu)}
    done = _run([MPS_CONTROL, "-d"], env, COMMAND_SECONDS)
    if isinstance(done, str):
        return f"{MPS_CONTROL} -d: {done}"
    if done.returncode != 0:
        said = _last_line(done.stderr or done.stdout) or "no message"
        return f"{MPS_CONTROL} -d exited {done.returncode}: {said}"
    deadline = time.monotonic() + START_SECONDS
    while not (daemon.pipe / CONTROL_SOCKET).exists():
        if time.monotonic() > deadline:
            return f"no control socket in {daemon.pipe} after {START_SECONDS:.0f} s"
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def gpu_sharing(
    mode: str,
    engines_per_gpu: int,
    gpus: tuple[int, ...],
    run_key: str,
    log_dir: Path,
    environ: Mapping[str, str] | None = None,
    tensor_parallel: int = 1,
    probe: Probe = probe_daemon,
) -> Iterator[GpuSharing]:
    """Decide, start a daemon per GPU where MPS is used, and quit them all on the way out
    (a finished, failed or interrupted run alike)."""
    environ = dict(os.environ if environ is None else environ)
    sharing = GpuSharing(choose_mps(mode, engines_per_gpu, gpus, environ, tensor_parallel))
    root = pipe_root(run_key)
    try:
        if sharing.choice.use:
            sharing = _start_all(sharing, mode, gpus, root, log_dir, environ, probe)
        else:
            log.info("CUDA MPS: off (%s)", sharing.choice.reason)
        if sharing.daemons:
            log.info("CUDA MPS: on (%s)", sharing.choice.reason)
        yield sharing
    finally:
        _quit_all(sharing, environ)
        shutil.rmtree(root, ignore_errors=True)


def _start_all(
    sharing: GpuSharing,
    mode: str,
    gpus: tuple[int, ...],
    root: Path,
    log_dir: Path,
    environ: Mapping[str, str],
    probe: Probe,
) -> GpuSharing:
    """Start and probe each GPU's daemon; at the first that fails, quit them all and go on
    without MPS (a warning), or stop (--mps on)."""
    for gpu in gpus:
        daemon = MpsDaemon(gpu, root / f"gpu{gpu}", log_dir / f"mps-gpu{gpu}")
        problem = _start(daemon, environ)
        if problem is None:
            sharing.daemons[gpu] = daemon
            problem = probe(daemon, environ)
        if problem is None:
            continue
        message = f"CUDA MPS for GPU {gpu} did not start: {problem}"
        _quit_all(sharing, environ)
        if mode == "on":
            raise ConfigError(f"--mps on: {message}")
        log.warning("%s; the engines share the GPUs without MPS", message)
        return GpuSharing(MpsChoice(False, message))
    return sharing


def _quit_all(sharing: GpuSharing, environ: Mapping[str, str]) -> None:
    for daemon in sharing.daemons.values():
        _control(daemon, environ, "quit")
    sharing.daemons.clear()
