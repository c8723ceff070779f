"""Run and engine settings: plain dataclasses, validated on construction.

Every option of `ocrfleet run` lands here; nothing else reads argv. A ConfigError raised here
stops the run before any PDF is opened or any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

# "vllm", "text", or "package.module:factory" for an engine of your own (tests use this).
EngineName = str
Mode = Literal["clean", "raw"]
PromptName = Literal["markdown", "free"]
Resolution = Literal["tiny", "small", "base", "large", "gundam"]
NGramImpl = Literal["batched", "per-request", "off"]

PROMPTS: dict[str, str] = {
    "markdown": "<image>\n<|grounding|>Convert the document to markdown.",
    "free": "<image>\nFree OCR.",
}
# <td>, </td>: tables legitimately repeat these, the recipe exempts them from the n-gram ban.
DEFAULT_NGRAM_WHITELIST: tuple[int, ...] = (128821, 128822)
RESOLUTIONS: tuple[str, ...] = ("tiny", "small", "base", "large", "gundam")


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the OCR engine; only `vllm` reads most of them."""

    name: EngineName = "vllm"
    model: str = "deepseek-ai/DeepSeek-OCR"
    dtype: str = "bfloat16"
    kv_cache_dtype: str = "fp8"
    quantization: str | None = None
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int | None = None
    max_model_len: int = 8192
    max_tokens: int = 8192
    tensor_parallel_size: int = 1
    mm_encoder_tp_mode: str | None = None
    load_format: str | None = None
    enforce_eager: bool = False
    resolution: Resolution = "gundam"
    # "render": DeepSeek's resize/pad/tile in ocrfleet's render processes, uint8 to vLLM,
    # normalised on the GPU (ocrfleet's plugin). "vllm": vLLM's own processor does it all in
    # the engine's frontend thread, as the recipe does.
    preprocess: Literal["render", "vllm"] = "render"
    ngram_impl: NGramImpl = "batched"
    ngram_size: int = 30
    ngram_window: int = 90
    ngram_whitelist: tuple[int, ...] = DEFAULT_NGRAM_WHITELIST
    # Any other vLLM engine argument, passed through verbatim (--vllm-arg key=value).
    extra_args: dict[str, Any] = field(default_factory=dict)
    # Benchmarks only: decode exactly max_tokens (random weights rarely emit EOS).
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.name not in ("vllm", "text") and ":" not in self.name:
            raise ConfigError(f"unknown engine {self.name!r}: choose vllm, text, or module:factory")
        if not 0.05 <= self.gpu_memory_utilization <= 0.99:
            raise ConfigError("--gpu-memory-utilization must be between 0.05 and 0.99")
        if self.kv_cache_dtype not in ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16"):
            raise ConfigError(f"--kv-cache-dtype {self.kv_cache_dtype!r}: use auto or fp8")
        if self.quantization not in (None, "fp8"):
            raise ConfigError("--quantization takes fp8 (weights) or nothing")
        if self.tensor_parallel_size < 1:
            raise ConfigError("--tensor-parallel-size must be at least 1")
        if self.max_tokens < 1 or self.max_tokens > self.max_model_len:
            raise ConfigError("--max-tokens must be between 1 and --max-model-len")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ConfigError("--max-num-seqs must be at least 1")
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"--resolution must be one of {', '.join(RESOLUTIONS)}")
        if self.preprocess not in ("render", "vllm"):
            raise ConfigError("--preprocess must be render or vllm")
        if self.ngram_size < 0 or self.ngram_window < self.ngram_size:
            raise ConfigError("--ngram-window must be at least --ngram-size")


@dataclass(frozen=True)
class RunConfig:
    """One `ocrfleet run`: what to read, where to write, how to process."""

    inputs: tuple[str, ...]
    output_dir: Path
    engine: EngineConfig = field(default_factory=EngineConfig)
    mode: Mode = "clean"
    prompt: PromptName = "markdown"
    dpi: int = 144
    max_image_pixels: int = 25_000_000
    max_image_side: int = 10_000
    image_cache: Path | None = None
    render_workers: int | None = None
    batch_pages: int | None = None
    timeout_seconds: float = 600.0
    max_attempts: int = 2
    num_shards: int = 1
    shard_index: int = 0
    retry_failed: bool = False
    # Multi-worker: one engine worker per GPU, or N CPU workers.
    gpus: tuple[int, ...] = ()
    workers: int = 1
    engines_per_gpu: int = 1
    max_worker_restarts: int = 5
    max_page_crashes: int = 2
    lease_seconds: float = 120.0
    blank_threshold: float = 0.0001
    progress: bool = True
    log_level: str = "INFO"
    # s3://bucket/prefix: outputs are written to output_dir (local) and uploaded there, with
    # the ledger checkpointed every sync_interval seconds and at the end.
    sync_to: str | None = None
    sync_interval: float = 300.0
    # Where s3:// inputs are staged (default OUT/.ocrfleet-inputs).
    stage_dir: Path | None = None
    # A document with more pages fails at planning with one reason (None: no limit).
    max_pages_per_document: int | None = None

    @property
    def staging_dir(self) -> Path:
        return self.stage_dir or self.output_dir / ".ocrfleet-inputs"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("no input given: name PDF files, directories, globs or list files")
        if not 36 <= self.dpi <= 600:
            raise ConfigError("--dpi must be between 36 and 600")
        if self.max_image_pixels < 250_000 or self.max_image_side < 500:
            raise ConfigError("the image cap is too small to OCR anything")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(
                f"--shard-index {self.shard_index} is outside 0..{self.num_shards - 1}"
            )
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        if self.timeout_seconds <= 0:
            raise ConfigError("--timeout-seconds must be positive")
        if self.batch_pages is not None and self.batch_pages < 1:
            raise ConfigError("--batch-pages must be at least 1")
        if self.workers < 1 or self.engines_per_gpu < 1:
            raise ConfigError("--workers and --engines-per-gpu must be at least 1")
        if self.mode not in ("clean", "raw"):
            raise ConfigError("--mode must be clean or raw")
        if self.prompt not in PROMPTS:
            raise ConfigError("--prompt must be markdown or free")
        if self.max_pages_per_document is not None and self.max_pages_per_document < 1:
            raise ConfigError("--max-pages-per-document must be at least 1")
        if self.sync_to is not None and not self.sync_to.startswith("s3://"):
            raise ConfigError(f"outputs can be uploaded to s3:// only, not {self.sync_to!r}")

    @property
    def worker_count(self) -> int:
        """Engine worker processes this run starts."""
        if self.gpus:
            return len(self.gpus) * self.engines_per_gpu // max(1, self.engine.tensor_parallel_size)
        return self.workers

    def to_json(self) -> str:
        """Serialise for worker processes and the run summary."""
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["image_cache"] = str(self.image_cache) if self.image_cache else None
        data["stage_dir"] = str(self.stage_dir) if self.stage_dir else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data = json.loads(text)
        engine = data.pop("engine")
        engine["ngram_whitelist"] = tuple(engine["ngram_whitelist"])
        data["inputs"] = tuple(data["inputs"])
        data["gpus"] = tuple(data["gpus"])
        data["output_dir"] = Path(data["output_dir"])
        data["image_cache"] = Path(data["image_cache"]) if data["image_cache"] else None
        data["stage_dir"] = Path(data["stage_dir"]) if data["stage_dir"] else None
        return cls(engine=EngineConfig(**engine), **data)
