"""The public Python API behaves like the CLI: same outputs, same refusals, no signal handlers
taken over, usable off the main thread."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest

import ocrfleet
from ocrfleet import ConfigError, EngineConfig, RunConfig, run
from ocrfleet.testing import samples
from tests.conftest import outputs_without_timings, run_cli


def make_corpus(root: Path) -> None:
    samples.text_pdf(root / "a" / "έκθεση.pdf", ["Πρώτη σελίδα.", "Δεύτερη σελίδα."])
    samples.text_pdf(root / "b" / "report.pdf", ["First page.", "Second page.", "Third."])


def test_the_api_and_the_cli_write_identical_outputs(tmp_path: Path) -> None:
    make_corpus(tmp_path / "in")
    cli = run_cli(
        "run",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "cli"),
        "--engine",
        "text",
        "--no-progress",
    )
    assert cli.returncode == 0, cli.stderr
    result = run(
        RunConfig(
            inputs=(str(tmp_path / "in"),),
            output_dir=tmp_path / "api",
            engine=EngineConfig("text"),
            progress=False,
        )
    )
    assert result.exit_code == 0
    assert result.summary.pages["done"] == 5
    # Read as the JSON too, as before the summary was typed (and as run-summary.json is).
    written = json.loads((tmp_path / "api" / "run-summary.json").read_text("utf-8"))
    assert result.summary["pages"] == written["pages"] == {**written["pages"], "done": 5}
    assert result.summary.get("no such key", "absent") == "absent"
    api_out = outputs_without_timings(tmp_path / "api")
    assert api_out == outputs_without_timings(tmp_path / "cli")
    assert len(api_out["markdown"]) == 2


def test_the_api_leaves_signal_handlers_alone_and_runs_off_the_main_thread(
    tmp_path: Path,
) -> None:
    make_corpus(tmp_path / "in")
    before = signal.getsignal(signal.SIGTERM)
    outcome: list[object] = []

    def work() -> None:
        config = RunConfig(
            inputs=(str(tmp_path / "in"),), output_dir=tmp_path / "out", engine=EngineConfig("text")
        )
        try:
            outcome.append(run(config).exit_code)
        except Exception as exc:  # reported to the test below
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert outcome == [0]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_wrong_setup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    with pytest.raises(ConfigError):
        run(RunConfig(inputs=(str(tmp_path),), output_dir=taken, engine=EngineConfig("text")))
    assert taken.read_text() == "not a directory"


def test_an_s3_output_is_written_locally_first(tmp_path: Path) -> None:
    config = RunConfig.for_output(("in/",), "s3://bucket/out", work_dir=tmp_path / "w")
    assert config.output_dir == tmp_path / "w" and config.sync.sync_to == "s3://bucket/out"
    default = RunConfig.for_output(("in/",), "s3://bucket/out")
    assert default.output_dir.parent == Path.home() / ".cache" / "ocrfleet" / "runs"
    with pytest.raises(ConfigError, match="not two different ones"):
        RunConfig.for_output(("in/",), "s3://bucket/out", sync_to="s3://bucket/other")
    local = RunConfig.for_output(("in/",), tmp_path / "o")
    assert local.output_dir == tmp_path / "o" and local.sync.sync_to is None


def test_the_public_names() -> None:
    assert set(ocrfleet.__all__) >= {"run", "RunConfig", "EngineConfig", "ConfigError"}
    assert ocrfleet.RunResult.__name__ == "RunResult"
    assert EngineConfig().name == "auto"  # the CLI's default engine
