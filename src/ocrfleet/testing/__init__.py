"""Test helpers: synthetic DeepSeek-OCR checkpoints that vLLM loads without real weights."""
