"""One view of a sharded job without a cluster: the driver's progress line, the merged
summary, `ocrfleet status` with shards not started, and `--ray` without Ray installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ocrfleet.config import EngineConfig, RunConfig
from ocrfleet.errors import ConfigError
from ocrfleet.layout import JOB_FILE
from ocrfleet.runner import run
from ocrfleet.shard_view import (
    JobRate,
    ShardReport,
    format_progress,
    merge_summaries,
    merged_exit_code,
)
from ocrfleet.status import collect_status
from tests.conftest import Corpus, cli_env, run_cli


def test_progress_line_adds_up_shards_and_rates_per_node() -> None:
    a, b = "a" * 56, "b" * 56
    rate = JobRate()
    first = {
        0: ShardReport(0, a, "running", 0, 10, 100.0),
        # Resumed from a checkpoint with 5 pages done: they are not speed.
        1: ShardReport(1, b, "running", 5, 10, 100.0),
    }
    format_progress(first, rate, 3, 100.0)
    later = {
        0: ShardReport(0, a, "finished", 10, 10, 110.0),
        1: ShardReport(1, b, "running", 8, 10, 110.0),
    }
    line = format_progress(later, rate, 3, 110.0)
    assert line == (
        "pages 18/20 (90.0%) | 1.30 pages/s | ETA 2 s | shards 1 finished, 1 running, "
        "1 not started | node aaaaaaaa 1.00/s, node bbbbbbbb 0.30/s"
    )


def test_no_shard_seen_yet() -> None:
    line = format_progress({}, JobRate(), 4, 0.0)
    assert line.startswith("pages 0/0 (-) | 0.00 pages/s | ETA ?")
    assert "4 not started" in line


def _shard_runs(corpus: Corpus, out: Path, shards: int) -> dict[int, dict[str, object]]:
    results: dict[int, dict[str, object]] = {}
    for index in range(shards):
        config = RunConfig(
            inputs=(str(corpus.root),),
            output_dir=out,
            engine=EngineConfig(name="text"),
            num_shards=shards,
            shard_index=index,
            progress=False,
        )
        result = run(config)
        results[index] = {"node": f"node-{index}", "exit_code": result.exit_code,
                          "summary": result.summary}  # fmt: skip
    return results


def test_merged_summary_equals_the_sum_of_the_shard_ledgers(
    greek_corpus: Corpus, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    results = _shard_runs(greek_corpus, out, 2)
    merged = merge_summaries(results, {0: ["n0"], 1: ["n1", "n2"]}, 2, str(out))
    status = collect_status(out)
    assert merged["pages"] == status["pages"]
    assert merged["documents"]["done"] == status["documents"]["done"] == 3
    assert merged["this_run"]["pages_processed"] == sum(greek_corpus.pages.values())
    assert [s["nodes"] for s in merged["shards"]] == [["n0"], ["n1", "n2"]]
    assert merged_exit_code(merged) == 0
    # A shard whose retries ran out leaves pages undone: the job says so (exit 3).
    gave_up = dict(results)
    gave_up[1] = {"node": None, "exit_code": None, "error": "node died"}
    worse = merge_summaries(gave_up, {}, 2, str(out))
    assert worse["shards"][1]["error"] == "node died"
    assert merged_exit_code(worse) == 3


def test_status_shows_the_shards_not_started(greek_corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / JOB_FILE).write_text(json.dumps({"num_shards": 3}), "utf-8")
    empty = run_cli("status", str(out))
    assert empty.returncode == 0, empty.stderr
    assert "shard 0/3: not started" in empty.stdout and "shard 2/3: not started" in empty.stdout
    config = RunConfig(
        inputs=(str(greek_corpus.root),),
        output_dir=out,
        engine=EngineConfig(name="text"),
        num_shards=3,
        shard_index=1,
        progress=False,
    )
    assert run(config).exit_code == 0
    shown = run_cli("status", str(out))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "shard 0/3: not started" in lines
    assert any(line.startswith("shard 1/3: finished (") for line in lines)
    assert "shard 2/3: not started" in lines
    data = json.loads(run_cli("status", str(out), "--json").stdout)
    assert [s["state"] for s in data["shard_states"]] == ["not started", "finished", "not started"]


def test_ray_without_ray_installed_fails_fast_with_the_install_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from ocrfleet.cli import main\n"
        f"sys.exit(main(['run', {str(tmp_path)!r}, '-o', {str(out)!r}, '--engine', 'text',"
        " '--ray', 'auto', '--num-shards', '2']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=False
    )
    assert done.returncode == 2
    assert "pip install 'ocrfleet[ray]'" in done.stderr
    assert not out.exists()  # nothing started


def test_a_long_eta_reads_in_hours() -> None:
    rate = JobRate()
    format_progress({0: ShardReport(0, "n" * 56, "running", 0, 100_000, 0.0)}, rate, 1, 0.0)
    line = format_progress(
        {0: ShardReport(0, "n" * 56, "running", 10, 100_000, 10.0)}, rate, 1, 10.0
    )
    assert "| 1.00 pages/s | ETA 27 h 46 |" in line


def test_a_shard_asks_for_the_largest_node_or_says_what_to_give() -> None:
    from ocrfleet.errors import ConfigError
    from ocrfleet.ray_run import RayOptions, shard_size

    # ray.nodes() rows as Ray reports them: a CPU head and two GPU workers, one dead.
    nodes = [
        {"Alive": True, "Resources": {"CPU": 4.0}},
        {"Alive": True, "Resources": {"CPU": 48.0, "GPU": 4.0}},
        {"Alive": False, "Resources": {"CPU": 96.0, "GPU": 8.0}},
    ]
    assert shard_size(RayOptions(), True, nodes) == 4.0
    assert shard_size(RayOptions(gpus_per_shard=2), True, nodes) == 2.0
    # The text engine needs no GPU: on a CPU cluster a shard asks for CPU only.
    assert shard_size(RayOptions(), False, nodes[:1]) == 0.0
    with pytest.raises(ConfigError, match="--gpus-per-shard"):
        shard_size(RayOptions(), True, nodes[:1])  # no GPU node up yet (autoscaling)
    with pytest.raises(ConfigError, match="ocr_slot"):
        shard_size(RayOptions(resource="ocr_slot"), False, nodes)


def test_ray_runs_every_shard_so_a_shard_index_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", str(tmp_path), "-o", str(out), "--engine", "text", "--ray", "auto"]
    done = run_cli(*args, "--num-shards", "2", "--shard-index", "1")
    assert done.returncode == 2
    assert "--ray runs every shard: leave --shard-index out" in done.stderr


def test_a_single_shard_job_is_read_from_the_plain_ledger() -> None:
    from ocrfleet.shard_view import shard_states

    status = {"shards": [{"ledger": "ocrfleet.sqlite", "pages": {"done": 8, "pending": 0}}]}
    assert shard_states(status, 1) == [{"shard": 0, "state": "finished", "pages": 8, "pending": 0}]


def test_no_ray_cluster_to_join_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from ocrfleet.ray_run import _connect

    def no_cluster(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("Could not find any running Ray instance")

    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(ConfigError, match="no Ray cluster to join"):
        _connect("auto")
