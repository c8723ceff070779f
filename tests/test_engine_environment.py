"""The environment defaults ocrfleet gives vLLM's engine process (found on a GPU host)."""

from __future__ import annotations

from ocrfleet.engines.vllm import apply_engine_environment


def test_unset_variables_get_the_defaults() -> None:
    environ: dict[str, str] = {"PATH": "/usr/bin"}
    applied = apply_engine_environment(environ)
    assert applied == {"VLLM_USE_FLASHINFER_SAMPLER": "0", "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    assert environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert environ["PATH"] == "/usr/bin"


def test_a_users_own_setting_wins() -> None:
    environ = {"VLLM_WORKER_MULTIPROC_METHOD": "fork"}
    applied = apply_engine_environment(environ)
    assert applied == {"VLLM_USE_FLASHINFER_SAMPLER": "0"}
    assert environ == {"VLLM_WORKER_MULTIPROC_METHOD": "fork", "VLLM_USE_FLASHINFER_SAMPLER": "0"}


def test_gpu_engines_get_one_torch_thread_unless_the_user_says() -> None:
    environ: dict[str, str] = {}
    assert apply_engine_environment(environ, on_gpu=True)["OMP_NUM_THREADS"] == "1"
    assert environ["OMP_NUM_THREADS"] == "1"
    mine = {"OMP_NUM_THREADS": "4"}
    assert "OMP_NUM_THREADS" not in apply_engine_environment(mine, on_gpu=True)
    assert mine["OMP_NUM_THREADS"] == "4"


def test_cpu_engines_keep_their_threads() -> None:
    environ: dict[str, str] = {}
    apply_engine_environment(environ, on_gpu=False)
    assert "OMP_NUM_THREADS" not in environ
