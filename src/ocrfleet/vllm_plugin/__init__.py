"""ocrfleet's vLLM plugin: the DeepSeek-OCR variant that serves packed pages in five resolution
modes (the modes and the packing are plain Python in ocrfleet.deepseek), batched n-gram ban.

vLLM calls `register` (entry point `vllm.general_plugins: ocrfleet`) in every process it
starts. Registration is lazy: the model module (which imports torch and vLLM internals) is
imported only when an engine asks for ocrfleet's architecture.
"""

from __future__ import annotations

from ..deepseek.modes import ARCHITECTURE

MODEL_CLASS = "ocrfleet.vllm_plugin.model:OcrfleetDeepseekOCR"


def register() -> None:
    """vLLM general-plugin entry point."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
