"""RunConfig by layer: each layer validates itself, settings may still be given by name, and the
config JSON of ledgers written before the layers (flat) still loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ocrfleet.config import (
    LAYERS,
    EngineConfig,
    FleetConfig,
    PagePolicy,
    RenderConfig,
    RunConfig,
    SyncConfig,
    stored_setting,
)
from ocrfleet.errors import ConfigError

# What RunConfig.to_json wrote before the layers (commit 2533e2d), as old ledgers keep it.
OLD_FLAT = (
    '{"batch_pages": null, "blank_threshold": 2e-05, "detect_gpus": true, "dpi": 200, "engine": '
    '{"dtype": "bfloat16", "enforce_eager": false, "extra_args": {}, "gpu_memory_utilization": '
    '0.9, "ignore_eos": false, "kv_cache_dtype": "fp8", "load_format": null, "max_model_len": '
    '8192, "max_num_seqs": null, "max_tokens": 4096, "mm_encoder_tp_mode": null, "model": '
    '"deepseek-ai/DeepSeek-OCR", "name": "vllm", "ngram_impl": "batched", "ngram_size": 30, '
    '"ngram_whitelist": [128821, 128822], "ngram_window": 90, "ocr_engine": "default", '
    '"preprocess": "render", "quantization": null, "resolution": "gundam", '
    '"tensor_parallel_size": 1, "tesseract_langs": "ell+eng"}, "engines_per_gpu": 2, '
    '"fresh_ledger": false, "gpu_sample_seconds": 5.0, "gpus": [0, 1], "image_cache": '
    '"/nvme/c", "inputs": ["scans/", "s3://bucket/in/"], "lease_seconds": 120.0, "log_level": '
    '"INFO", "max_attempts": 2, "max_image_pixels": 25000000, "max_image_side": 10000, '
    '"max_page_crashes": 2, "max_pages_per_document": 500, "max_worker_restarts": 5, "mode": '
    '"raw", "num_shards": 1, "output_dir": "/w/out", "progress": false, "prompt": "markdown", '
    '"redo_flags": ["repetition_loop"], "render_timeout": 300.0, "render_workers": null, '
    '"retry_failed": false, "shard_index": 0, "stage_dir": "/w/stage", "sync_interval": 300.0, '
    '"sync_to": "s3://bucket/out", "timeout_seconds": 600.0, "workers": 1}'
)


def layered() -> RunConfig:
    return RunConfig(
        inputs=("scans/", "s3://bucket/in/"),
        output_dir=Path("/w/out"),
        engine=EngineConfig("vllm", max_tokens=4096),
        render=RenderConfig(dpi=200, mode="raw", image_cache=Path("/nvme/c")),
        policy=PagePolicy(redo_flags=("repetition_loop",), max_pages_per_document=500),
        fleet=FleetConfig(gpus=(0, 1), engines_per_gpu=2),
        sync=SyncConfig(sync_to="s3://bucket/out", stage_dir=Path("/w/stage")),
        progress=False,
    )


def test_an_old_flat_config_json_loads_into_the_layers() -> None:
    old = RunConfig.from_json(OLD_FLAT)
    assert old == layered()
    assert old.render.image_cache == Path("/nvme/c") and old.fleet.gpus == (0, 1)
    assert old.engine.ngram_whitelist == (128821, 128822)


def test_the_layered_json_round_trips() -> None:
    config = layered()
    data = json.loads(config.to_json())
    assert data["render"]["dpi"] == 200 and data["fleet"]["gpus"] == [0, 1]
    assert "dpi" not in data
    assert RunConfig.from_json(config.to_json()) == config


def test_a_stored_setting_reads_either_shape() -> None:
    for text in (OLD_FLAT, layered().to_json()):
        data = json.loads(text)
        assert stored_setting(data, "dpi") == 200
        assert stored_setting(data, "mode") == "raw"
        assert stored_setting(data, "prompt") == "markdown"


def test_settings_given_by_name_land_in_their_layer() -> None:
    config = RunConfig(("x",), Path("o"), dpi=200, mode="raw", gpus=(0, 1), engines_per_gpu=2)
    assert config.render == RenderConfig(dpi=200, mode="raw")
    assert config.fleet == FleetConfig(gpus=(0, 1), engines_per_gpu=2)
    moved = dataclasses.replace(config, fleet=dataclasses.replace(config.fleet, gpus=(3,)))
    assert moved.fleet.gpus == (3,) and moved.render.dpi == 200
    with pytest.raises(TypeError, match="unknown setting 'dpii'"):
        RunConfig(("x",), Path("o"), dpii=200)


def test_each_layer_refuses_its_own_bad_values() -> None:
    with pytest.raises(ConfigError, match="--dpi"):
        RenderConfig(dpi=10)
    with pytest.raises(ConfigError, match="--max-attempts"):
        PagePolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="--shard-index 4"):
        FleetConfig(num_shards=4, shard_index=4)
    with pytest.raises(ConfigError, match="s3:// only"):
        SyncConfig(sync_to="gs://bucket/x")
    with pytest.raises(ConfigError, match="--dpi"):
        RunConfig(("x",), Path("o"), dpi=10)


def test_no_setting_name_is_in_two_layers() -> None:
    names = [f.name for layer in LAYERS.values() for f in dataclasses.fields(layer)]
    top = {f.name for f in dataclasses.fields(RunConfig)}
    assert len(names) == len(set(names)) and not top & set(names)


def test_the_planner_needs_its_scope_and_the_page_policy_only(tmp_path: Path) -> None:
    from ocrfleet.ledger import Ledger
    from ocrfleet.plan import PlanScope, plan_documents
    from ocrfleet.testing import samples

    samples.text_pdf(tmp_path / "in" / "short.pdf", ["one"])
    samples.text_pdf(tmp_path / "in" / "long.pdf", ["one", "two", "three"])
    out = tmp_path / "out"
    scope = PlanScope((str(tmp_path / "in"),), out / ".ocrfleet-inputs", out)
    ledger = Ledger(out / "ocrfleet.sqlite")
    plan = plan_documents(scope, PagePolicy(max_pages_per_document=2), ledger)
    ledger.close()
    errors = {Path(d.source).name: d.error for d in plan.documents}
    assert errors["short.pdf"] is None
    assert "over --max-pages-per-document 2" in str(errors["long.pdf"])
    assert scope == PlanScope.of(RunConfig((str(tmp_path / "in"),), out))


def test_the_layers_are_part_of_the_public_api() -> None:
    import ocrfleet

    config = ocrfleet.RunConfig(
        ("scans/",), Path("out"), render=ocrfleet.RenderConfig(dpi=200), max_attempts=3
    )
    assert config.render.dpi == 200 and config.policy == ocrfleet.PagePolicy(max_attempts=3)
    assert {"RenderConfig", "PagePolicy", "FleetConfig", "SyncConfig"} <= set(ocrfleet.__all__)
