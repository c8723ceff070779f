"""ocrfleet: resumable PDF → Markdown at corpus scale with DeepSeek-OCR on vLLM."""

__version__ = "0.1.0"
