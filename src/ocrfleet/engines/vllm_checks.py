"""Checks of a vLLM configuration that run before anything is loaded (no vLLM import).

The deployment plan runs `--tensor-parallel-size 4 --mm-encoder-tp-mode data` on a 4-GPU node.
For DeepSeek-OCR neither works: tensor parallelism must divide the 10 attention heads, and
vLLM's DeepSeek-OCR model does not support the data-parallel encoder mode. We say so here,
with the command that does what was meant, instead of failing minutes into a model load.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError

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
