"""Render PDF pages to images in worker processes that run just ahead of the engine.

Pages are rendered one at a time with pypdfium2 (never a whole PDF in memory), at `dpi`,
scaled down when a page would exceed the pixel cap (page-size bombs). Each render process
serves requests first-in first-out over a pipe of its own, so when pdfium takes a process
down the page that did it is known exactly: it is retried once in a fresh process, then
failed with the reason, and the pages queued behind it are re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import mmap
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .blank import ink_ratio
from .errors import RenderError
from .handover import BufferMaps, PageBitmap, SharedBuffer, SharedBuffers, ShmFiles, new_bitmap

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    import pypdfium2
    from PIL import Image

    from .route import PageRoute

log = logging.getLogger(__name__)

READY = "ready"  # a render process's first message: imports done, pages welcome
# Seconds a restarted render process may take to send READY before it is replaced.
START_TIMEOUT = 120.0
# Pages with less ink than this also say whether they have a text layer (never blank).
CHECK_TEXT_BELOW = 0.01


@dataclass(frozen=True)
class RenderSettings:
    dpi: int = 144
    max_pixels: int = 25_000_000
    max_side: int = 10_000
    cache_dir: Path | None = None
    want_text: bool = False
    # Name of a preparer (ocrfleet.prepare) that turns the page into engine-ready arrays
    # inside the render process, off the engine's critical path.
    prepare: str | None = None
    keep_pixels: bool = True
    # Reusable shared page buffers per render process (handover.SharedBuffers); pages beyond
    # them (an engine holding many) go by /dev/shm file.
    shared_buffers: int = 8
    # Decide per page: text layer or OCR (ocrfleet.route), on the render just made.
    route: bool = False


@dataclass(frozen=True)
class RenderRequest:
    doc_id: str
    path: str
    page: int  # 1-based
    source: str = ""
    # Send the page to OCR whatever its text layer says (a redo), with this reason.
    force_ocr: str | None = None


@dataclass
class RenderedPage:
    doc_id: str
    page: int
    width: int
    height: int
    stride: int
    pixels: bytes | bytearray | mmap.mmap | np.ndarray | None
    ink_ratio: float
    scaled_down: bool
    effective_dpi: float
    render_seconds: float
    text_layer: str | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    from_cache: bool = False
    # What owns the memory `pixels` points into (pdfium's bitmap): kept alive with the page.
    owner: Any = field(default=None, repr=False, compare=False)
    # Set when the pixels were drawn into a /dev/shm file (render processes).
    pixels_path: str | None = None
    # The page has a text layer (checked for pages with little ink): it is never blank.
    has_text: bool = False
    route: PageRoute | None = None  # the text-layer verdict, when the engine asked for it

    def image(self) -> Image.Image:
        """The page as an RGB PIL image (no copy of the pixel buffer where PIL allows)."""
        from PIL import Image

        if self.pixels is None:
            raise ValueError("this page was rendered without keeping its pixels")
        return Image.frombuffer(
            "RGB",
            (self.width, self.height),
            np.frombuffer(self.pixels, dtype=np.uint8),
            "raw",
            "RGB",
            self.stride,
            1,
        )


@dataclass(frozen=True)
class _Buffer:
    """One buffer of a rendered page: in a shared buffer, a /dev/shm file or the pipe."""

    name: str  # "pixels" or an array name
    size: int
    shape: tuple[int, ...] = ()
    dtype: str = "uint8"
    path: str | None = None
    # (index, capacity, its descriptor follows the header) for a page in a shared buffer.
    shared: tuple[int, int, bool] | None = None


@dataclass(frozen=True)
class _Header:
    """What a render process sends for one page; its buffers follow or wait in /dev/shm."""

    ok: bool
    error: str | None
    page: RenderedPage | None
    buffers: tuple[_Buffer, ...] = ()
    retired: tuple[int, ...] = ()  # shared buffers the render process has closed


# ---- rendering one page (used in render processes and by the raw-renderer benchmark) ------


class DocumentCache:
    """A few open PdfDocuments per render process: pages of one PDF arrive in runs."""

    def __init__(self, capacity: int = 4) -> None:
        self._capacity = capacity
        self._docs: OrderedDict[str, pypdfium2.PdfDocument] = OrderedDict()
        self._stats: dict[str, tuple[int, int, int]] = {}

    def get(self, path: str) -> pypdfium2.PdfDocument:
        import pypdfium2 as pdfium

        st = Path(path).stat()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        if path in self._docs and self._stats.get(path) == stamp:
            self._docs.move_to_end(path)
            return self._docs[path]
        if path in self._docs:  # the file was rewritten: an open handle would mix old and new
            self._docs.pop(path).close()
        pdf = pdfium.PdfDocument(path)
        self._docs[path] = pdf
        self._stats[path] = stamp
        while len(self._docs) > self._capacity:
            name, old = self._docs.popitem(last=False)
            self._stats.pop(name, None)
            old.close()
        return pdf

    def close(self) -> None:
        for pdf in self._docs.values():
            pdf.close()
        self._docs.clear()


def page_scale(width_pt: float, height_pt: float, settings: RenderSettings) -> tuple[float, bool]:
    """Scale factor from PDF points to pixels, capped so no page becomes a memory bomb."""
    if not (width_pt > 0 and height_pt > 0) or not math.isfinite(width_pt * height_pt):
        raise ValueError(f"page has no usable size ({width_pt} x {height_pt} pt)")
    scale = settings.dpi / 72.0
    capped = False
    pixels = width_pt * height_pt * scale * scale
    if pixels > settings.max_pixels:
        scale *= math.sqrt(settings.max_pixels / pixels)
        capped = True
    longest = max(width_pt, height_pt) * scale
    if longest > settings.max_side:
        scale *= settings.max_side / longest
        capped = True
    return scale, capped


def render_page(
    docs: DocumentCache,
    req: RenderRequest,
    settings: RenderSettings,
    shm: ShmFiles | None = None,
) -> RenderedPage:
    """Render one page; raises RenderError naming the file and page.

    With `shm`, pdfium draws straight into memory the engine worker maps (a shared buffer, or
    a /dev/shm file: `page.pixels_path`): the pixels are never copied between processes."""
    started = time.perf_counter()
    cached = _load_cached(req, settings)
    if cached is not None:
        rgb, scaled, dpi = cached
        verdict = _route_cached(docs, req, rgb, dpi) if settings.route else None
        text = _text_layer(docs, req) if settings.want_text and verdict is None else None
        out = _rendered(req, rgb, scaled, dpi, started, text, from_cache=True)
        if verdict is not None:
            out.route, out.text_layer = verdict, verdict.text
            text = verdict.text
        elif text is None and out.ink_ratio < CHECK_TEXT_BELOW:
            text = _text_layer(docs, req)
        out.has_text = bool(text and text.strip())
        return out
    try:
        pdf = docs.get(req.path)
    except Exception as exc:  # pdfium raises PdfiumError; a vanished file raises OSError
        raise RenderError(req.source or req.path, f"cannot open PDF: {exc}", req.page) from exc
    try:
        page = pdf[req.page - 1]
    except Exception as exc:
        raise RenderError(req.source or req.path, f"cannot load page: {exc}", req.page) from exc
    try:
        width_pt, height_pt = page.get_size()
        scale, scaled = page_scale(width_pt, height_pt, settings)
        target = shm.bitmap_maker() if shm is not None else None
        bitmap = page.render(
            scale=scale,
            rev_byteorder=True,
            draw_annots=True,
            bitmap_maker=target if target is not None else new_bitmap,
        )
        if target is not None and target.fallback:
            target = None
        pixels, stride, ink = _bitmap_pixels(bitmap)
        width, height = bitmap.width, bitmap.height
        owner: Any = bitmap if target is None else target
        verdict = None
        if settings.route:
            from .route import route_page

            where = f"{req.source} page {req.page}"
            verdict = route_page(page, bitmap.to_numpy(), scale, where, req.force_ocr)
        text = verdict.text if verdict is not None else None
        if verdict is None and (settings.want_text or ink < CHECK_TEXT_BELOW):
            text = _page_text(page)
    except Exception as exc:
        if target is not None:
            target.discard()
        raise RenderError(req.source or req.path, f"cannot render page: {exc}", req.page) from exc
    finally:
        page.close()
    page_out = RenderedPage(
        doc_id=req.doc_id,
        page=req.page,
        width=width,
        height=height,
        stride=stride,
        pixels=pixels,
        ink_ratio=ink,
        scaled_down=scaled,
        effective_dpi=round(scale * 72.0, 2),
        render_seconds=time.perf_counter() - started,
        text_layer=text if settings.want_text else None,
        owner=owner,
        pixels_path=target.path if target is not None else None,
        has_text=bool(text and text.strip()),
        route=verdict,
    )
    _store_cached(req, settings, page_out)
    return page_out


def _bitmap_pixels(bitmap: pypdfium2.PdfBitmap) -> tuple[np.ndarray, int, float]:
    """The bitmap's RGB bytes without a copy (its row stride kept; the array keeps the bitmap
    alive), and its ink share."""
    view = bitmap.to_numpy()
    if view.ndim == 3 and view.shape[2] == 3:
        return np.frombuffer(bitmap.buffer, dtype=np.uint8), int(bitmap.stride), ink_ratio(view)
    rgb = np.ascontiguousarray(view[..., :3]) if view.ndim == 3 else np.dstack([view] * 3)
    return rgb.reshape(-1), int(rgb.shape[1]) * 3, ink_ratio(rgb)


def _rendered(
    req: RenderRequest,
    rgb: np.ndarray,
    scaled: bool,
    dpi: float,
    started: float,
    text: str | None,
    *,
    from_cache: bool = False,
) -> RenderedPage:
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    return RenderedPage(
        doc_id=req.doc_id,
        page=req.page,
        width=width,
        height=height,
        stride=width * 3,
        pixels=rgb.tobytes(),
        ink_ratio=ink_ratio(rgb),
        scaled_down=scaled,
        effective_dpi=round(dpi, 2),
        render_seconds=time.perf_counter() - started,
        text_layer=text,
        from_cache=from_cache,
    )


def _page_text(page: pypdfium2.PdfPage) -> str:
    """The text layer in reading order, cleaned (ocrfleet.textlayer)."""
    from .textlayer import extract_text

    textpage = page.get_textpage()
    try:
        return extract_text(textpage)[0]
    finally:
        textpage.close()


def _text_layer(docs: DocumentCache, req: RenderRequest) -> str:
    try:
        page = docs.get(req.path)[req.page - 1]
    except Exception as exc:
        raise RenderError(req.source or req.path, f"cannot load page: {exc}", req.page) from exc
    try:
        return _page_text(page)
    finally:
        page.close()


def _route_cached(
    docs: DocumentCache, req: RenderRequest, rgb: np.ndarray, dpi: float
) -> PageRoute:
    from .route import route_page

    try:
        page = docs.get(req.path)[req.page - 1]
    except Exception as exc:
        raise RenderError(req.source or req.path, f"cannot load page: {exc}", req.page) from exc
    try:
        return route_page(page, rgb, dpi / 72.0, f"{req.source} page {req.page}", req.force_ocr)
    finally:
        page.close()


def _cache_path(req: RenderRequest, settings: RenderSettings) -> Path | None:
    if settings.cache_dir is None:
        return None
    key = f"p{req.page:05d}-{settings.dpi}dpi-{settings.max_pixels}-{settings.max_side}.png"
    return settings.cache_dir / req.doc_id[:2] / req.doc_id / key


def _load_cached(
    req: RenderRequest, settings: RenderSettings
) -> tuple[np.ndarray, bool, float] | None:
    path = _cache_path(req, settings)
    if path is None or not path.exists():
        return None
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
            scaled = img.info.get("ocrfleet-scaled") == "1"
            dpi = float(img.info.get("ocrfleet-dpi", settings.dpi))
    except Exception:  # a torn cache file is re-rendered, never trusted
        log.warning("ignoring unreadable image cache file %s", path)
        return None
    return rgb, scaled, dpi


def _store_cached(req: RenderRequest, settings: RenderSettings, page: RenderedPage) -> None:
    path = _cache_path(req, settings)
    if path is None or page.pixels is None:
        return
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("ocrfleet-scaled", "1" if page.scaled_down else "0")
    info.add_text("ocrfleet-dpi", f"{page.effective_dpi:.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    page.image().save(tmp, format="PNG", compress_level=1, pnginfo=info)
    tmp.replace(path)


# ---- the render process -------------------------------------------------------------------


def _render_process(conn: Connection, settings: RenderSettings) -> None:
    """Loop of a render process: requests in, (header, pixels, arrays…) out, in order."""
    # The parent owns shutdown: a terminal Ctrl-C must not kill renders mid-page.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    docs = DocumentCache()
    preparer = _load_preparer(settings.prepare)
    shared = SharedBuffers(settings.shared_buffers)
    shm = ShmFiles(shared, files=ShmFiles.available())
    import pypdfium2  # noqa: F401  (loaded before the first page, not during it)

    conn.send(READY)
    try:
        while True:
            try:
                message: tuple[RenderRequest, tuple[int, ...]] | None = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            req, released = message
            shared.release(released)
            _serve(conn, docs, req, settings, preparer, shm)
    finally:
        docs.close()


def _serve(
    conn: Connection,
    docs: DocumentCache,
    req: RenderRequest,
    settings: RenderSettings,
    preparer: Any,
    shm: ShmFiles | None,
) -> None:
    page: RenderedPage | None = None
    try:
        page = render_page(docs, req, settings, shm if settings.keep_pixels else None)
        # A page that keeps its text layer never reaches the OCR engine: nothing to prepare.
        skip = page.route is not None and page.route.route == "text"
        arrays: dict[str, np.ndarray] = preparer(page) if preparer and not skip else {}
    except Exception as exc:  # a bug in a preparer must not stop the render process
        if page is not None and isinstance(page.owner, PageBitmap):
            page.owner.discard()  # its shared buffer is free again, its file gone
        reason = exc.reason if isinstance(exc, RenderError) else f"{type(exc).__name__}: {exc}"
        conn.send(_Header(ok=False, error=reason, page=None))
        return
    pixels = page.pixels if settings.keep_pixels else None
    owner = page.owner  # keeps pdfium's bitmap (the pixels' memory) alive until written
    drawn_shared = owner.shared if isinstance(owner, PageBitmap) else None
    # Each buffer of the page, with the shared buffer it sits in and the bytes the pipe carries.
    parts: list[tuple[_Buffer, SharedBuffer | None, memoryview | None]] = []
    if pixels is not None:
        size = memoryview(cast("bytes", pixels)).nbytes
        if drawn_shared is not None:  # pdfium drew straight into memory the worker maps
            parts.append(_shared_part("pixels", size, (), "uint8", drawn_shared))
        elif page.pixels_path is not None:
            parts.append((_Buffer("pixels", size, path=page.pixels_path), None, None))
        else:
            flat = memoryview(cast("bytes", pixels)).cast("B")
            parts.append(_placed("pixels", flat, (), "uint8", shm))
    page.pixels = page.owner = page.pixels_path = None
    for name, array in arrays.items():
        # A flat byte view: a multi-dimensional view would be sliced along its first axis.
        flat = np.ascontiguousarray(array).data.cast("B")
        parts.append(_placed(name, flat, tuple(array.shape), str(array.dtype), shm))
    del pixels
    if isinstance(owner, PageBitmap):
        owner.close()  # the worker's mapping holds the pixels; let go of them here
    del owner
    retired = shm.shared.take_retired() if shm is not None and shm.shared is not None else ()
    buffers = tuple(buffer for buffer, _, _ in parts)
    conn.send(_Header(ok=True, error=None, page=page, buffers=buffers, retired=retired))
    for _, shared, data in parts:
        if shared is not None and shared.fd is not None:  # its first use: mapped once
            reduction.send_handle(conn, shared.fd, os.getppid())
            os.close(shared.fd)
            shared.fd = None
        elif data is not None:
            conn.send_bytes(data)


def _shared_part(
    name: str, size: int, shape: tuple[int, ...], dtype: str, shared: SharedBuffer
) -> tuple[_Buffer, SharedBuffer | None, memoryview | None]:
    place = (shared.index, shared.capacity, shared.fd is not None)
    return _Buffer(name, size, shape, dtype, shared=place), shared, None


def _placed(
    name: str, data: memoryview, shape: tuple[int, ...], dtype: str, shm: ShmFiles | None
) -> tuple[_Buffer, SharedBuffer | None, memoryview | None]:
    """Copy `data` where the worker can map it: a free shared buffer, else a /dev/shm file;
    with neither, it rides the pipe after the header."""
    shared = shm.shared.acquire(data.nbytes) if shm is not None and shm.shared else None
    if shared is not None:
        shared.map[: data.nbytes] = data
        return _shared_part(name, data.nbytes, shape, dtype, shared)
    path = shm.write(data) if shm is not None else None
    return _Buffer(name, data.nbytes, shape, dtype, path), None, None if path else data


def _load_preparer(name: str | None) -> Any:
    if name is None:
        return None
    from .prepare import load_preparer

    return load_preparer(name)


def _receive(conn: Connection, maps: BufferMaps) -> _Header | None:
    header: _Header | str = conn.recv()
    if isinstance(header, str):  # READY from a restarted process
        return None
    maps.retire(header.retired)
    if not header.ok or header.page is None:
        return header
    for buffer in header.buffers:
        data: Any
        if buffer.shared is not None:
            index, capacity, fd_follows = buffer.shared
            if fd_follows:
                maps.add(index, reduction.recv_handle(conn), capacity)
            data = maps.view(index, buffer.size)
        elif buffer.path is not None:
            data = ShmFiles.take(buffer.path, buffer.size)
        else:
            data = bytearray(buffer.size)  # writable: torch.from_numpy needs no copy
            conn.recv_bytes_into(data)
        if buffer.name == "pixels":
            header.page.pixels = data
        else:
            array = np.frombuffer(
                data, dtype=buffer.dtype, count=buffer.size // np.dtype(buffer.dtype).itemsize
            ).reshape(buffer.shape)
            header.page.arrays[buffer.name] = array
    return header


# ---- the pool (parent side) ---------------------------------------------------------------


class RenderCrash(RenderError):
    """pdfium took the render process down on this page, twice."""


class RenderTimeout(RenderError):
    """The page was still rendering after --render-timeout: its process was killed."""


@dataclass
class _Job:
    req: RenderRequest
    future: asyncio.Future[RenderedPage]
    crashes: int = 0
    # When the render process began on this page (it heads the process's queue and the
    # process is ready); None while it waits.
    since: float | None = None


@dataclass
class _Slot:
    process: BaseProcess
    conn: Connection
    jobs: deque[_Job] = field(default_factory=deque)
    maps: BufferMaps = field(default_factory=BufferMaps)  # its shared page buffers, mapped
    ready: bool = False
    # The job whose deadline passed: its process was killed for it.
    timed_out: _Job | None = None
    spawned_at: float = field(default_factory=time.monotonic)
    # Killed because it never became ready: no page is to blame.
    start_hung: bool = False


class RenderPool:
    """N render processes, each with a bounded FIFO of requests; results come back as futures.

    A reader thread receives results and watches for dead processes; the event loop only
    sends small request objects.
    """

    def __init__(
        self,
        workers: int,
        settings: RenderSettings,
        *,
        per_worker: int = 3,
        render_timeout: float | None = None,
    ) -> None:
        self.workers = max(1, workers)
        # A page still rendering after this many seconds (a pdfium infinite loop) has its
        # process killed and replaced; the page fails with the reason, nothing else waits.
        self.render_timeout = render_timeout
        self.settings = settings
        self.per_worker = per_worker
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capacity: asyncio.Semaphore | None = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self.restarts = 0

    def start(self, timeout: float = 120.0) -> None:
        """Start the render processes and wait until each has loaded what it needs."""
        self._loop = asyncio.get_running_loop()
        self._capacity = asyncio.Semaphore(self.workers * self.per_worker)
        self._slots = [self._spawn() for _ in range(self.workers)]
        for slot in self._slots:
            if not slot.conn.poll(timeout) or slot.conn.recv() != READY:
                raise RuntimeError(f"render process did not start (exit {slot.process.exitcode})")
            slot.ready = True
        self._reader = threading.Thread(target=self._read_loop, name="render-reader", daemon=True)
        self._reader.start()

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_render_process,
            args=(child, self.settings),
            name="ocrfleet-render",
            daemon=True,
        )
        process.start()
        child.close()
        return _Slot(process, parent)

    async def render(self, req: RenderRequest) -> RenderedPage:
        """Render a page in a render process; raises RenderError (with file and page)."""
        assert self._loop is not None and self._capacity is not None, "start() first"
        async with self._capacity:
            future: asyncio.Future[RenderedPage] = self._loop.create_future()
            with self._lock:
                slot = min(self._slots, key=lambda s: len(s.jobs))
                job = _Job(req, future)
                slot.jobs.append(job)
                if len(slot.jobs) == 1 and slot.ready:
                    job.since = time.monotonic()
                self._send(slot, job)
            return await future

    def _send(self, slot: _Slot, job: _Job) -> None:
        # A dead process fails the send; the reader thread re-sends its jobs.
        with contextlib.suppress(BrokenPipeError, OSError):
            slot.conn.send((job.req, slot.maps.take_released()))

    def _read_loop(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                waitables: dict[Any, _Slot] = {}
                for slot in self._slots:
                    waitables[slot.conn] = slot
                    waitables[slot.process.sentinel] = slot
            for ready in wait(list(waitables), timeout=0.2):
                slot = waitables[ready]
                if ready is slot.conn:
                    self._drain(slot)
                elif not self._closing.is_set():
                    self._drain(slot)
                    self._replace(slot)
            self._enforce_deadlines()

    def _enforce_deadlines(self) -> None:
        """Kill a render process whose current page is past the render timeout; its
        sentinel then fires and _replace fails that page with the reason."""
        now = time.monotonic()
        with self._lock:
            for slot in self._slots:
                start_limit = max(START_TIMEOUT, self.render_timeout or 0.0)
                if not slot.ready and not slot.start_hung and now - slot.spawned_at > start_limit:
                    slot.start_hung = True  # a process that never started serves no page
                    with contextlib.suppress(OSError):
                        slot.process.kill()
                    continue
                if self.render_timeout is None:
                    continue
                head = slot.jobs[0] if slot.jobs else None
                if head is None or head.since is None or slot.timed_out is not None:
                    continue
                if now - head.since > self.render_timeout:
                    slot.timed_out = head
                    with contextlib.suppress(OSError):
                        slot.process.kill()

    def _drain(self, slot: _Slot) -> None:
        try:
            while slot.conn.poll():
                header = _receive(slot.conn, slot.maps)
                with self._lock:
                    if header is None:  # READY: the (restarted) process begins its queue
                        slot.ready = True
                        if slot.jobs:
                            slot.jobs[0].since = time.monotonic()
                        continue
                    job = slot.jobs.popleft()
                    if slot.jobs:
                        slot.jobs[0].since = time.monotonic()
                self._resolve(job, header)
        except (EOFError, OSError):
            return
        except Exception:
            # A garbled message leaves the pipe out of step: end that process; its jobs are
            # re-sent (the head one counts a crash), never left waiting forever.
            log.exception("bad message from a render process; restarting it")
            slot.process.kill()

    def _resolve(self, job: _Job, header: _Header) -> None:
        assert self._loop is not None
        if header.ok and header.page is not None:
            self._settle(job.future, header.page, None)
        else:
            err = RenderError(job.req.source or job.req.path, header.error or "?", job.req.page)
            self._settle(job.future, None, err)

    def _settle(
        self,
        future: asyncio.Future[RenderedPage],
        page: RenderedPage | None,
        error: BaseException | None,
    ) -> None:
        def apply() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            elif page is not None:
                future.set_result(page)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(apply)

    def _replace(self, dead: _Slot) -> None:
        """A render process died: the job at the head of its queue did it."""
        with self._lock:
            jobs = list(dead.jobs)
            dead.conn.close()
            if dead.process.pid is not None:
                ShmFiles.sweep(os.getpid(), dead.process.pid)
            fresh = self._spawn()
            self.restarts += 1
            self._slots[self._slots.index(dead)] = fresh
            for job in jobs:
                job.since = None  # the clock restarts when the fresh process is ready
            timed_out = dead.timed_out
            if timed_out is not None:
                if jobs and jobs[0] is timed_out:
                    jobs.pop(0)
                    source = timed_out.req.source or timed_out.req.path
                    log.warning(
                        "render of %s page %d passed --render-timeout %g s; process killed",
                        source,
                        timed_out.req.page,
                        self.render_timeout,
                    )
                    self._settle(
                        timed_out.future,
                        None,
                        RenderTimeout(
                            source,
                            f"rendering took longer than --render-timeout "
                            f"{self.render_timeout:g} s (the render process was killed)",
                            timed_out.req.page,
                        ),
                    )
                # else: the page finished just before the kill; nobody is to blame.
            elif jobs and not dead.start_hung:
                culprit = jobs[0]
                culprit.crashes += 1
                code = dead.process.exitcode
                log.warning(
                    "render process died (exit %s) on %s page %d",
                    code,
                    culprit.req.source or culprit.req.path,
                    culprit.req.page,
                )
                if culprit.crashes >= 2:
                    jobs.pop(0)
                    self._settle(
                        culprit.future,
                        None,
                        RenderCrash(
                            culprit.req.source or culprit.req.path,
                            f"the PDF renderer crashed on this page (exit code {code}), twice",
                            culprit.req.page,
                        ),
                    )
            for job in jobs:
                fresh.jobs.append(job)
                self._send(fresh, job)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            slots = list(self._slots)
        for slot in slots:
            with contextlib.suppress(OSError, BrokenPipeError):
                slot.conn.send(None)
        for slot in slots:
            slot.process.join(timeout=5)
            if slot.process.is_alive():
                slot.process.kill()
            slot.conn.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
