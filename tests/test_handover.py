"""Shared page buffers between render processes and the engine worker, and /dev/shm upkeep."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium

from ocrfleet.handover import (
    MIB,
    BufferMaps,
    PageBitmap,
    SharedBuffers,
    ShmFiles,
    new_bitmap,
)
from ocrfleet.page import RenderedPage, RenderRequest, RenderSettings
from ocrfleet.render import DocumentCache, render_page
from ocrfleet.render_pool import RenderPool
from ocrfleet.testing import samples


def _references(pdf: Path, pages: int) -> list[bytes]:
    docs = DocumentCache()
    out = []
    for n in range(1, pages + 1):
        page = render_page(docs, RenderRequest("d", str(pdf), n), RenderSettings())
        assert page.pixels is not None
        out.append(bytes(page.pixels))
    docs.close()
    return out


def _bytes(page: RenderedPage) -> bytes:
    assert page.pixels is not None
    return bytes(page.pixels)


def _leftovers() -> set[Path]:
    return set(ShmFiles.ROOT.glob(f"ocrfleet-{os.getpid()}-*"))


def test_white_fill_by_memset_draws_what_pdfiums_fill_draws(tmp_path: Path) -> None:
    pdf = samples.realistic_pdf(tmp_path / "r.pdf", 2)
    doc = pdfium.PdfDocument(str(pdf))
    for index in range(2):
        page = doc[index]
        ours = page.render(scale=2, rev_byteorder=True, bitmap_maker=new_bitmap).to_numpy()
        theirs = page.render(scale=2, rev_byteorder=True).to_numpy()
        assert np.array_equal(ours, theirs)
    doc.close()
    red = new_bitmap(4, 3, pdfium.raw.FPDFBitmap_BGR)
    red.fill_rect((255, 0, 0, 255), 0, 0, 4, 3)  # other colours: pdfium's own fill
    red.fill_rect((255, 255, 255, 255), 0, 0, 2, 3)  # part of the bitmap: pdfium's too
    assert red.to_numpy()[:, :2].min() == 255
    assert red.to_numpy()[:, 2:].tolist() == [[[0, 0, 255]] * 2] * 3


def test_pages_dropped_one_by_one_reuse_one_shared_buffer(tmp_path: Path) -> None:
    pdf = samples.realistic_pdf(tmp_path / "r.pdf", 6)
    expected = _references(pdf, 6)
    before = _leftovers()

    async def go() -> tuple[list[bool], int]:
        pool = RenderPool(1, RenderSettings())
        pool.start()
        matches = []
        try:
            for n in range(1, 7):
                page = await pool.render(RenderRequest("d", str(pdf), n))
                assert page.pixels_path is None
                matches.append(_bytes(page) == expected[n - 1])
                del page
                await asyncio.sleep(0)  # the loop step that delivered the page lets go of it
                gc.collect()
            return matches, len(pool._slots[0].maps)
        finally:
            pool.close()

    matches, mapped = asyncio.run(go())
    assert matches == [True] * 6
    assert mapped == 1  # every page went through the same buffer, mapped once
    assert _leftovers() <= before  # and nothing was written to /dev/shm


def test_held_pages_are_never_overwritten_and_the_rest_go_by_file(tmp_path: Path) -> None:
    """A buffer comes back only when its page is dropped: pages an engine still holds keep
    their pixels while later pages are drawn, in files once both buffers are busy."""
    pdf = samples.realistic_pdf(tmp_path / "r.pdf", 6)
    expected = _references(pdf, 6)
    before = _leftovers()

    async def go() -> tuple[list[bool], int]:
        pool = RenderPool(1, RenderSettings(shared_buffers=2))
        pool.start()
        held: list[RenderedPage] = []
        try:
            for n in range(1, 7):
                held.append(await pool.render(RenderRequest("d", str(pdf), n)))
            intact = [_bytes(p) == expected[i] for i, p in enumerate(held)]
            return intact, len(pool._slots[0].maps)
        finally:
            pool.close()

    intact, mapped = asyncio.run(go())
    assert intact == [True] * 6
    assert mapped == 2
    assert _leftovers() <= before


def test_a_buffer_too_small_for_the_next_page_is_retired_and_unmapped() -> None:
    buffers = SharedBuffers(1, min_capacity=MIB)
    first = buffers.acquire(MIB)
    assert first is not None and buffers.acquire(10) is None  # the only buffer is busy
    buffers.release((first.index,))
    bigger = buffers.acquire(3 * MIB)
    assert bigger is not None and bigger.capacity == 3 * MIB and bigger.index != first.index
    assert buffers.take_retired() == (first.index,) and buffers.take_retired() == ()
    assert buffers.acquire(200 * MIB) is None  # larger than any shared buffer: by file


def test_the_worker_hands_a_buffer_back_once_every_view_of_its_page_is_gone() -> None:
    buffers = SharedBuffers(2, min_capacity=MIB)
    shared = buffers.acquire(100)
    assert shared is not None and shared.fd is not None
    shared.map[:5] = b"hello"
    maps = BufferMaps()
    maps.add(shared.index, os.dup(shared.fd), shared.capacity)
    page = maps.view(shared.index, 100)
    assert bytes(page[:5]) == b"hello"  # the same memory, not a copy
    derived = np.frombuffer(page, dtype=np.uint8)[::2]
    del page
    gc.collect()
    assert maps.take_released() == ()  # a derived view still reads the buffer
    del derived
    gc.collect()
    assert maps.take_released() == (shared.index,)
    buffers.release((shared.index,))
    assert buffers.acquire(100) is shared
    maps.retire((shared.index,))
    assert len(maps) == 0


def test_a_failed_page_gives_its_shared_buffer_back(tmp_path: Path) -> None:
    buffers = SharedBuffers(1)
    shm = ShmFiles(buffers)
    target = shm.bitmap_maker()
    target(100, 100, pdfium.raw.FPDFBitmap_BGR)
    assert target.shared is not None and target.path is None
    target.discard()
    assert buffers.acquire(100 * 100 * 3) is not None  # free again, not leaked


def test_sweep_orphans_removes_only_pages_of_dead_workers(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    gone = ctx.Process(target=os.getpid)
    gone.start()
    gone.join()
    assert gone.pid is not None
    dead = ShmFiles.ROOT / f"ocrfleet-{gone.pid}-{gone.pid}-1"
    live = ShmFiles.ROOT / f"ocrfleet-{os.getpid()}-{os.getpid()}-1"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    try:
        assert ShmFiles.sweep_orphans() >= 1
        assert not dead.exists() and live.exists()
    finally:
        for path in (dead, live):
            path.unlink(missing_ok=True)


def test_prepared_arrays_share_buffers_too_and_held_ones_stay_intact(tmp_path: Path) -> None:
    """The engine-ready array a render process prepares (10.5 MB a Gundam page) is copied
    into a shared buffer when one is free, else a file; held pages keep theirs."""
    from ocrfleet.deepseek.packing import pack_page

    pdf = samples.realistic_pdf(tmp_path / "r.pdf", 3)
    before = _leftovers()

    async def go() -> tuple[list[RenderedPage], int]:
        pool = RenderPool(1, RenderSettings(prepare="deepseek-ocr:gundam", shared_buffers=4))
        pool.start()
        try:
            held = [await pool.render(RenderRequest("d", str(pdf), n)) for n in (1, 2, 3)]
            return held, len(pool._slots[0].maps)
        finally:
            pool.close()

    held, mapped = asyncio.run(go())
    assert mapped == 4  # pages 1 and 2: pixels and array shared; page 3 by files
    for page in held:
        assert np.array_equal(page.arrays["packed"], pack_page(page.image(), "gundam"))
    assert _leftovers() <= before


def test_render_processes_get_buffers_for_their_share_of_the_pages_in_flight() -> None:
    from ocrfleet.config import EngineConfig, RenderConfig
    from ocrfleet.page_worker import MAX_SHARED_BUFFERS, render_settings
    from tests.fakes import ScriptedEngine

    engine = ScriptedEngine(EngineConfig(name="tests.fakes:scripted"))
    in_flight = engine.max_concurrency + 2 * 2
    assert render_settings(RenderConfig(), None, engine, 2).shared_buffers == -(-in_flight // 2) + 2
    huge_batches = render_settings(RenderConfig(), 4000, engine, 1)
    assert huge_batches.shared_buffers == MAX_SHARED_BUFFERS


def test_a_small_dev_shm_still_gets_shared_buffers_then_the_pipe(tmp_path: Path) -> None:
    """Containers give /dev/shm 64 MB: files are off there, but shared buffers (memfd) are
    outside /dev/shm and still carry the pages; only beyond them does a page take the pipe."""
    pdf = samples.text_pdf(tmp_path / "p.pdf", ["κείμενο"])
    expected = _references(pdf, 1)[0]
    shm = ShmFiles(SharedBuffers(1), files=False)
    docs = DocumentCache()
    first = render_page(docs, RenderRequest("d", str(pdf), 1), RenderSettings(), shm)
    second = render_page(docs, RenderRequest("d", str(pdf), 1), RenderSettings(), shm)
    assert isinstance(first.owner, PageBitmap) and first.owner.shared is not None
    # The one buffer is busy and files are off: pdfium drew in private memory, for the pipe.
    assert not isinstance(second.owner, PageBitmap) and second.pixels_path is None
    assert _bytes(first) == expected and _bytes(second) == expected
    assert shm.write(memoryview(b"abc")) is None
    docs.close()
