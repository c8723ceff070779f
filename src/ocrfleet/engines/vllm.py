"""The `vllm` engine: DeepSeek-OCR on vLLM's AsyncLLM, fed one page at a time, never batched.

Each page is its own request; vLLM's scheduler batches whatever is in flight at every step
(continuous batching), so a slow page never holds a batch back. The settings are the vLLM
recipe's (n-gram no-repeat processor, no prefix caching, no multimodal processor cache,
greedy decoding, special tokens kept for the grounding tags).
"""

from __future__ import annotations

import copy
import logging
import os
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

from ..config import EngineConfig
from ..deepseek.modes import engine_overrides
from ..errors import EngineDead, EngineError
from .base import EngineNeeds, OcrRequest, OcrResult

log = logging.getLogger(__name__)

RECIPE_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
BATCHED_PROCESSOR = "ocrfleet.vllm_plugin.ngram:BatchedNGramLogitsProcessor"
# vLLM resolves logits processors given as "module:Class" strings in every engine process.


def uses_plugin(config: EngineConfig) -> bool:
    """ocrfleet's model variant serves packed pages and the four extra resolution modes."""
    return config.preprocess == "render" or config.resolution != "gundam"


def logits_processors(config: EngineConfig) -> list[str]:
    if config.ngram_impl == "off" or config.ngram_size == 0:
        return []
    return [BATCHED_PROCESSOR if config.ngram_impl == "batched" else RECIPE_PROCESSOR]


def ngram_extra_args(config: EngineConfig) -> dict[str, Any]:
    """The processor is applied only to requests that carry `ngram_size` (recipe semantics)."""
    if config.ngram_impl == "off" or config.ngram_size == 0:
        return {}
    return {
        "ngram_size": config.ngram_size,
        "window_size": config.ngram_window,
        "whitelist_token_ids": list(config.ngram_whitelist),
    }


# vLLM's CUDA graphs for DeepSeek-OCR's vision encoder (`cudagraph_mm_encoder`, off by default):
# the SAM and CLIP towers run batched and replayed from graphs instead of page by page,
# kernel by kernel, from the engine core's one CPU thread (half its time on an H200,
# issue 12). vLLM's graphs assume 1024-px global views and 640-px tiles: Gundam and Base.
# Budgets: at most 2 pages (2 global views, 12 tiles) per replay; a larger step is split into
# several replays. vLLM's own budgets go up to 30 views a replay (SAM's attention bias alone
# is 0.4 GB a view) in every engine's graph pool. With 4 pages a replay, one of four engines
# on an H200 failed at start (cause not kept); with 2, all four started and ran, 8 % to 22 %
# faster than without graphs (2026-12-02, benchmarks/results/gpu-engines-h200-2026-12-02b.json).
ENCODER_GRAPH_MODES = frozenset({"gundam", "base"})
ENCODER_GRAPH_SETTINGS: dict[str, Any] = {
    "cudagraph_mm_encoder": True,
    "encoder_cudagraph_token_budgets": [1200],
    "encoder_cudagraph_max_vision_items_per_batch": 2,
}


def encoder_graph_settings(config: EngineConfig, on_cuda: bool) -> dict[str, Any]:
    """The compilation_config that turns on encoder CUDA graphs, where they apply."""
    if (
        not on_cuda
        or config.enforce_eager
        or config.resolution not in ENCODER_GRAPH_MODES
        or "compilation_config" in config.extra_args  # the user's own settings win whole
    ):
        return {}
    return {"compilation_config": copy.deepcopy(ENCODER_GRAPH_SETTINGS)}


def engine_kwargs(config: EngineConfig, on_cuda: bool = False) -> dict[str, Any]:
    """AsyncEngineArgs for this config: recipe settings, then the user's extra arguments."""
    kwargs: dict[str, Any] = {
        "model": config.model,
        "dtype": config.dtype,
        "kv_cache_dtype": config.kv_cache_dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
        "tensor_parallel_size": config.tensor_parallel_size,
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        "limit_mm_per_prompt": {"image": 1},
        "logits_processors": logits_processors(config),
        "enforce_eager": config.enforce_eager,
    }
    if config.quantization:
        kwargs["quantization"] = config.quantization
    if config.max_num_seqs is not None:
        kwargs["max_num_seqs"] = config.max_num_seqs
    if config.load_format:
        kwargs["load_format"] = config.load_format
    # mm_encoder_tp_mode "data" is not supported by DeepSeek-OCR (vllm_checks warns); vLLM
    # falls back to weights itself, so the option is passed through unchanged.
    if config.mm_encoder_tp_mode:
        kwargs["mm_encoder_tp_mode"] = config.mm_encoder_tp_mode
    if uses_plugin(config):
        kwargs.update(engine_overrides(config.resolution))
    kwargs.update(encoder_graph_settings(config, on_cuda))
    kwargs.update(config.extra_args)
    return kwargs


def sampling_params(config: EngineConfig, max_tokens: int) -> Any:
    from vllm.sampling_params import RequestOutputKind

    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        skip_special_tokens=False,
        ignore_eos=config.ignore_eos,
        extra_args=ngram_extra_args(config) or None,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


# Environment defaults for the engine-core process vLLM starts (it inherits ours); a value
# the user set wins. Both were found on the lent H200×4 host (vLLM 0.26.0, 2026-11-27):
# - VLLM_USE_FLASHINFER_SAMPLER=0: greedy decoding never uses FlashInfer's top-p/top-k
#   sampler, but without the flashinfer-cubin package vLLM JIT-compiles it with nvcc at every
#   first start (minutes; four engines starting at once did not finish in 9 minutes).
# - VLLM_WORKER_MULTIPROC_METHOD=spawn: with vLLM's default (fork) the engine core hung after
#   building its sampler, before loading the model, in every start tried (4 + 1 engines, no
#   log line for 470 s); the same engines started with spawn in 110-146 s.
ENGINE_ENVIRONMENT = {
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}
# On a GPU, one torch thread per engine process: vLLM's own default for its GPU worker
# processes (multiproc_executor.set_multiprocessing_worker_envs), which a single-GPU engine
# (uniproc, in the engine-core process) does not get. Without it each of K engines sharing a
# GPU starts an OpenMP pool of every core for its host-side copies: stacking a step's pixels
# took 18-23 % of an engine core's samples with 4 threads each (H200, 5 engines, 2026-12-04;
# one thread is not measured yet). Not on CPU vLLM, whose model runs on those threads.
GPU_ENGINE_ENVIRONMENT = {"OMP_NUM_THREADS": "1"}


def apply_engine_environment(
    environ: MutableMapping[str, str], *, on_gpu: bool = False
) -> dict[str, str]:
    """Set the engine defaults the user has not set; return those that were set."""
    defaults = {**ENGINE_ENVIRONMENT, **(GPU_ENGINE_ENVIRONMENT if on_gpu else {})}
    applied = {k: v for k, v in defaults.items() if k not in environ}
    environ.update(applied)
    return applied


class VllmEngine:
    name = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._llm: Any = None
        self._max_num_seqs = config.max_num_seqs or 256
        self._versions: dict[str, str] = {}
        self._kwargs: dict[str, Any] = engine_kwargs(config)

    @property
    def needs(self) -> EngineNeeds:
        prepare = None
        if self.config.preprocess == "render":
            prepare = f"deepseek-ocr:{self.config.resolution}"
        return EngineNeeds(image=True, text_layer=False, prepare=prepare)

    @property
    def max_concurrency(self) -> int:
        return self._max_num_seqs

    async def start(self) -> None:
        import torch
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        import vllm

        if uses_plugin(self.config):
            # The entry point registers it in vLLM's own processes; this covers ours even
            # when ocrfleet runs from a source tree without installed metadata.
            from ..vllm_plugin import register

            register()
        on_cuda = torch.cuda.is_available()
        applied = apply_engine_environment(os.environ, on_gpu=on_cuda)
        if applied:
            log.info("engine environment defaults: %s", applied)
        kwargs = engine_kwargs(self.config, on_cuda=on_cuda)
        self._kwargs = kwargs
        log.info("starting vLLM %s engine: %s", vllm.__version__, kwargs)
        began = time.monotonic()
        args = AsyncEngineArgs(**kwargs)
        # LLM_CLASS: the batch defaults of offline inference (vLLM's LLM), as the recipe gets.
        self._llm = AsyncLLM.from_engine_args(args, usage_context=UsageContext.LLM_CLASS)
        scheduler = self._llm.vllm_config.scheduler_config
        self._max_num_seqs = int(scheduler.max_num_seqs)
        self._versions = {"vllm": vllm.__version__, "torch": torch.__version__}
        log.info(
            "vLLM engine ready in %.1f s (max_num_seqs %d, n-gram processor %s)",
            time.monotonic() - began,
            self._max_num_seqs,
            logits_processors(self.config) or "off",
        )

    async def ocr(self, request: OcrRequest) -> OcrResult:
        from vllm.v1.engine.exceptions import EngineDeadError

        prompt = vllm_prompt(request, self.config.resolution)
        params = sampling_params(self.config, request.max_tokens)
        request_id = f"{request.request_id}-{uuid.uuid4().hex[:8]}"
        submitted = time.monotonic()
        final = None
        try:
            async for output in self._llm.generate(prompt, params, request_id=request_id):
                final = output
        except EngineDeadError as exc:
            raise EngineDead(f"vLLM engine died: {exc}") from exc
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"vLLM rejected the page: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "EngineGenerateError":
                raise EngineError(f"vLLM failed the page: {exc.__cause__ or exc}") from exc
            raise
        if final is None or not final.outputs:
            raise EngineError("vLLM returned no output for the page")
        completion = final.outputs[0]
        return OcrResult(
            text=completion.text,
            finish_reason=str(completion.finish_reason or "length"),
            prompt_tokens=len(final.prompt_token_ids or ()),
            output_tokens=len(completion.token_ids),
            timings=request_timings(final, submitted),
        )

    async def close(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    def describe(self) -> dict[str, Any]:
        return {"engine": "vllm", **self._versions, "settings": self._kwargs}


def vllm_prompt(request: OcrRequest, resolution: str) -> dict[str, Any]:
    """The page as vLLM input: a packed page when a render process prepared one."""
    page = request.page
    packed = page.arrays.get("packed")
    if packed is None:
        return {"prompt": request.prompt, "multi_modal_data": {"image": page.image()}}
    # A content-derived id instead of hashing 10 MB of pixels per page; vLLM keys its
    # encoder cache on it, so it must differ whenever the pixels do.
    uuid_ = f"ocrfleet-{page.doc_id}-p{page.page}-{resolution}-{page.effective_dpi}"
    return {
        "prompt": request.prompt,
        "multi_modal_data": {"image": packed},
        "multi_modal_uuids": {"image": [uuid_]},
    }


def request_timings(output: Any, submitted: float) -> dict[str, float]:
    """Seconds per stage from vLLM's request stats (engine core timestamps are monotonic)."""
    stats = getattr(output, "metrics", None)
    if stats is None or not getattr(stats, "queued_ts", 0.0):
        return {}
    queued, scheduled = stats.queued_ts, stats.scheduled_ts
    first, last = stats.first_token_ts, stats.last_token_ts
    timings = {"preprocess": max(0.0, queued - submitted)}
    if scheduled:
        timings["engine_queue"] = max(0.0, scheduled - queued)
    if first and scheduled:
        timings["prefill"] = max(0.0, first - scheduled)
    if last and first:
        timings["decode"] = max(0.0, last - first)
    return timings
