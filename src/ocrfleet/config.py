"""Run and engine settings: plain dataclasses, validated on construction.

Every option of `ocrfleet run` lands here; nothing else reads argv. A ConfigError raised here
stops the run before any PDF is opened or any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .layout import OutputLayout

# "vllm", "text", "tesseract", "auto" (route each page: text layer or OCR engine), or
# "package.module:factory" for an engine of your own (tests use this).
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
ENGINE_NAMES: tuple[str, ...] = ("auto", "vllm", "tesseract", "text")


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the OCR engine; only `vllm` reads most of them."""

    # "auto": per page, the text layer where it is trusted, else ocr_engine (the CLI's default).
    name: EngineName = "auto"
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
    # With name "auto": the engine for pages routed to OCR (vllm, tesseract, none, or
    # module:factory); none leaves them as needs_ocr for a later run.
    # With name "auto": vllm, tesseract, none, or "default" (decided from the machine by
    # resolve.resolve_ocr_engine: vLLM with a GPU and vLLM, else Tesseract, else none).
    ocr_engine: str = "default"
    # Tesseract's languages (traineddata names joined by +), e.g. ell+eng or grc+ell+eng.
    tesseract_langs: str = "ell+eng"

    def __post_init__(self) -> None:
        if self.name not in ENGINE_NAMES and ":" not in self.name:
            raise ConfigError(
                f"unknown engine {self.name!r}: choose auto, vllm, tesseract, text, or "
                "module:factory"
            )
        known = ("vllm", "tesseract", "none", "default")
        if self.ocr_engine not in known and ":" not in self.ocr_engine:
            raise ConfigError(
                f"unknown OCR engine {self.ocr_engine!r}: choose vllm, tesseract or none"
            )
        if self.name != "auto" and self.ocr_engine not in ("default", "none"):
            raise ConfigError(
                f"--ocr-engine {self.ocr_engine} applies to --engine auto only (--engine "
                f"{self.name} runs every page through itself)"
            )
        if not self.tesseract_langs or not all(self.tesseract_langs.split("+")):
            raise ConfigError("--tesseract-langs takes names joined by +, e.g. ell+eng")
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
    # Empty with detect_gpus: the run uses every visible GPU when its engine is vLLM
    # (resolve.resolve_run_config); (0, 1): those GPUs, one worker pinned to each.
    gpus: tuple[int, ...] = ()
    detect_gpus: bool = True
    workers: int = 1
    # None: auto (engine_slots.choose_engines_per_gpu), resolved by the runner before workers.
    engines_per_gpu: int | None = None
    max_worker_restarts: int = 5
    max_page_crashes: int = 2
    lease_seconds: float = 120.0
    blank_threshold: float = 0.00002
    # None: a progress bar when stderr is a terminal.
    progress: bool | None = None
    log_level: str = "INFO"
    # s3://bucket/prefix: outputs are written to output_dir (local) and uploaded there, with
    # the ledger checkpointed every sync_interval seconds and at the end.
    sync_to: str | None = None
    sync_interval: float = 300.0
    # Where s3:// inputs are staged (default OUT/.ocrfleet-inputs).
    stage_dir: Path | None = None
    # A document with more pages fails at planning with one reason (None: no limit).
    max_pages_per_document: int | None = None
    # Seconds between NVML samples of each GPU worker (0: none).
    gpu_sample_seconds: float = 5.0
    # An empty or unreadable ledger is moved aside and a new one started (else: refused).
    fresh_ledger: bool = False
    # Seconds one page may take to render before its render process is killed.
    render_timeout: float = 300.0
    # Finished pages carrying one of these quality flags are sent to OCR again.
    redo_flags: tuple[str, ...] = ()

    @property
    def ocr_capable(self) -> bool:
        """This run can OCR: needs_ocr pages left by an earlier run are redone."""
        if self.engine.name == "auto":
            return self.engine.ocr_engine != "none"
        return self.engine.name != "text"

    @property
    def staging_dir(self) -> Path:
        return self.stage_dir or OutputLayout(self.output_dir).staging_dir

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
        if self.workers < 1 or (self.engines_per_gpu is not None and self.engines_per_gpu < 1):
            raise ConfigError("--workers and --engines-per-gpu must be at least 1")
        if self.mode not in ("clean", "raw"):
            raise ConfigError("--mode must be clean or raw")
        if self.prompt not in PROMPTS:
            raise ConfigError("--prompt must be markdown or free")
        if self.gpu_sample_seconds < 0:
            raise ConfigError("--gpu-sample-seconds must be 0 (off) or positive")
        if self.max_pages_per_document is not None and self.max_pages_per_document < 1:
            raise ConfigError("--max-pages-per-document must be at least 1")
        if self.sync_to is not None and not self.sync_to.startswith("s3://"):
            raise ConfigError(f"outputs can be uploaded to s3:// only, not {self.sync_to!r}")
        self._check_s3_uris()
        if not self.render_timeout > 0:
            raise ConfigError("--render-timeout must be positive")

    def _check_s3_uris(self) -> None:
        """A malformed s3:// URI fails here, at once, not after retries as if transient."""
        from .s3uri import is_remote, split_uri

        for uri in (self.sync_to, *self.inputs):
            if uri is not None and is_remote(uri):
                split_uri(uri)

    @property
    def worker_count(self) -> int:
        """Engine worker processes this run starts."""
        if self.gpus:
            per_gpu = self.engines_per_gpu or 1
            return len(self.gpus) * per_gpu // max(1, self.engine.tensor_parallel_size)
        return self.workers

    def to_json(self) -> str:
        """Serialise for worker processes and the run summary."""
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["image_cache"] = str(self.image_cache) if self.image_cache else None
        data["stage_dir"] = str(self.stage_dir) if self.stage_dir else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def for_output(
        cls, inputs: tuple[str, ...], output: str | Path, *, work_dir: Path | None = None, **kw: Any
    ) -> RunConfig:
        """A run writing to `output`: a local directory, or s3://bucket/prefix (written in
        `work_dir`, default a directory under ~/.cache named after the URI, then uploaded
        with the ledger checkpointed)."""
        text = str(output)
        if not text.startswith("s3://"):
            return cls(inputs=inputs, output_dir=Path(output), **kw)
        if work_dir is None:
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            work_dir = Path.home() / ".cache" / "ocrfleet" / "runs" / digest
        sync_to = kw.pop("sync_to", None)
        if sync_to and sync_to != text:
            raise ConfigError("give an s3:// output or sync_to (--sync-to), not two different ones")
        return cls(inputs=inputs, output_dir=work_dir, sync_to=text, **kw)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data = json.loads(text)
        engine = data.pop("engine")
        engine["ngram_whitelist"] = tuple(engine["ngram_whitelist"])
        data["inputs"] = tuple(data["inputs"])
        data["redo_flags"] = tuple(data.get("redo_flags", ()))
        data["gpus"] = tuple(data["gpus"])
        data["output_dir"] = Path(data["output_dir"])
        data["image_cache"] = Path(data["image_cache"]) if data["image_cache"] else None
        data["stage_dir"] = Path(data["stage_dir"]) if data["stage_dir"] else None
        return cls(engine=EngineConfig(**engine), **data)
