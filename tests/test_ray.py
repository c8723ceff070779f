"""Many nodes on Ray, for real: a local multi-node cluster (`ray.cluster_utils.Cluster`, a
head and two CPU nodes with a custom resource standing in for GPUs), moto S3, the text
engine. The scenario runs once, in its own process inside a loopback-only network namespace
(tests/ray_scenario.py); each test asserts on one phase of what it recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, cli_env

pytest.importorskip("ray")
pytest.importorskip("moto")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip for a loopback-only network namespace",
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("ray")
    # Ray's unix sockets live under its temp dir: keep the path short, and our own.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ofr-", dir="/tmp"))
    env = cli_env()
    env.update(RAY_TMPDIR=str(ray_tmp), RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    result = work / "result.json"
    cmd = [sys.executable, "-m", "tests.ray_scenario", str(result), str(work)]
    try:
        done = subprocess.run(
            ["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "_", *cmd],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
        assert result.exists(), done.stdout[-5000:] + done.stderr[-5000:]
        data = json.loads(result.read_text("utf-8"))
        data["log"] = done.stderr[-20000:]
        print("scenario phases (s):", data["seconds"])
        yield data
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_every_page_once_and_outputs_identical_to_a_single_node_run(
    scenario: dict[str, Any],
) -> None:
    ref, got = scenario["reference"], scenario["first"]
    assert ref["exit_code"] == 0 and got["exit_code"] == 0, scenario["log"]
    assert len(ref["page_keys"]) == 24  # six documents, 24 pages
    assert sorted(got["page_keys"]) == sorted(ref["page_keys"])  # each page exactly once
    assert got["markdown"] == ref["markdown"]
    assert got["records"] == ref["records"]
    shards = got["summary"]["shards"]
    assert [s["exit_code"] for s in shards] == [0, 0]
    # One node's worth each: the two shards ran on the two slot nodes, not the head.
    nodes = {n for s in shards for n in s["nodes"]}
    assert len(nodes) == 2 and scenario["driver_node"] not in nodes
    assert sum(s["pages_processed"] for s in shards) == 24
    merged = got["merged_summary_file"]
    assert merged["pages"]["done"] == 24 and merged["documents"]["done"] == 6
    assert merged["this_run"]["pages_processed"] == 24


def test_rerun_on_a_finished_output_does_nothing(scenario: dict[str, Any]) -> None:
    rerun = scenario["rerun"]
    assert rerun["returncode"] == 0, rerun["stderr"]
    assert rerun["objects"] == 12  # a Markdown file and a JSONL file per document
    assert rerun["unchanged"]  # no output object rewritten
    assert rerun["summary"]["this_run"]["pages_processed"] == 0
    assert rerun["summary"]["pages"]["done"] == 24
    # The driver's aggregated progress line and the per-shard lines of the CLI.
    assert "pages 24/24 (100.0%)" in rerun["stderr"]
    assert "shards 2 finished, 0 running, 0 not started" in rerun["stderr"]
    assert "shard 1: exit 0 on node(s)" in rerun["stdout"]  # results on stdout


def test_status_adds_up_every_shard_of_an_s3_output(scenario: dict[str, Any]) -> None:
    data = scenario["status"]
    assert data["output_dir"].endswith("/out1")
    assert data["pages"]["done"] == 24 and data["documents"]["done"] == 6
    assert [s["state"] for s in data["shard_states"]] == ["finished", "finished"]


def test_a_lost_node_shard_is_retried_elsewhere_and_resumes(scenario: dict[str, Any]) -> None:
    lost, third, ref = scenario["lost"], scenario["lost_node"], scenario["reference"]
    assert lost["node"] is not None, scenario["log"]
    assert third["error"] is None and not third["alive"], third["error"]
    assert third["exit_code"] == 0, scenario["log"]
    shard0 = third["summary"]["shards"][0]
    # Started on the node that was removed, finished on another one.
    assert shard0["nodes"][0] == lost["node"] and shard0["nodes"][-1] != lost["node"]
    # Nothing lost, nothing doubled: the outputs are those of the single-node run.
    assert sorted(third["page_keys"]) == sorted(ref["page_keys"])
    assert third["markdown"] == ref["markdown"] and third["records"] == ref["records"]
    # It resumed from the checkpoint: the pages finished there were not redone.
    before, after = lost["checkpoint_before"], third["checkpoint_after"]
    assert len(before["done"]) >= 3
    assert all(after["attempts"][page] == before["attempts"][page] for page in before["done"])
    assert shard0["pages_processed"] <= before["total"] - len(before["done"])


def test_a_shared_filesystem_output_takes_every_shard(scenario: dict[str, Any]) -> None:
    got, ref = scenario["shared_fs"], scenario["reference"]
    assert got["returncode"] == 0, got["stderr"]
    assert got["ledgers"] == ["ocrfleet.shard-0-of-2.sqlite", "ocrfleet.shard-1-of-2.sqlite"]
    assert len(got["page_keys"]) == len(set(got["page_keys"])) == 24
    assert got["markdown"] == ref["markdown"]
    assert [s["state"] for s in got["status"]["shard_states"]] == ["finished", "finished"]
