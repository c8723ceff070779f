#!/usr/bin/env python3
"""The deployment plan's runner name, kept so its command works verbatim.

    python run_pdf_ocr_vllm.py --input-dir IN --output-dir OUT --mode clean ...

is `ocrfleet run --engine vllm --input-dir IN --output-dir OUT --mode clean ...`: the plan
OCRs every page with DeepSeek-OCR (give `--engine auto` to route pages instead); every option
is the CLI's.
"""

import sys

from ocrfleet.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--engine", "vllm", *sys.argv[1:]]))
