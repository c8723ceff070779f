"""Write the sample PDFs shipped in examples/pdfs (run once; the PDFs are committed).

uv run python scripts/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

from ocrfleet.testing import samples

ROOT = Path(__file__).resolve().parent.parent / "examples" / "pdfs"


def main() -> None:
    samples.text_pdf(ROOT / "el" / "έκθεση 2024.pdf", [samples.paragraph(i) for i in range(3)])
    samples.mixed_pdf(
        ROOT / "el" / "σαρωμένο αρχείο.pdf",
        [("text", samples.paragraph(1)), ("blank", ""), ("image", samples.paragraph(2))],
        dpi=72,
    )
    samples.text_pdf(
        ROOT / "en" / "report.pdf", [samples.paragraph(i, greek=False) for i in range(2)]
    )
    print(f"wrote {sorted(p.name for p in ROOT.rglob('*.pdf'))}")


if __name__ == "__main__":
    main()
