"""Encoder CUDA graphs (vLLM's cudagraph_mm_encoder): on by default where vLLM's graphs fit."""

from __future__ import annotations

import pytest

from ocrfleet.config import EngineConfig
from ocrfleet.engines.vllm import ENCODER_GRAPH_SETTINGS, engine_kwargs


@pytest.mark.parametrize("resolution", ["gundam", "base"])
def test_on_for_modes_with_1024_px_global_views_on_a_gpu(resolution: str) -> None:
    config = EngineConfig(name="vllm", resolution=resolution)  # type: ignore[arg-type]
    kwargs = engine_kwargs(config, on_cuda=True)
    assert kwargs["compilation_config"] == ENCODER_GRAPH_SETTINGS
    assert kwargs["compilation_config"]["cudagraph_mm_encoder"] is True


@pytest.mark.parametrize("resolution", ["tiny", "small", "large"])
def test_off_where_vllms_graph_shapes_do_not_fit(resolution: str) -> None:
    config = EngineConfig(name="vllm", resolution=resolution)  # type: ignore[arg-type]
    assert "compilation_config" not in engine_kwargs(config, on_cuda=True)


def test_off_on_cpu_and_with_enforce_eager() -> None:
    assert "compilation_config" not in engine_kwargs(EngineConfig(name="vllm"), on_cuda=False)
    eager = EngineConfig(name="vllm", enforce_eager=True)
    assert "compilation_config" not in engine_kwargs(eager, on_cuda=True)


def test_a_users_compilation_config_wins_whole() -> None:
    config = EngineConfig(name="vllm", extra_args={"compilation_config": {"level": 0}})
    assert engine_kwargs(config, on_cuda=True)["compilation_config"] == {"level": 0}


def test_each_start_gets_its_own_copy() -> None:
    first = engine_kwargs(EngineConfig(name="vllm"), on_cuda=True)
    first["compilation_config"]["encoder_cudagraph_token_budgets"].append(1)
    second = engine_kwargs(EngineConfig(name="vllm"), on_cuda=True)
    assert second["compilation_config"]["encoder_cudagraph_token_budgets"] == [1200]
