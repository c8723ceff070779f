#!/usr/bin/env python3
"""The deployment plan's runner name, kept so its command works verbatim.

    ./run_pdf_ocr_vllm.py --input-dir IN --output-dir OUT --mode clean ...

is `ocrfleet run --engine vllm --input-dir IN --output-dir OUT --mode clean ...`: the plan
OCRs every page with DeepSeek-OCR (give `--engine auto` to route pages instead); every option
is the CLI's.
Run from outside the project's environment, it re-starts itself with the project's
`.venv/bin/python` when there is one, and otherwise says how to run it.
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from ocrfleet.cli import main
    except ImportError:
        here = Path(__file__).resolve().parent
        venv_python = here / ".venv" / "bin" / "python"
        if venv_python.is_file() and Path(sys.executable).resolve() != venv_python.resolve():
            os.execv(str(venv_python), [str(venv_python), __file__, *sys.argv[1:]])
        print(
            f"run_pdf_ocr_vllm.py: ocrfleet is not installed for {sys.executable}; run "
            f"`uv sync --no-dev` in {here} first, or `uv run --no-dev ./run_pdf_ocr_vllm.py ...`",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(main(["run", "--engine", "vllm", *sys.argv[1:]]))
