"""The render pool: render processes that run just ahead of the engine, and their protocol.

Each render process serves requests first-in first-out over a pipe of its own, so when pdfium
takes a process down the page that did it is known exactly: it is retried once in a fresh
process, then failed with the reason, and the pages queued behind it are re-sent. A page
still rendering after --render-timeout has its process killed and replaced. Pages come back
as a header and buffers that the worker maps without copying (handover.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .errors import RenderCrash, RenderError, RenderTimeout
from .handover import BufferMaps, PageBitmap, SharedBuffer, SharedBuffers, ShmFiles
from .page import RenderedPage, RenderRequest, RenderSettings
from .render import DocumentCache, render_page

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

READY = "ready"  # a render process's first message: imports done, pages welcome
# Seconds a restarted render process may take to send READY before it is replaced.
START_TIMEOUT = 120.0


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
