"""DeepSeek-OCR's own rules, in plain Python: resolution modes and image tokens (modes.py),
the packed uint8 page render processes hand the engine (packing.py), and the prompts
(prompts.py). Render processes, the CLI and the vLLM plugin share them; nothing here imports
torch or vLLM, so a render process never loads the plugin.
"""
