"""The engine seam holds: outside `engines/` no module compares engine names (it asks the
engine's kind), and render processes never load the vLLM plugin (DeepSeek-OCR's geometry is
plain Python in `deepseek/`)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from ocrfleet.engines.names import ENGINE_NAMES, OCR_ENGINE_NAMES
from tests.conftest import cli_env

SRC = Path(__file__).parents[1] / "src" / "ocrfleet"
# Names a value holding an engine name goes by: `config.engine.name`, `ocr_engine`, `engine`.
ENGINE_HOLDERS = {"name", "engine", "ocr_engine", "engine_name"}
NAMES = set(ENGINE_NAMES) | set(OCR_ENGINE_NAMES)


def _holder(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in ENGINE_HOLDERS
    if isinstance(node, ast.Name):
        return node.id in ENGINE_HOLDERS
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_holder(e) for e in node.elts)
    return False


def _literals(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {v for e in node.elts for v in _literals(e)}
    return set()


def engine_name_compares(source: str) -> list[int]:
    """Lines of `source` that compare something holding an engine name with a literal one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if any(_holder(o) for o in operands) and any(_literals(o) & NAMES for o in operands):
            found.append(node.lineno)
    return sorted(set(found))


def test_the_checker_finds_the_compares_it_is_meant_to_find() -> None:
    flagged = (
        'if engine.name == "vllm" or (engine.name == "auto" and engine.ocr_engine == "vllm"):\n'
        '    pass\nok = "vllm" in (engine, config.engine.ocr_engine)\n'
        'cpu = config.engine.name in ("text", "tesseract")\n'
    )
    assert engine_name_compares(flagged) == [1, 3, 4]
    fine = 'a = value == "auto"\nb = page.route.route == "text"\nc = check.name == "fp8_kv"\n'
    assert engine_name_compares(fine) == []


def test_no_module_outside_engines_compares_engine_names() -> None:
    offenders = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if "engines" not in path.relative_to(SRC).parts
        and (lines := engine_name_compares(path.read_text("utf-8")))
    }
    assert offenders == {}, f"ask engines.engine_kind(...) instead: {offenders}"


RENDER_PROCESS = """
import json, sys
from pathlib import Path
from ocrfleet.page import RenderRequest, RenderSettings
from ocrfleet.render import DocumentCache, render_page
from ocrfleet.render_pool import _load_preparer
from ocrfleet.testing import samples

pdf = samples.text_pdf(Path(sys.argv[1]), ["Λέξεις και words"])
settings = RenderSettings(dpi=72, prepare="deepseek-ocr:gundam")
prepare = _load_preparer(settings.prepare)
docs = DocumentCache()
page = render_page(docs, RenderRequest("d", str(pdf), 1), settings)
arrays = prepare(page)
docs.close()
print(json.dumps({"packed": list(arrays["packed"].shape), "modules": sorted(sys.modules)}))
"""


def test_render_processes_do_not_import_the_vllm_plugin(tmp_path: Path) -> None:
    """What a render process of the vllm engine loads: the page, the renderer and the
    DeepSeek-OCR preparer; the plugin package (which names vLLM's classes) stays out."""
    done = subprocess.run(
        [sys.executable, "-c", RENDER_PROCESS, str(tmp_path / "p.pdf")],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["packed"][1] == 1024  # a packed Gundam page was prepared
    assert "ocrfleet.deepseek.packing" in result["modules"]
    plugin = [m for m in result["modules"] if m.split(".")[:2] == ["ocrfleet", "vllm_plugin"]]
    assert plugin == []
    assert not {"vllm", "torch"} & set(result["modules"])
