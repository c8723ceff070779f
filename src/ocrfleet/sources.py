"""Find the PDFs of a run and say what each one is: content id, page count, or why it is unusable.

Inputs are directories (searched recursively), globs, single PDFs, or list files of paths.
A document's id is the SHA-256 of its bytes, so a moved or renamed file is recognised and not
redone. Each document also gets an output path that mirrors where it sat in its input, so
`a/report.pdf` and `b/report.pdf` never collide.
"""

from __future__ import annotations

import base64
import binascii
import errno
import glob
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .errors import ConfigError
from .names import assign_names, printable

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
    # Set for a path that is not a regular file (FIFO, device, symlink loop…): never read.
    problem: str | None = None


@dataclass(frozen=True)
class Probe:
    """What opening a file told us. `error` set means the document is unusable."""

    doc_id: str
    size: int
    pages: int
    error: str | None = None


def discover(inputs: Sequence[str]) -> tuple[list[SourceFile], list[str]]:
    """Expand inputs into PDF files, in a stable order; also return inputs that did not exist
    (each with the absolute path that was tried). Paths named *.pdf that are not regular
    files come back with a `problem` and are never opened."""
    found: list[SourceFile] = []
    missing: list[str] = []
    for given in inputs:
        path = Path(given).expanduser()
        if any(ch in given for ch in GLOB_CHARS) and not path.exists():
            matches = sorted(glob.glob(str(Path(given).expanduser()), recursive=True))  # noqa: PTH207
            base = _glob_base(given)
            found.extend(_source(Path(m), m, base) for m in matches if _looks_like_pdf_name(m))
            if not matches:
                missing.append(_not_found(given, path))
        elif path.is_dir():
            found.extend(_scan_directory(path, given))
        elif path.is_file():
            if _looks_like_pdf_name(given) or _has_pdf_header(path):
                found.append(_source(path, given, path.parent))
            else:
                listed, absent = _read_list_file(path)
                found.extend(listed)
                missing.extend(absent)
        elif os.path.lexists(path):  # a FIFO, a device, a dangling link or a loop
            found.append(_source(path, given, path.parent))
        else:
            missing.append(_not_found(given, path))
    return _unique(found), missing


def _not_found(given: str, path: Path, list_file: Path | None = None) -> str:
    """The input as given, and the absolute path that was looked for when they differ (an
    s3:// URI that matched nothing is reported as it is); a list file's entry also names the
    list, since its relative paths follow the list file, not the working directory."""
    shown = printable(given)
    if "://" in given:
        return shown
    tried = printable(str(path.absolute()))
    if list_file is not None:
        return f"{shown} (listed in {printable(str(list_file))}; tried {tried})"
    return shown if tried == shown else f"{shown} (tried {tried})"


def file_problem(path: Path) -> str | None:
    """Why a path cannot be read as a PDF file, or None for a regular file."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "not a regular file: a symlink loop"
        if path.is_symlink():
            return "not a regular file: a symlink to nothing"
        return f"cannot read file: {exc.strerror or exc}"
    if stat.S_ISREG(st.st_mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    )
    kind = next((name for test, name in kinds if test(st.st_mode)), "not a regular file")
    return f"not a regular file: {kind}; only regular files are read"


def _scan_directory(root: Path, given: str) -> Iterator[SourceFile]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if _looks_like_pdf_name(name):
                path = Path(dirpath) / name
                rel = path.relative_to(root)
                problem = file_problem(path)
                resolved = path.resolve() if problem is None else path.absolute()
                yield SourceFile(
                    resolved, printable(str(Path(given) / rel)), _output_rel(rel), problem
                )


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
    present = [(given, p) for given, p in zip(paths, resolved, strict=True) if os.path.lexists(p)]
    absent = [
        _not_found(given, p, list_file)
        for given, p in zip(paths, resolved, strict=True)
        if not os.path.lexists(p)
    ]
    base = _common_parent([p for _, p in present])
    return [_source(p, given, base) for given, p in present], absent


def _resolve_listed(entry: str, list_dir: Path) -> Path:
    path = Path(entry).expanduser()
    return path if path.is_absolute() else (list_dir / path)


def _common_parent(paths: Sequence[Path]) -> Path:
    if not paths:
        return Path()
    parents = [str(Path(os.path.realpath(p)).parent) for p in paths]
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
    problem = file_problem(path)
    # realpath, not resolve(): a symlink loop must be reported, not raise.
    resolved = Path(os.path.realpath(path)) if problem is None else path.absolute()
    try:
        rel = resolved.relative_to(os.path.realpath(base))
    except ValueError:
        rel = Path(resolved.name)
    return SourceFile(resolved, printable(given), _output_rel(rel), problem)


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
    return assign_names(docs)


# A path goes into the ledger as text. One that is not valid UTF-8 (a file name in Latin-1,
# say) is stored as its bytes in base64 behind a marker no absolute path starts with.
_B64 = "b64:"


def path_to_text(path: str) -> str:
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _B64 + base64.b64encode(raw).decode("ascii")


def text_to_path(text: str) -> str:
    if text.startswith(_B64):
        try:
            return os.fsdecode(base64.b64decode(text[len(_B64) :], validate=True))
        except (binascii.Error, ValueError):
            return text
    return text


# ---- probing: hash + page count, in worker processes --------------------------------------


def probe_file(path: str) -> Probe:
    """Hash a file and count its pages; never raises for a bad PDF (it returns the reason).

    Only a regular file is read (checked on the open descriptor, so a FIFO or a device
    swapped in after discovery cannot block or feed bytes forever)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        problem = file_problem(p) or f"cannot read file: {exc.strerror or exc}"
        return Probe(doc_id=path_id(path), size=0, pages=0, error=problem)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            return Probe(path_id(path), 0, 0, file_problem(p) or "not a regular file")
        try:
            head = handle.read(HEADER_WINDOW)
            handle.seek(0)
            doc_id = _sha256_handle(handle)
        except OSError as exc:
            return Probe(path_id(path), 0, 0, f"cannot read file: {exc.strerror or exc}")
    size = st.st_size
    if size == 0:
        return Probe(doc_id, 0, 0, "empty file (0 bytes)")
    header_problem = _header_problem(head)
    if header_problem:
        return Probe(doc_id, size, 0, header_problem)
    pages, error = count_pages(p)
    return Probe(doc_id, size, pages, error)


# A page tree that claims more pages than it holds (a 600-byte file saying /Count 1000000)
# is found by loading a sample of pages: when most of them cannot be loaded the document
# fails with one reason, instead of a million failed pages.
PAGE_SAMPLE = 16


def count_pages(path: Path) -> tuple[int, str | None]:
    import pypdfium2 as pdfium  # imported here: probing runs in worker processes

    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        return 0, describe_pdfium_error(exc)
    try:
        pages = len(pdf)
        broken = _unloadable_sample(pdf, pages) if pages > 1 else []
    finally:
        pdf.close()
    if pages == 0:
        return 0, "PDF has no pages"
    sample = _sample_indices(pages)
    if len(broken) * 2 > len(sample):
        listed = ", ".join(str(i + 1) for i in broken[:5])
        return pages, (
            f"broken page tree: the PDF claims {pages} pages but {len(broken)} of "
            f"{len(sample)} pages sampled cannot be loaded (pages {listed})"
        )
    return pages, None


def _sample_indices(pages: int) -> list[int]:
    if pages <= PAGE_SAMPLE:
        return list(range(pages))
    step = (pages - 1) / (PAGE_SAMPLE - 1)
    return sorted({round(i * step) for i in range(PAGE_SAMPLE)})


def _unloadable_sample(pdf: Any, pages: int) -> list[int]:
    broken = []
    for index in _sample_indices(pages):
        try:
            page = pdf[index]
        except Exception:  # pdfium raises PdfiumError: the page object is missing
            broken.append(index)
            continue
        page.close()
    return broken


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


# Leading bytes of common non-PDF formats: a "not a PDF" reason names the type, never the
# bytes (a list file or a symlink can point at any file, e.g. /etc/shadow).
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "an ELF executable"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ", "an xz archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
    (b"AT&TFORM", "a DjVu document"),
)


def detect_type(head: bytes) -> str:
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML/XML page"
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown type"
    return "a text file"


def _header_problem(head: bytes) -> str | None:
    if b"%PDF-" in head:
        return None
    kind = detect_type(head)
    if kind == "an HTML/XML page":
        return "not a PDF: the file is an HTML/XML page saved with a .pdf name"
    return f"not a PDF: no %PDF- header in the first {HEADER_WINDOW} bytes; it looks like {kind}"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return _sha256_handle(handle)


def _sha256_handle(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


UNREADABLE_PREFIX = "unreadable-"


def path_id(path: str) -> str:
    """Id for a file we cannot read: stable per path, marked so it never equals a content hash."""
    return (
        UNREADABLE_PREFIX + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:52]
    )


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
        regular = file_problem(Path(path)) is None
        size = Path(path).stat().st_size if regular else 0
        doc_id = _sha256(Path(path)) if size else path_id(path)
        return Probe(doc_id, size, 0, "the PDF parser crashed while opening this file")
