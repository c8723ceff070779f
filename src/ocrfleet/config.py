"""Run settings by layer: plain dataclasses, each validated on construction.

`RunConfig` holds the inputs, the output directory and one object per layer: `RenderConfig`
(the render pool), `PagePolicy` (planner and page worker), `FleetConfig` (the supervisor and
its workers), `SyncConfig` (s3:// copy and staging) and `EngineConfig` (the engines); each
consumer is handed its layer. Every option of `ocrfleet run` lands here (run_options.py says
where); nothing else reads argv. A ConfigError raised here stops the run before any PDF is
opened or any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from .deepseek.prompts import PROMPTS
from .engines.names import can_ocr, names_problem
from .errors import ConfigError
from .gpu_sharing import MPS_MODES
from .layout import OutputLayout

# "vllm", "text", "tesseract", "auto" (route each page: text layer or OCR engine), or
# "package.module:factory" for an engine of your own (tests use this).
EngineName = str
Mode = Literal["clean", "raw"]
PromptName = Literal["markdown", "free"]
Resolution = Literal["tiny", "small", "base", "large", "gundam"]
NGramImpl = Literal["batched", "per-request", "off"]

# <td>, </td>: tables legitimately repeat these, the recipe exempts them from the n-gram ban.
DEFAULT_NGRAM_WHITELIST: tuple[int, ...] = (128821, 128822)
RESOLUTIONS: tuple[str, ...] = ("tiny", "small", "base", "large", "gundam")


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
    # auto's kind, engines/kinds.py: vLLM with a GPU and vLLM, else Tesseract, else none).
    ocr_engine: str = "default"
    # Tesseract's languages (traineddata names joined by +), e.g. ell+eng or grc+ell+eng.
    tesseract_langs: str = "ell+eng"

    def __post_init__(self) -> None:
        problem = names_problem(self.name, self.ocr_engine)
        if problem is not None:
            raise ConfigError(problem)
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
class RenderConfig:
    """How pages become images (the render pool) and what becomes of the model's output."""

    mode: Mode = "clean"
    dpi: int = 144
    max_image_pixels: int = 25_000_000
    max_image_side: int = 10_000
    image_cache: Path | None = None
    render_workers: int | None = None
    # Seconds one page may take to render before its render process is killed.
    render_timeout: float = 300.0

    def __post_init__(self) -> None:
        if not 36 <= self.dpi <= 600:
            raise ConfigError("--dpi must be between 36 and 600")
        if self.max_image_pixels < 250_000 or self.max_image_side < 500:
            raise ConfigError("the image cap is too small to OCR anything")
        if self.mode not in ("clean", "raw"):
            raise ConfigError("--mode must be clean or raw")
        if not self.render_timeout > 0:
            raise ConfigError("--render-timeout must be positive")


@dataclass(frozen=True)
class PagePolicy:
    """What is done with each page and document: planning limits, blank pages, prompts,
    attempts, timeouts, which finished pages are redone."""

    prompt: PromptName = "markdown"
    timeout_seconds: float = 600.0
    max_attempts: int = 2
    retry_failed: bool = False
    blank_threshold: float = 0.00002
    # A document with more pages fails at planning with one reason (None: no limit).
    max_pages_per_document: int | None = None
    # Finished pages carrying one of these quality flags are sent to OCR again.
    redo_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        if self.timeout_seconds <= 0:
            raise ConfigError("--timeout-seconds must be positive")
        if self.prompt not in PROMPTS:
            raise ConfigError("--prompt must be markdown or free")
        if self.max_pages_per_document is not None and self.max_pages_per_document < 1:
            raise ConfigError("--max-pages-per-document must be at least 1")


@dataclass(frozen=True)
class FleetConfig:
    """The workers of a node and the shard it works: GPUs, engines per GPU, restarts, leases."""

    # Empty with detect_gpus: the run uses every visible GPU when its engine is vLLM
    # (resolve.resolve_run_config); (0, 1): those GPUs, one worker pinned to each.
    gpus: tuple[int, ...] = ()
    detect_gpus: bool = True
    # Multi-worker without GPUs: N CPU workers.
    workers: int = 1
    # None: auto (engine_slots.choose_engines_per_gpu), resolved by the runner before workers.
    engines_per_gpu: int | None = None
    # CUDA MPS for engines sharing a GPU: auto, on or off (gpu_sharing.choose_mps).
    mps: str = "auto"
    max_worker_restarts: int = 5
    max_page_crashes: int = 2
    lease_seconds: float = 120.0
    # Seconds between NVML samples of each GPU worker (0: none).
    gpu_sample_seconds: float = 5.0
    # Pages in flight per engine worker (None: the engine's batch + 2 per render process).
    batch_pages: int | None = None
    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self) -> None:
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(
                f"--shard-index {self.shard_index} is outside 0..{self.num_shards - 1}"
            )
        if self.batch_pages is not None and self.batch_pages < 1:
            raise ConfigError("--batch-pages must be at least 1")
        if self.workers < 1 or (self.engines_per_gpu is not None and self.engines_per_gpu < 1):
            raise ConfigError("--workers and --engines-per-gpu must be at least 1")
        if self.mps not in MPS_MODES:
            raise ConfigError(f"--mps takes auto, on or off, not {self.mps!r}")
        if self.gpu_sample_seconds < 0:
            raise ConfigError("--gpu-sample-seconds must be 0 (off) or positive")


@dataclass(frozen=True)
class SyncConfig:
    """An s3:// copy of the outputs and where s3:// inputs are staged."""

    # s3://bucket/prefix: outputs are written to output_dir (local) and uploaded there, with
    # the ledger checkpointed every sync_interval seconds and at the end.
    sync_to: str | None = None
    sync_interval: float = 300.0
    # Where s3:// inputs are staged (default OUT/.ocrfleet-inputs).
    stage_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.sync_to is not None and not self.sync_to.startswith("s3://"):
            raise ConfigError(f"outputs can be uploaded to s3:// only, not {self.sync_to!r}")


LAYERS: dict[str, type[Any]] = {
    "engine": EngineConfig,
    "render": RenderConfig,
    "policy": PagePolicy,
    "fleet": FleetConfig,
    "sync": SyncConfig,
}
_LAYER_OF_FIELD = {f.name: layer for layer, cls in LAYERS.items() for f in fields(cls)}


@dataclass(frozen=True, init=False)
class RunConfig:
    """One `ocrfleet run`: what to read, where to write, and one settings object per layer.

    A layer's setting may also be given by its own name, `RunConfig(inputs, out, dpi=200)`
    being `RunConfig(inputs, out, render=RenderConfig(dpi=200))`.
    """

    inputs: tuple[str, ...]
    output_dir: Path
    engine: EngineConfig
    render: RenderConfig
    policy: PagePolicy
    fleet: FleetConfig
    sync: SyncConfig
    # None: a progress bar when stderr is a terminal.
    progress: bool | None
    log_level: str
    # An empty or unreadable ledger is moved aside and a new one started (else: refused).
    fresh_ledger: bool

    def __init__(
        self,
        inputs: tuple[str, ...],
        output_dir: Path,
        engine: EngineConfig | None = None,
        render: RenderConfig | None = None,
        policy: PagePolicy | None = None,
        fleet: FleetConfig | None = None,
        sync: SyncConfig | None = None,
        progress: bool | None = None,
        log_level: str = "INFO",
        fresh_ledger: bool = False,
        **settings: Any,
    ) -> None:
        given: dict[str, Any] = {
            "engine": engine or EngineConfig(),
            "render": render or RenderConfig(),
            "policy": policy or PagePolicy(),
            "fleet": fleet or FleetConfig(),
            "sync": sync or SyncConfig(),
        }
        by_layer: dict[str, dict[str, Any]] = {}
        for name, value in settings.items():
            if name not in _LAYER_OF_FIELD:
                raise TypeError(f"RunConfig got an unknown setting {name!r}")
            by_layer.setdefault(_LAYER_OF_FIELD[name], {})[name] = value
        for layer, values in by_layer.items():
            given[layer] = replace(given[layer], **values)
        for name, value in (
            ("inputs", inputs),
            ("output_dir", output_dir),
            *given.items(),
            ("progress", progress),
            ("log_level", log_level),
            ("fresh_ledger", fresh_ledger),
        ):
            object.__setattr__(self, name, value)
        self.__post_init__()

    @property
    def ocr_capable(self) -> bool:
        """This run can OCR: needs_ocr pages left by an earlier run are redone."""
        return can_ocr(self.engine.name, self.engine.ocr_engine)

    @property
    def staging_dir(self) -> Path:
        return self.sync.stage_dir or OutputLayout(self.output_dir).staging_dir

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("no input given: name PDF files, directories, globs or list files")
        self._check_s3_uris()

    def _check_s3_uris(self) -> None:
        """A malformed s3:// URI fails here, at once, not after retries as if transient."""
        from .s3uri import is_remote, split_uri

        for uri in (self.sync.sync_to, *self.inputs):
            if uri is not None and is_remote(uri):
                split_uri(uri)

    @property
    def worker_count(self) -> int:
        """Engine worker processes this run starts."""
        if self.fleet.gpus:
            per_gpu = self.fleet.engines_per_gpu or 1
            return len(self.fleet.gpus) * per_gpu // max(1, self.engine.tensor_parallel_size)
        return self.fleet.workers

    def to_json(self) -> str:
        """Serialise for worker processes and the run summary (paths as strings)."""
        return json.dumps(asdict(self), sort_keys=True, default=str)

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
        sync: SyncConfig = kw.pop("sync", None) or SyncConfig()
        sync_to = kw.pop("sync_to", None) or sync.sync_to
        if sync_to and sync_to != text:
            raise ConfigError("give an s3:// output or sync_to (--sync-to), not two different ones")
        return cls(inputs=inputs, output_dir=work_dir, sync=replace(sync, sync_to=text), **kw)

    @staticmethod
    def layer_kwargs(layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """RunConfig keyword arguments from values by layer and field (options.layer_values):
        one object per layer, the run's own settings ("run") as they are."""
        kw: dict[str, Any] = dict(layers.get("run", {}))
        for name, values in layers.items():
            if name != "run":
                kw[name] = LAYERS[name](**values)
        return kw

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """The config `to_json` wrote, or the flat one of ledgers written before the layers
        (every layer's setting at the top, next to `engine`)."""
        data = json.loads(text)
        flat: dict[str, dict[str, Any]] = {}
        for name in [k for k in data if k in _LAYER_OF_FIELD]:
            flat.setdefault(_LAYER_OF_FIELD[name], {})[name] = data.pop(name)
        layers = {
            name: _layer_from_dict(layer, data.get(name) or flat.get(name, {}))
            for name, layer in LAYERS.items()
        }
        return cls(
            inputs=tuple(data["inputs"]),
            output_dir=Path(data["output_dir"]),
            progress=data.get("progress"),
            log_level=data.get("log_level", "INFO"),
            fresh_ledger=data.get("fresh_ledger", False),
            **layers,
        )


def flat_settings(text: str) -> str:
    """A stored config in the flat shape of ledgers written before the layers (each layer's
    settings at the top, `engine` nested as it always was): what export's `settings` column
    holds for every run, old or new."""
    data = json.loads(text)
    for name in LAYERS:
        if name != "engine" and isinstance(data.get(name), dict):
            data.update(data.pop(name))
    return json.dumps(data, sort_keys=True)


def stored_setting(data: dict[str, Any], name: str) -> Any:
    """A layer's setting in a stored config (`to_json`'s, or an older flat one)."""
    layer = data.get(_LAYER_OF_FIELD[name])
    return layer.get(name) if isinstance(layer, dict) else data.get(name)


def _layer_from_dict(layer: type[Any], data: dict[str, Any]) -> Any:
    """A layer from its JSON: lists back to tuples, paths back to Path; settings this
    version no longer has are left out."""
    kw: dict[str, Any] = {}
    for f in fields(layer):
        if f.name in data:
            value = data[f.name]
            if isinstance(value, list):
                value = tuple(value)
            elif value is not None and "Path" in str(f.type):
                value = Path(value)
            kw[f.name] = value
    return layer(**kw)
