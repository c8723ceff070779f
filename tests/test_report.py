"""The run report: written by every run and by `ocrfleet report`, checked in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ocrfleet import svg
from ocrfleet.ledger import Ledger
from ocrfleet.report import write_report
from ocrfleet.testing import samples
from tests.conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _scripted_run(tmp_path: Path) -> Path:
    """Two documents, two workers: a looping page (flagged), a failing page, normal pages."""
    samples.text_pdf(tmp_path / "in" / "alpha.pdf", [f"alpha page {i}" for i in range(1, 5)])
    samples.text_pdf(tmp_path / "in" / "beta.pdf", [f"beta page {i}" for i in range(1, 4)])
    out = tmp_path / "out"
    script = {"2": ["loop", "loop"], "3": ["error", "error"]}
    result = run_cli(
        "run",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--engine",
        "tests.fakes:scripted",
        "--workers",
        "2",
        "--vllm-arg",
        f"script={json.dumps(script)}",
        "--vllm-arg",  # both engines start together, so both get pages (fair share)
        f"barrier={json.dumps({'dir': str(tmp_path / 'barrier'), 'count': 2})}",
    )
    assert result.returncode == 1, result.stderr  # the failing page fails its documents
    return out


def browser_check(html: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """Load the page in headless Chromium: (its screenshot, the console messages it logged)."""
    assert CHROMIUM is not None
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1200,2400",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return shot, console


def test_every_run_writes_a_self_contained_report(tmp_path: Path) -> None:
    out = _scripted_run(tmp_path)
    html = (out / "report.html").read_text("utf-8")
    for heading in ("Runs", "Failures", "Slowest pages", "Flagged pages"):
        assert f"<h2>{heading}</h2>" in html
    titles = ("Pages/s per worker", "Seconds a page, by stage", "by stage, over time")
    for title in (*titles, "Pages by status"):
        assert title in html
    assert "Pages by route" in html and "Pages by quality flag" in html
    assert "cpu0" in html and "cpu1" in html  # pages/s per worker
    assert "repetition_loop" in html or "no_eos" in html
    assert "scripted error on page 3" in html  # the failure's reason
    # The flagged (looping) pages are shown as thumbnails beside their text.
    assert html.count("data:image/jpeg;base64,") == 2
    assert "alpha page 2" in html and "beta page 2" in html
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<script" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_the_report_loads_in_a_real_browser_without_console_errors(tmp_path: Path) -> None:
    out = _scripted_run(tmp_path)
    shot, console = browser_check(out / "report.html", tmp_path)
    assert console == []
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20  # drawn charts, not a blank page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_the_browser_check_catches_console_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('broken report')</script></body></html>")
    _, console = browser_check(page, tmp_path)
    assert any("broken report" in line for line in console)


def test_report_command_and_gpu_telemetry_section(tmp_path: Path) -> None:
    out = _scripted_run(tmp_path)
    ledger = Ledger(out / "ocrfleet.sqlite")
    try:
        run = ledger._db.execute("SELECT started_at FROM runs").fetchone()[0]
        with ledger.transaction() as db:
            db.executemany(
                "INSERT INTO gpu_samples (t, worker, gpu, util, mem_used_mib, mem_total_mib, "
                "power_w, temp_c) VALUES (?, 'w', ?, ?, ?, 81559, 300, 60)",
                [
                    (run + i * 0.01, g, 40.0 + g * 20, 1000.0 * (g + 1))
                    for i in range(3)
                    for g in (0, 1)
                ],
            )
    finally:
        ledger.close()
    target = tmp_path / "elsewhere" / "r.html"
    result = run_cli("report", str(out), "--output", str(target))
    assert result.returncode == 0 and result.stdout.strip() == str(target)
    html = target.read_text("utf-8")
    assert "GPU utilisation" in html and "GPU memory used" in html
    means = html.split("<h2>GPU means</h2>")[1].split("</table>")[0]
    assert re.search(r"gpu0</td><td[^>]*>3</td><td[^>]*>40\.0<", means)
    assert re.search(r"gpu1</td><td[^>]*>3</td><td[^>]*>60\.0<", means)


def test_report_of_a_directory_without_a_ledger_is_one_line(tmp_path: Path) -> None:
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2 and "no ocrfleet ledger" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_source_pdf_leaves_a_note_instead_of_a_thumbnail(tmp_path: Path) -> None:
    out = _scripted_run(tmp_path)
    shutil.rmtree(tmp_path / "in")
    html = write_report(out).read_text("utf-8")
    assert "data:image/jpeg" not in html and html.count("source not readable") == 2


def test_svg_charts_are_well_formed_and_escape_labels() -> None:
    chart = svg.line_chart(
        {"<gpu0>": [(0.0, 1.0), (10.0, 3.5)], "gpu1": [(5.0, 2.0)]},
        title="a & b",
        x_label="s",
        y_label="pages/s",
    )
    root = ET.fromstring(chart)
    assert root.tag.endswith("svg") and "<gpu0>" in "".join(root.itertext())
    bars = ET.fromstring(svg.bar_chart([("done", 7), ("failed", 0)], title="t"))
    assert len(bars.findall(".//{http://www.w3.org/2000/svg}rect")) == 2
    ET.fromstring(svg.line_chart({}, title="empty", x_label="x", y_label="y"))


def test_nice_ticks_cover_the_range_in_round_steps() -> None:
    assert svg.nice_ticks(0, 9.3) == [0, 2, 4, 6, 8, 10]
    ticks = svg.nice_ticks(3.2, 3.2)
    assert ticks[0] <= 3.2 <= ticks[-1]


def test_report_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    out = _scripted_run(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x", "utf-8")
    result = run_cli("report", str(out), "--output", str(blocker / "r.html"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot write {blocker / 'r.html'}" in result.stderr


def test_time_series_account_for_every_page_of_the_latest_run(tmp_path: Path) -> None:
    from ocrfleet.report_data import STAGES, collect_report

    out = _scripted_run(tmp_path)
    data = collect_report(out)
    throughput = data.throughput()
    assert set(throughput) == {"cpu0", "cpu1"}
    width = throughput["cpu0"][0][0] * 2  # points sit mid-bucket
    pages = sum(rate * width for series in throughput.values() for _, rate in series)
    assert round(pages) == 7  # 4 + 3 pages, each counted once, under its worker
    stages = data.stages_over_time()
    assert set(stages) == set(STAGES) and all(stages[s] for s in STAGES)
    assert all(seconds >= 0 for series in stages.values() for _, seconds in series)
    html = (out / "report.html").read_text("utf-8")
    chart = html.split("<title>Seconds a page by stage, over time")[1].split("</svg>")[0]
    assert chart.count("<polyline") + chart.count("<circle") == 3
