"""How a rendered page's memory gets from a render process to the engine worker, uncopied.

Three ways, tried in this order for each page:

1. a **shared buffer** (`SharedBuffers`, `BufferMaps`): memfd memory that both processes map
   once and reuse page after page. Its descriptor crosses the pipe once (SCM_RIGHTS); the
   worker hands a buffer back when the last array over it is dropped, and the render process
   learns of it with its next request. Nothing is named in /dev/shm, so nothing is left
   behind by a crash, and no page faults are paid after the first use. A fresh file per page
   costs about 3 ms of CPU a page on the 2-core VM (allocate, zero, fault in on both sides).
2. a **file in /dev/shm** (`ShmFiles`) when every shared buffer is in use (an engine holding
   many pages) or the page is too large for one: written once, mapped and unlinked by the
   worker.
3. the **pipe**, when /dev/shm has no room (containers give it 64 MB).

pdfium draws straight into 1 or 2 (`PageBitmap`), on a white background laid down with one
memset: pdfium's own FPDFBitmap_FillRect costs 2.5 ms on a 6 MB RGB page, memset 0.3 ms.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
import secrets
import stat
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pypdfium2

MIB = 1 << 20
WHITE = (255, 255, 255, 255)


@functools.cache
def white_bitmap_class() -> type[pypdfium2.PdfBitmap]:
    """PdfBitmap whose full-page white fill (what `PdfPage.render` asks for before drawing) is
    one memset: all bytes 0xFF is opaque white in every pdfium pixel format."""
    import pypdfium2 as pdfium

    class WhiteFillBitmap(pdfium.PdfBitmap):  # type: ignore[misc]
        def fill_rect(self, color: Any, left: int, top: int, width: int, height: int) -> None:
            whole = (left, top, width, height) == (0, 0, self.width, self.height)
            if whole and tuple(color) == WHITE and self.buffer is not None:
                ctypes.memset(self.buffer, 0xFF, self.stride * self.height)
            else:
                super().fill_rect(color, left, top, width, height)

    return WhiteFillBitmap


def new_bitmap(
    width: int, height: int, format: int, rev_byteorder: bool = False, **_: Any
) -> pypdfium2.PdfBitmap:
    """A `bitmap_maker` for pages drawn in this process's own memory."""
    return white_bitmap_class().new_native(width, height, format, rev_byteorder=rev_byteorder)


# ---- shared buffers: the render process's side ---------------------------------------------


@dataclass
class SharedBuffer:
    index: int
    capacity: int
    map: mmap.mmap
    fd: int | None  # open until the engine worker has been sent it


class SharedBuffers:
    """A render process's reusable page buffers (memfd), at most `count` of them.

    A buffer is busy from `acquire` until the engine worker hands it back (`release`). When
    every buffer is busy, or the page is larger than `max_capacity`, `acquire` says None and
    the page travels another way.
    """

    def __init__(
        self, count: int, *, min_capacity: int = 8 * MIB, max_capacity: int = 64 * MIB
    ) -> None:
        self.count = count
        self.min_capacity = min_capacity
        self.max_capacity = max_capacity
        self._buffers: dict[int, SharedBuffer] = {}
        self._free: list[int] = []
        self._retired: list[int] = []
        self._next = 0

    def acquire(self, size: int) -> SharedBuffer | None:
        if size > self.max_capacity or self.count <= 0:
            return None
        fitting = [i for i in self._free if self._buffers[i].capacity >= size]
        if fitting:
            index = min(fitting, key=lambda i: self._buffers[i].capacity)
            self._free.remove(index)
            return self._buffers[index]
        if len(self._buffers) >= self.count:
            if not self._free:
                return None
            # Every idle buffer is too small for this page: make room with the smallest.
            self._retire(min(self._free, key=lambda i: self._buffers[i].capacity))
        return self._create(max(self.min_capacity, -(-size // MIB) * MIB))

    def release(self, indexes: tuple[int, ...]) -> None:
        """The engine worker has dropped these buffers' pages."""
        self._free.extend(i for i in indexes if i in self._buffers and i not in self._free)

    def give_back(self, buffer: SharedBuffer) -> None:
        """The page drawn into `buffer` failed before it was sent."""
        self.release((buffer.index,))

    def take_retired(self) -> tuple[int, ...]:
        """Buffers closed here since the last call: the worker may unmap them."""
        retired, self._retired = tuple(self._retired), []
        return retired

    def _create(self, capacity: int) -> SharedBuffer | None:
        try:
            fd = os.memfd_create("ocrfleet-page", os.MFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        try:
            # Reserve the memory now: out of memory must fail here, not as a SIGBUS mid-draw.
            os.posix_fallocate(fd, 0, capacity)
            mapped = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED | _POPULATE)
        except OSError:
            os.close(fd)
            return None
        buffer = SharedBuffer(self._next, capacity, mapped, fd)
        self._buffers[buffer.index] = buffer
        self._next += 1
        return buffer

    def _retire(self, index: int) -> None:
        buffer = self._buffers.pop(index)
        self._free.remove(index)
        if buffer.fd is not None:
            os.close(buffer.fd)
        with contextlib.suppress(BufferError):  # a view still alive: freed when collected
            buffer.map.close()
        self._retired.append(index)


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


# ---- shared buffers: the engine worker's side ---------------------------------------------


class BufferMaps:
    """The engine worker's mappings of one render process's shared buffers.

    `view` gives a page's bytes as an array; when the last array over that memory is
    dropped, the buffer's index joins `released`, to ride on the next request.
    """

    def __init__(self) -> None:
        self._maps: dict[int, mmap.mmap] = {}
        self._released: deque[int] = deque()

    def add(self, index: int, fd: int, capacity: int) -> None:
        try:
            self._maps[index] = mmap.mmap(
                fd,
                capacity,
                flags=mmap.MAP_SHARED | _POPULATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
        finally:
            os.close(fd)

    def view(self, index: int, size: int) -> np.ndarray:
        array = np.frombuffer(self._maps[index], dtype=np.uint8, count=size)
        # Views, memoryviews and tensors made from `array` keep it alive (numpy bases stop
        # at it: its own base is the mmap), so the buffer is reused only once all are gone.
        weakref.finalize(array, self._released.append, index).atexit = False
        return array

    def retire(self, indexes: tuple[int, ...]) -> None:
        for index in indexes:
            mapped = self._maps.pop(index, None)
            if mapped is not None:
                with contextlib.suppress(BufferError):
                    mapped.close()

    def take_released(self) -> tuple[int, ...]:
        released: list[int] = []
        with contextlib.suppress(IndexError):
            while True:
                released.append(self._released.popleft())
        return tuple(released)

    def __len__(self) -> int:
        return len(self._maps)


# ---- files in /dev/shm -----------------------------------------------------------------------


class ShmFiles:
    """Page buffers handed over as files in /dev/shm (RAM): one copy in, none out.

    Through a pipe, a 6–16 MB page costs a copy on each side and dozens of context switches;
    here the render process writes the file once and the receiver maps it and unlinks it at
    once, so the memory is freed with the last reference, crash or not. Names carry the
    engine worker's pid, so a supervisor can sweep what a killed worker left behind.

    /dev/shm is shared by every local user: names end in 128 random bits (nobody can
    pre-create them), files are created O_EXCL|O_NOFOLLOW with mode 0600 (a planted file or
    symlink makes the page go by pipe instead, never into someone else's file), the
    receiver opens O_NOFOLLOW and takes only a regular file of its own user, and sweeps
    remove only regular files of this user.
    """

    ROOT = Path("/dev/shm")

    def __init__(self, shared: SharedBuffers | None = None, *, files: bool = True) -> None:
        self.prefix = f"ocrfleet-{os.getppid()}-{os.getpid()}-"
        self.count = 0
        self.shared = shared
        # False where /dev/shm is small: shared buffers (memfd, outside /dev/shm) still serve.
        self.files = files

    @classmethod
    def available(cls, min_free: int = 1 << 30) -> bool:
        """Usable when /dev/shm is writable and not tiny (containers often give it 64 MB)."""
        if not (cls.ROOT.is_dir() and os.access(cls.ROOT, os.W_OK)):
            return False
        stats = os.statvfs(cls.ROOT)
        return stats.f_bavail * stats.f_frsize >= min_free

    def new_path(self) -> Path:
        self.count += 1
        return self.ROOT / f"{self.prefix}{secrets.token_hex(16)}"

    def write(self, data: memoryview) -> str | None:
        """The data as a /dev/shm file, or None when there is no room (send it by pipe)."""
        if not self.files:
            return None
        path = self.new_path()
        try:
            fd = create_exclusive(path)
        except OSError:
            return None  # no room, or a name someone planted: never touch it
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return str(path)

    def bitmap_maker(self) -> PageBitmap:
        path = self.new_path() if self.files else None
        return PageBitmap(path, self.shared)

    @staticmethod
    def take(path: str, size: int) -> mmap.mmap:
        """Map the file copy-on-write (writable for torch, private) and unlink it."""
        if not size:
            Path(path).unlink()
            return mmap.mmap(-1, 1)
        # MAP_POPULATE maps every page at once: reading a freshly mapped 6 MB page image
        # otherwise costs some 1,500 separate page faults in the engine's own thread.
        flags = mmap.MAP_PRIVATE | _POPULATE
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                raise PermissionError(f"{path} is not a page file of this user")
            mapped = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        Path(path).unlink()
        return mapped

    @classmethod
    def sweep_orphans(cls) -> int:
        """Remove pages left by engine workers that no longer exist (a run killed with -9
        takes its supervisor down before it can sweep): called when a run starts."""
        return _remove(
            leftover
            for leftover in cls.ROOT.glob("ocrfleet-*-*-*")
            if (worker := leftover.name.split("-")[1]).isdigit()
            and _orphaned(leftover, int(worker))
        )

    @classmethod
    def sweep_orphans_safely(cls) -> int:
        """sweep_orphans, never raising: a run starts whatever /dev/shm holds."""
        try:
            return cls.sweep_orphans()
        except OSError:
            return 0

    @classmethod
    def sweep(cls, worker_pid: int, render_pid: int | None = None) -> int:
        """Remove what a dead engine worker's (or one render process's) pages left behind."""
        pattern = f"ocrfleet-{worker_pid}-{'' if render_pid is None else f'{render_pid}-'}*"
        return _remove(cls.ROOT.glob(pattern))


def create_exclusive(path: Path) -> int:
    """A new file for this user only: fails if the name exists (a planted file or symlink)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # page images are private whatever the umask says
    return fd


def _remove(paths: Iterable[Path]) -> int:
    """Unlink each of this user's regular files that still exists; how many were removed.
    (Root must not delete another user's files that merely look like ours.)"""
    removed = 0
    me = os.geteuid()
    for path in paths:
        with contextlib.suppress(OSError):
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode) or info.st_uid != me:
                continue
            path.unlink()
            removed += 1
    return removed


def _orphaned(path: Path, worker: int) -> bool:
    """The file's engine worker is gone: no such process, or the pid now belongs to a
    process that started after the file was written (the pid was reused)."""
    if not _alive(worker):
        return True
    started = _process_start(worker)
    try:
        written = path.lstat().st_mtime
    except OSError:
        return False
    return started is not None and started > written + 2.0  # 2 s: clock granularity


def _process_start(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where unknown."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text("ascii")
        ticks = int(stat_line.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        for line in Path("/proc/stat").read_text("ascii").splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours to judge
        return True
    return True


class PageBitmap:
    """A pypdfium2 `bitmap_maker` for a render process: pdfium draws into a shared buffer when
    one is free, else into a fresh /dev/shm file, else (no room) into private memory that
    goes by pipe (`fallback`)."""

    def __init__(self, path: Path | None, shared: SharedBuffers | None = None) -> None:
        self.path = None if path is None else str(path)
        self.shared: SharedBuffer | None = None
        self._pool = shared
        self._map: mmap.mmap | None = None
        self._buffer: Any = None
        self._bitmap: Any = None
        self.fallback = False

    def __call__(
        self, width: int, height: int, format: int, rev_byteorder: bool = False, **_: Any
    ) -> pypdfium2.PdfBitmap:
        import pypdfium2.internal as pdfium_i

        stride = width * int(pdfium_i.BitmapTypeToNChannels[format])
        size = stride * height
        memory = self._shared_memory(size)
        if memory is None:
            memory = self._file_memory(size)
        if memory is None:
            self.discard()
            self.fallback = True  # this page goes through the pipe instead
            return new_bitmap(width, height, format, rev_byteorder)
        self._buffer = (ctypes.c_ubyte * size).from_buffer(memory)
        self._bitmap = white_bitmap_class().new_native(
            width, height, format, rev_byteorder=rev_byteorder, buffer=self._buffer, stride=stride
        )
        return self._bitmap

    def _shared_memory(self, size: int) -> mmap.mmap | None:
        if self._pool is None:
            return None
        self.shared = self._pool.acquire(size)
        if self.shared is None:
            return None
        self.path = None
        return self.shared.map

    def _file_memory(self, size: int) -> mmap.mmap | None:
        if self.path is None:
            return None
        try:
            fd = create_exclusive(Path(self.path))
        except OSError:
            self.path = None  # a name someone planted is not ours to write or remove
            return None
        try:
            # Reserve the memory now: a full /dev/shm must fail here, not as a SIGBUS
            # while pdfium draws into a sparse file (Docker gives /dev/shm 64 MB).
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except OSError:
            with contextlib.suppress(OSError):
                Path(self.path).unlink()
            self.path = None
            return None
        finally:
            os.close(fd)
        return self._map

    def close(self) -> None:
        """Let go of the memory here (the worker has it now); safe to call twice."""
        self._bitmap = None  # the bitmap's finalizer destroys pdfium's handle
        self._buffer = None
        if self._map is not None:
            # A view still alive elsewhere keeps the mapping until it is collected.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None

    def discard(self) -> None:
        """The page failed: its shared buffer is free again, its file removed."""
        self.close()
        if self.shared is not None and self._pool is not None:
            self._pool.give_back(self.shared)
            self.shared = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                Path(self.path).unlink()
