"""Find the PDFs of a run and say what each one is: content id, page count, or why it is unusable.

Inputs are directories (searched recursively), globs, single PDFs, or list files of paths.
A document's id is the SHA-256 of its bytes, so a moved or renamed file is recognised and not
redone. Each document also gets an output path that mirrors where it sat in its input, so
`a/report.pdf` and `b/report.pdf` never collide.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

from .errors import ConfigError

log = logging.getLogger(__name__)

PDF_SUFFIX = ".pdf"
# pdfium accepts up to 1 KiB of junk before the header; so do we.
HEADER_WINDOW = 1024
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SourceFile:
    """A PDF found in the inputs: where it is, how the user named it, where its outputs go."""

    path: Path  # absolute
    given: str  # the path as the user gave it (directory input joined with the relative part)
    rel: PurePosixPath  # relative output location without suffix, e.g. a/report


@dataclass(frozen=True)
class Probe:
    """What opening a file told us. `error` set means the document is unusable."""

    doc_id: str
    size: int
    pages: int
    error: str | None = None


def discover(inputs: Sequence[str]) -> tuple[list[SourceFile], list[str]]:
    """Expand inputs into PDF files, in a stable order; also return inputs that did not exist."""
    found: list[SourceFile] = []
    missing: list[str] = []
    for given in inputs:
        path = Path(given).expanduser()
        if any(ch in given for ch in GLOB_CHARS) and not path.exists():
            matches = sorted(glob.glob(str(Path(given).expanduser()), recursive=True))  # noqa: PTH207
            base = _glob_base(given)
            found.extend(_source(Path(m), m, base) for m in matches if _looks_like_pdf_name(m))
            if not matches:
                missing.append(given)
        elif path.is_dir():
            found.extend(_scan_directory(path, given))
        elif path.is_file():
            if _looks_like_pdf_name(given) or _has_pdf_header(path):
                found.append(_source(path, given, path.parent))
            else:
                listed, absent = _read_list_file(path)
                found.extend(listed)
                missing.extend(absent)
        else:
            missing.append(given)
    return _unique(found), missing


def _scan_directory(root: Path, given: str) -> Iterator[SourceFile]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if _looks_like_pdf_name(name):
                path = Path(dirpath) / name
                rel = path.relative_to(root)
                yield SourceFile(path.resolve(), str(Path(given) / rel), _output_rel(rel))


def _read_list_file(list_file: Path) -> tuple[list[SourceFile], list[str]]:
    """One path per line; `#` starts a comment; relative paths are relative to the list file."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{list_file} is neither a PDF nor a UTF-8 list of paths ({exc.reason})"
        ) from exc
    entries = [line.strip() for line in lines]
    paths = [e for e in entries if e and not e.startswith("#")]
    resolved = [_resolve_listed(p, list_file.parent) for p in paths]
    present = [(given, p) for given, p in zip(paths, resolved, strict=True) if p.is_file()]
    absent = [given for given, p in zip(paths, resolved, strict=True) if not p.is_file()]
    for given, p in zip(paths, resolved, strict=True):
        if not p.is_file():  # the path tried, since relative entries follow the list file
            log.error(
                "input not found: %s (listed in %s; tried %s)", given, list_file, p.absolute()
            )
    base = _common_parent([p for _, p in present])
    return [_source(p, given, base) for given, p in present], absent


def _resolve_listed(entry: str, list_dir: Path) -> Path:
    path = Path(entry).expanduser()
    return path if path.is_absolute() else (list_dir / path)


def _common_parent(paths: Sequence[Path]) -> Path:
    if not paths:
        return Path()
    parents = [str(p.resolve().parent) for p in paths]
    return Path(os.path.commonpath(parents))


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).expanduser().parts
    base: list[str] = []
    for part in parts:
        if any(ch in part for ch in GLOB_CHARS):
            break
        base.append(part)
    return Path(*base) if base else Path()


def _source(path: Path, given: str, base: Path) -> SourceFile:
    resolved = path.resolve()
    try:
        rel = resolved.relative_to(base.resolve())
    except ValueError:
        rel = Path(resolved.name)
    return SourceFile(resolved, given, _output_rel(rel))


def _output_rel(rel: Path) -> PurePosixPath:
    """Output location: the relative path without its .pdf suffix, never escaping OUT."""
    parts = [p for p in rel.parts if p not in ("", ".", "..", "/")]
    if not parts:
        parts = ["document"]
    name = parts[-1]
    if name.lower().endswith(PDF_SUFFIX) and len(name) > len(PDF_SUFFIX):
        name = name[: -len(PDF_SUFFIX)]
    parts[-1] = name
    return PurePosixPath(*parts)


def _looks_like_pdf_name(name: str) -> bool:
    return name.lower().endswith(PDF_SUFFIX)


def _has_pdf_header(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return b"%PDF-" in handle.read(HEADER_WINDOW)
    except OSError:
        return False


def _unique(files: Iterable[SourceFile]) -> list[SourceFile]:
    """The same file named twice (dir and glob overlap) is one source."""
    seen: set[Path] = set()
    out: list[SourceFile] = []
    for f in files:
        if f.path not in seen:
            seen.add(f.path)
            out.append(f)
    return out


def assign_output_paths(
    docs: Sequence[tuple[str, PurePosixPath]],
) -> dict[str, PurePosixPath]:
    """Give every document a distinct output path; clashes get the id appended.

    `docs` is (doc_id, wanted path). Deterministic for a given set of documents, whatever
    the order, so every shard of a corpus computes the same mapping.
    """
    by_key: dict[str, list[tuple[str, PurePosixPath]]] = {}
    for doc_id, rel in docs:
        by_key.setdefault(str(rel).casefold(), []).append((doc_id, rel))
    out: dict[str, PurePosixPath] = {}
    for group in by_key.values():
        group.sort(key=lambda item: item[0])
        first_id, first_rel = group[0]
        out[first_id] = first_rel
        for doc_id, rel in group[1:]:
            out[doc_id] = rel.with_name(f"{rel.name}__{doc_id[:12]}")
    return out


# ---- probing: hash + page count, in worker processes --------------------------------------


def probe_file(path: str) -> Probe:
    """Hash a file and count its pages; never raises for a bad PDF (it returns the reason)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        doc_id = _sha256(p)
    except OSError as exc:
        return Probe(doc_id=_path_id(path), size=0, pages=0, error=f"cannot read file: {exc}")
    if size == 0:
        return Probe(doc_id, 0, 0, "empty file (0 bytes)")
    header_problem = _header_problem(p)
    if header_problem:
        return Probe(doc_id, size, 0, header_problem)
    pages, error = count_pages(p)
    return Probe(doc_id, size, pages, error)


def count_pages(path: Path) -> tuple[int, str | None]:
    import pypdfium2 as pdfium  # imported here: probing runs in worker processes

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        return 0, describe_pdfium_error(exc)
    try:
        pages = len(pdf)
    finally:
        pdf.close()
    if pages == 0:
        return 0, "PDF has no pages"
    return pages, None


def describe_pdfium_error(exc: Exception) -> str:
    import pypdfium2.raw as raw

    code = getattr(exc, "err_code", None)
    reasons = {
        raw.FPDF_ERR_PASSWORD: "encrypted PDF: a password is required to open it",
        raw.FPDF_ERR_SECURITY: "PDF uses an unsupported security handler",
        raw.FPDF_ERR_FORMAT: "damaged or not a PDF (pdfium could not parse it)",
        raw.FPDF_ERR_FILE: "file could not be opened",
    }
    return reasons.get(code, f"pdfium could not open it ({exc})")


def _header_problem(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(HEADER_WINDOW)
    if b"%PDF-" in head:
        return None
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "not a PDF: the file is an HTML/XML page saved with a .pdf name"
    preview = head[:16].decode("latin-1").encode("unicode_escape").decode("ascii")
    return f"not a PDF: no %PDF- header in the first {HEADER_WINDOW} bytes (starts {preview!r})"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _path_id(path: str) -> str:
    """Id for a file we cannot read: stable per path, marked so it never equals a content hash."""
    return "unreadable-" + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:52]


def probe_all(paths: Sequence[str], workers: int) -> dict[str, Probe]:
    """Probe files in parallel. A file that crashes the parser is reported, not fatal.

    At most 2×workers files are in flight, so when pdfium takes a worker process down only
    those are re-probed, each in a process of its own, to find the culprit.
    """
    results: dict[str, Probe] = {}
    todo = list(reversed(paths))
    while todo:
        in_flight: dict[Future[Probe], str] = {}
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                while todo or in_flight:
                    while todo and len(in_flight) < 2 * workers:
                        path = todo.pop()
                        in_flight[pool.submit(probe_file, path)] = path
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        results[in_flight.pop(fut)] = fut.result()
        except BrokenProcessPool:
            for path in in_flight.values():
                results[path] = _probe_isolated(path)
    return results


def _probe_isolated(path: str) -> Probe:
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            return pool.submit(probe_file, path).result()
    except BrokenProcessPool:
        size = Path(path).stat().st_size if Path(path).exists() else 0
        doc_id = _sha256(Path(path)) if size else _path_id(path)
        return Probe(doc_id, size, 0, "the PDF parser crashed while opening this file")
