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
