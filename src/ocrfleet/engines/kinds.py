"""Each engine name's kind: what the parent process of a run asks of an engine before any
worker starts (base.EngineKind). How it uses the GPUs, what it checks, how auto's OCR engine
is chosen, and the config of one engine slot: the memory split of a GPU that engines share
is vLLM's business, so it is done here and not by the supervisor.

Kinds hold no state; `engine_kind` makes the one an engine config names. Engine modules are
imported inside the methods that need them: the parent process stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from .base import EngineKind, GpuUse, ModuleFinder
from .names import AUTO, DECIDE, NO_OCR, TESSERACT, TEXT, VLLM

if TYPE_CHECKING:
    from ..config import EngineConfig, RunConfig
    from ..engine_slots import WorkerSpec


def split_gpu_memory(engine: EngineConfig, slot: WorkerSpec) -> EngineConfig:
    """A GPU slot's share: the memory fraction divided between the engines on its GPU, and
    its explicit KV budget (vLLM's kv_cache_memory_bytes) when the planner set one."""
    if slot.engines_on_gpu is None:  # a CPU slot, or one engine over a TP group
        return engine
    extra = dict(engine.extra_args)
    if slot.kv_cache_bytes is not None:
        extra.setdefault("kv_cache_memory_bytes", slot.kv_cache_bytes)
    share = engine.gpu_memory_utilization / slot.engines_on_gpu
    return replace(engine, gpu_memory_utilization=share, extra_args=extra)


class CpuKind:
    """`text` and `tesseract`: CPU engines (Tesseract's binary and languages are checked
    when the run is resolved, before anything is written)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def gpu_use(self, engine: EngineConfig) -> GpuUse:
        return "none"

    def resolve(
        self, engine: EngineConfig, gpus: tuple[int, ...], visible: Callable[[], Sequence[int]]
    ) -> EngineConfig:
        if self.name == TESSERACT:
            from .choose import check_tesseract

            check_tesseract(engine.tesseract_langs)
        return engine

    def check(self, config: RunConfig, installed: ModuleFinder) -> None:
        return None

    def warnings(self, config: RunConfig) -> list[str]:
        return []

    def per_slot_config(self, engine: EngineConfig, slot: WorkerSpec) -> EngineConfig:
        return engine

    def ocr_engine(self, engine: EngineConfig) -> str | None:
        return None

    def uses_model(self, engine: EngineConfig) -> bool:
        return False


class VllmKind:
    """DeepSeek-OCR on vLLM: GPUs planned, topology and install checked, memory split."""

    name = VLLM

    def gpu_use(self, engine: EngineConfig) -> GpuUse:
        return "planned"

    def resolve(
        self, engine: EngineConfig, gpus: tuple[int, ...], visible: Callable[[], Sequence[int]]
    ) -> EngineConfig:
        return engine

    def check(self, config: RunConfig, installed: ModuleFinder) -> None:
        from .vllm_checks import check_setup

        check_setup(config, installed)

    def warnings(self, config: RunConfig) -> list[str]:
        from .vllm_checks import check_topology

        return check_topology(config)

    def per_slot_config(self, engine: EngineConfig, slot: WorkerSpec) -> EngineConfig:
        return split_gpu_memory(engine, slot)

    def ocr_engine(self, engine: EngineConfig) -> str | None:
        return None

    def uses_model(self, engine: EngineConfig) -> bool:
        return True


class CustomKind:
    """`module:factory`: the GPUs it is given, its memory split as vLLM's; the factory must
    import here as each worker would import it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def gpu_use(self, engine: EngineConfig) -> GpuUse:
        return "given"

    def resolve(
        self, engine: EngineConfig, gpus: tuple[int, ...], visible: Callable[[], Sequence[int]]
    ) -> EngineConfig:
        return engine

    def check(self, config: RunConfig, installed: ModuleFinder) -> None:
        from ..setup_checks import check_engine_factory

        check_engine_factory(self.name)

    def warnings(self, config: RunConfig) -> list[str]:
        return []

    def per_slot_config(self, engine: EngineConfig, slot: WorkerSpec) -> EngineConfig:
        return split_gpu_memory(engine, slot)

    def ocr_engine(self, engine: EngineConfig) -> str | None:
        return None

    def uses_model(self, engine: EngineConfig) -> bool:
        return False


class AutoKind:
    """Each page's text layer where the router trusts it, the OCR engine for the rest: the
    OCR engine's kind answers for GPUs, checks and slots."""

    name = AUTO

    def _ocr(self, engine: EngineConfig) -> EngineKind | None:
        if engine.ocr_engine in (NO_OCR, DECIDE):
            return None
        return kind_named(engine.ocr_engine)

    def gpu_use(self, engine: EngineConfig) -> GpuUse:
        if engine.ocr_engine == DECIDE:
            return "undecided"
        ocr = self._ocr(engine)
        # Only ocrfleet's own GPU engine gets GPUs under auto; the others run on the CPU.
        return "planned" if ocr is not None and ocr.gpu_use(engine) == "planned" else "none"

    def resolve(
        self, engine: EngineConfig, gpus: tuple[int, ...], visible: Callable[[], Sequence[int]]
    ) -> EngineConfig:
        """No --ocr-engine: vLLM when a GPU and vLLM are there, else Tesseract when
        installed, else none."""
        if engine.ocr_engine == DECIDE:
            from .choose import default_ocr_engine

            chosen = default_ocr_engine(gpus or tuple(visible()), engine.tesseract_langs)
            engine = replace(engine, ocr_engine=chosen)
        ocr = self._ocr(engine)
        return engine if ocr is None else ocr.resolve(engine, gpus, visible)

    def check(self, config: RunConfig, installed: ModuleFinder) -> None:
        ocr = self._ocr(config.engine)
        if isinstance(ocr, VllmKind):
            ocr.check(config, installed)

    def warnings(self, config: RunConfig) -> list[str]:
        ocr = self._ocr(config.engine)
        return ocr.warnings(config) if isinstance(ocr, VllmKind) else []

    def per_slot_config(self, engine: EngineConfig, slot: WorkerSpec) -> EngineConfig:
        ocr = self._ocr(engine)
        return engine if ocr is None else ocr.per_slot_config(engine, slot)

    def ocr_engine(self, engine: EngineConfig) -> str | None:
        return engine.ocr_engine

    def uses_model(self, engine: EngineConfig) -> bool:
        ocr = self._ocr(engine)
        return ocr is not None and ocr.uses_model(engine)


def kind_named(name: str) -> EngineKind:
    if name == AUTO:
        return AutoKind()
    if name == VLLM:
        return VllmKind()
    if name in (TEXT, TESSERACT):
        return CpuKind(name)
    return CustomKind(name)


def engine_kind(engine: EngineConfig) -> EngineKind:
    """The kind of the engine this config names."""
    return kind_named(engine.name)
