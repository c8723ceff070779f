from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocrfleet.errors import RenderCrash, RenderError
from ocrfleet.page import RenderRequest, RenderSettings
from ocrfleet.render import DocumentCache, page_scale, render_page
from ocrfleet.render_pool import RenderPool
from ocrfleet.testing import samples


def test_page_size_bomb_is_scaled_under_the_caps() -> None:
    settings = RenderSettings(dpi=144, max_pixels=25_000_000, max_side=10_000)
    scale, capped = page_scale(200 * 72, 200 * 72, settings)  # a 200-inch square page
    assert capped
    side = 200 * 72 * scale
    assert side * side <= 25_000_000 * 1.001 and side <= 10_000
    assert page_scale(595, 842, settings) == (2.0, False)  # A4 at 144 dpi is untouched
    with pytest.raises(ValueError, match="no usable size"):
        page_scale(0, 842, settings)


def test_renders_a_200_inch_page_within_the_cap(tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "huge.pdf", ["wide"], size=(200 * 72, 8.5 * 72))
    settings = RenderSettings(max_pixels=4_000_000, max_side=10_000)
    page = render_page(DocumentCache(), RenderRequest("d", str(pdf), 1), settings)
    assert page.scaled_down and page.width * page.height <= 4_000_000 * 1.01
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's bomb guard stays on


def test_blank_and_text_pages_and_text_layer(tmp_path: Path) -> None:
    pdf = samples.mixed_pdf(
        tmp_path / "m.pdf",
        [("text", samples.paragraph(0)), ("blank", ""), ("image", "Σκαναρισμένο")],
    )
    docs = DocumentCache()
    settings = RenderSettings(want_text=True)
    text, blank, image = (
        render_page(docs, RenderRequest("d", str(pdf), n), settings) for n in (1, 2, 3)
    )
    assert blank.ink_ratio == 0.0
    assert text.ink_ratio > 0.001 and image.ink_ratio > 0.0002
    assert (text.width, text.height) == (1191, 1684)  # A4 at 144 dpi
    assert text.text_layer is not None and "ελληνικής" in text.text_layer
    assert image.text_layer == ""  # a scan has no text layer
    assert text.image().mode == "RGB" and text.image().size == (1191, 1684)


def test_image_cache_returns_the_same_pixels(tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "c.pdf", ["κείμενο"])
    settings = RenderSettings(cache_dir=tmp_path / "cache")
    first = render_page(DocumentCache(), RenderRequest("abcd", str(pdf), 1), settings)
    second = render_page(DocumentCache(), RenderRequest("abcd", str(pdf), 1), settings)
    assert not first.from_cache and second.from_cache
    assert first.pixels is not None and second.pixels is not None
    assert bytes(first.pixels) == bytes(second.pixels)
    assert list((tmp_path / "cache").rglob("*.png"))


def test_bad_page_raises_render_error_naming_file_and_page(tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "one.pdf", ["x"])
    with pytest.raises(RenderError) as info:
        render_page(
            DocumentCache(), RenderRequest("d", str(pdf), 5, "in/one.pdf"), RenderSettings()
        )
    assert info.value.page == 5 and info.value.source == "in/one.pdf"
    assert "in/one.pdf page 5" in str(info.value)


def test_pool_hands_pages_over_in_shared_memory_and_leaves_nothing(tmp_path: Path) -> None:
    from ocrfleet.handover import ShmFiles

    assert ShmFiles.available()
    pdf = samples.text_pdf(tmp_path / "p.pdf", ["α"])
    reference = render_page(DocumentCache(), RenderRequest("d", str(pdf), 1), RenderSettings())

    async def go() -> bytes:
        pool = RenderPool(1, RenderSettings())
        pool.start()
        try:
            page = await pool.render(RenderRequest("d", str(pdf), 1))
        finally:
            pool.close()
        assert page.pixels is not None
        return bytes(page.pixels)

    assert reference.pixels is not None
    assert asyncio.run(go()) == bytes(reference.pixels)
    assert not list(Path("/dev/shm").glob(f"ocrfleet-{os.getpid()}-*"))


def test_pool_renders_in_processes(tmp_path: Path) -> None:
    pdf = samples.text_pdf(tmp_path / "p.pdf", [samples.paragraph(i) for i in range(6)])

    async def go() -> list[int]:
        pool = RenderPool(2, RenderSettings(dpi=72))
        pool.start()
        try:
            pages = await asyncio.gather(
                *(pool.render(RenderRequest("d", str(pdf), n)) for n in range(1, 7))
            )
        finally:
            pool.close()
        return [p.page for p in pages]

    assert asyncio.run(go()) == [1, 2, 3, 4, 5, 6]


def test_a_render_process_killed_mid_page_is_replaced_and_the_page_failed_after_two(
    tmp_path: Path,
) -> None:
    # A 30-inch page at 600 dpi (150 M pixels). Each kill waits until the render process has
    # created the page's /dev/shm file (allocating and filling 450 MB follow), so it lands
    # mid-page however fast the machine is; a fixed delay sometimes came after the page.
    hang = samples.text_pdf(tmp_path / "hang.pdf", ["slow"], size=(30 * 72.0, 30 * 72.0))
    small = samples.text_pdf(tmp_path / "small.pdf", ["quick"])
    heavy = RenderSettings(dpi=600, max_pixels=150_000_000, max_side=20_000)

    async def go() -> tuple[BaseException | None, int, int]:
        pool = RenderPool(1, heavy)
        pool.start()
        try:
            job = asyncio.ensure_future(pool.render(RenderRequest("d", str(hang), 1, "hang.pdf")))
            behind = asyncio.ensure_future(pool.render(RenderRequest("e", str(small), 1)))
            for _ in range(2):  # kill whatever process is drawing the heavy page, twice
                pid = pool._slots[0].process.pid
                assert pid is not None
                drawing = f"ocrfleet-{os.getpid()}-{pid}-*"
                deadline = time.monotonic() + 20
                while not any(Path("/dev/shm").glob(drawing)) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while pool._slots[0].process.pid == pid and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            error: BaseException | None = None
            try:
                await job
            except RenderCrash as exc:
                error = exc
            page_behind = await behind
            return error, page_behind.page, pool.restarts
        finally:
            pool.close()

    before = set(Path("/dev/shm").glob(f"ocrfleet-{os.getpid()}-*"))
    error, behind_page, restarts = asyncio.run(go())
    assert set(Path("/dev/shm").glob(f"ocrfleet-{os.getpid()}-*")) <= before  # none left
    assert isinstance(error, RenderCrash) and "hang.pdf page 1" in str(error)
    assert behind_page == 1  # the page queued behind it was re-sent and rendered
    assert restarts == 2


def test_ink_ratio_sees_small_marks() -> None:
    from ocrfleet.blank import ink_ratio

    page = np.full((1000, 800, 3), 255, dtype=np.uint8)
    assert ink_ratio(page) == 0.0
    page[500:520, 400:410] = 0  # a page number
    assert ink_ratio(page) > 0


def test_pool_runs_the_engine_preparer_in_the_render_process(tmp_path: Path) -> None:
    """DeepSeek-OCR's resize/pad/tile happens in the render process; arrays arrive intact."""
    from ocrfleet.deepseek.packing import pack_page, unpack

    pdf = samples.text_pdf(tmp_path / "p.pdf", [samples.paragraph(0)])

    async def go() -> tuple[np.ndarray, Image.Image]:
        pool = RenderPool(1, RenderSettings(prepare="deepseek-ocr:gundam"))
        pool.start()
        try:
            page = await pool.render(RenderRequest("d", str(pdf), 1))
        finally:
            pool.close()
        return page.arrays["packed"], page.image()

    packed, image = asyncio.run(go())
    assert np.array_equal(packed, pack_page(image, "gundam"))
    assert unpack(packed).grid == (2, 3) and unpack(packed).tiles.shape == (6, 640, 640, 3)


def test_a_full_dev_shm_falls_back_to_the_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room in /dev/shm (containers give it 64 MB): the page still renders, by pipe."""
    import errno

    from ocrfleet.handover import ShmFiles

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    pdf = samples.text_pdf(tmp_path / "p.pdf", ["κείμενο"])
    reference = render_page(DocumentCache(), RenderRequest("d", str(pdf), 1), RenderSettings())
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    shm = ShmFiles()
    page = render_page(DocumentCache(), RenderRequest("d", str(pdf), 1), RenderSettings(), shm)
    assert page.pixels_path is None and page.pixels is not None
    assert reference.pixels is not None and bytes(page.pixels) == bytes(reference.pixels)
    assert not list(ShmFiles.ROOT.glob(f"{shm.prefix}*"))  # the reserved file was removed
    monkeypatch.setattr(ShmFiles, "ROOT", tmp_path / "missing")
    assert shm.write(memoryview(b"abc")) is None  # arrays fall back to the pipe too
