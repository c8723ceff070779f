"""DeepSeek-OCR's prompts: the grounded Markdown prompt (first attempt) and the plain one
(the repair retry). The model was trained on these exact strings."""

from __future__ import annotations

PROMPTS: dict[str, str] = {
    "markdown": "<image>\n<|grounding|>Convert the document to markdown.",
    "free": "<image>\nFree OCR.",
}
