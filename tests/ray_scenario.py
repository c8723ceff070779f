"""The Ray scenario of tests/test_ray.py, run in a process of its own inside a network
namespace where loopback is the only interface (Ray advertises the machine's address
otherwise). It starts a moto S3 server and a Ray cluster (`ray.cluster_utils.Cluster`: a head
and two CPU nodes, each with one `ocr_slot` standing in for a node's GPUs), runs the phases
and writes what it saw to a JSON file; the tests assert on that file.

    python -m tests.ray_scenario RESULT.json WORKDIR
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

SLOT = "ocr_slot"
# (name, pages): 24 pages, two shards of 12 by page balance.
DOCS = [("a/one.pdf", 5), ("a/two.pdf", 5), ("b/three.pdf", 4), ("b/four.pdf", 4),
        ("c/five.pdf", 3), ("c/six.pdf", 3)]  # fmt: skip


def _start_s3() -> Any:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_ENDPOINT_URL_S3=f"http://{host}:{port}",
    )
    return server


def _corpus(fs: Any, bucket: str, root: Path) -> None:
    from ocrfleet.testing import samples

    fs.mkdir(bucket)
    counter = 0
    for name, pages in DOCS:
        texts = []
        for page in range(pages):
            # Unique text per page: no two documents share content (ids are content hashes).
            texts.append(f"{samples.paragraph(counter, greek=counter % 2 == 0)} {name} {page}")
            counter += 1
        samples.text_pdf(root / name, texts)
        fs.put_file(str(root / name), f"{bucket}/corpus/{name}")


def _download(fs: Any, prefix: str, into: Path) -> Path:
    for name in fs.find(prefix):
        rel = name[len(prefix) + 1 :]
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(name, str(into / rel))
    return into


def _outputs(out: Path) -> dict[str, Any]:
    from tests.conftest import outputs_without_timings, read_records

    records = read_records(out)
    keys = [f"{r['source']}#{r['page']}" for r in records]
    got = outputs_without_timings(out)
    return {
        "page_keys": keys,
        "markdown": got["markdown"],
        "records": {f"{s}#{p}": r for (s, p), r in got["records"].items()},
    }


def _etags(fs: Any, prefix: str) -> dict[str, str]:
    fs.invalidate_cache()
    found: dict[str, dict[str, Any]] = fs.find(prefix, detail=True)
    return {
        name: f"{info.get('ETag')}@{info.get('LastModified')}"
        for name, info in found.items()
        if "/markdown/" in name or "/pages/" in name
    }


def _checkpoint_pages(fs: Any, uri: str, into: Path) -> dict[str, Any] | None:
    """Finished pages (and their attempt rows) in a shard's ledger checkpoint on S3."""
    try:
        fs.get_file(uri, str(into))
    except FileNotFoundError:
        return None
    db = sqlite3.connect(into)
    try:
        done = db.execute(
            "SELECT doc_id || '#' || page FROM pages WHERE status != 'pending'"
        ).fetchall()
        attempts = db.execute(
            "SELECT doc_id || '#' || page, COUNT(*) FROM attempts GROUP BY doc_id, page"
        ).fetchall()
        total = db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return {"done": sorted(d for (d,) in done), "attempts": dict(attempts), "total": total}


def _start_cluster(tries: int = 3) -> tuple[Any, list[Any]]:
    """A head and two slot nodes. Ray gives a node 30 s to register, fixed: on a loaded
    2-core box that can run out, so a start that timed out is torn down and tried again."""
    from ray.cluster_utils import Cluster

    for attempt in range(tries):
        cluster = Cluster()
        try:
            cluster.add_node(num_cpus=1, include_dashboard=False)
            nodes = [cluster.add_node(num_cpus=1, resources={SLOT: 1}) for _ in range(2)]
            return cluster, nodes
        except Exception:
            cluster.shutdown()
            if attempt == tries - 1:
                raise
            print("cluster start timed out; trying again", file=sys.stderr)
    raise AssertionError("unreachable")


def main(result_path: Path, work: Path) -> None:
    import ray

    from ocrfleet.config import EngineConfig, RunConfig
    from ocrfleet.ray_run import RayOptions, run_on_ray, shard_work_dir
    from ocrfleet.runner import run
    from ocrfleet.s3_client import make_filesystem
    from ocrfleet.shard_view import job_status
    from tests.conftest import run_cli

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    result: dict[str, Any] = {"seconds": {}}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        result["seconds"][name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    server = _start_s3()
    fs = make_filesystem()
    bucket = "ocrfleet-ray"
    _corpus(fs, bucket, work / "corpus")
    corpus = f"s3://{bucket}/corpus/"

    # The single-node reference: the same corpus, one plain run, no Ray.
    reference = run(
        RunConfig(
            inputs=(corpus,),
            output_dir=work / "reference",
            engine=EngineConfig(name="text"),
            stage_dir=work / "reference-inputs",
            progress=False,
        )
    )
    result["reference"] = {"exit_code": reference.exit_code, **_outputs(work / "reference")}
    lap("reference")

    cluster, nodes = _start_cluster()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        result["driver_node"] = ray.get_runtime_context().get_node_id()
        lap("cluster")
        options = RayOptions(
            address=cluster.address,
            num_shards=2,
            resource=SLOT,
            work_root=work / "nodes",
            max_shard_retries=2,
            progress_interval=2.0,
        )

        # 1. The whole corpus over two nodes.
        config = RunConfig(
            inputs=(corpus,),
            output_dir=work / "driver-1",
            sync_to=f"s3://{bucket}/out1",
            engine=EngineConfig(name="text"),
            progress=False,
            sync_interval=5.0,
        )
        first = run_on_ray(config, options)
        result["first"] = {
            "exit_code": first.exit_code,
            "summary": first.summary,
            **_outputs(_download(fs, f"{bucket}/out1", work / "got-1")),
        }
        result["first"]["merged_summary_file"] = json.loads(
            fs.cat(f"{bucket}/out1/run-summary.json")
        )

        lap("first")

        # 2. The same command again, through the CLI: nothing to do, nothing rewritten.
        before = _etags(fs, f"{bucket}/out1")
        again = run_cli(
            "run", corpus, "-o", f"s3://{bucket}/out1", "--engine", "text",
            "--ray", cluster.address, "--num-shards", "2", "--shard-resource", SLOT,
            "--work-dir", str(work / "nodes"),
        )  # fmt: skip
        result["rerun"] = {
            "returncode": again.returncode,
            "stdout": again.stdout[-6000:],
            "stderr": again.stderr[-6000:],
            "unchanged": before == _etags(fs, f"{bucket}/out1"),
            "objects": len(before),
            "summary": json.loads(fs.cat(f"{bucket}/out1/run-summary.json")),
        }
        result["status"] = job_status(f"s3://{bucket}/out1")
        lap("rerun")

        # 3. A node lost mid-run: shard 0's node is removed once its checkpoint on S3 holds
        # some finished pages; Ray reruns the shard elsewhere and it resumes from there.
        slow = RunConfig(
            inputs=(corpus,),
            output_dir=work / "driver-3",
            sync_to=f"s3://{bucket}/out3",
            engine=EngineConfig(name="tests.ray_engines:slow_text", extra_args={"delay": 0.5}),
            progress=False,
            sync_interval=0.3,
        )
        outcome: dict[str, Any] = {}

        def drive() -> None:
            try:
                outcome["result"] = run_on_ray(slow, options)
            except BaseException:
                outcome["error"] = traceback.format_exc()

        thread = threading.Thread(target=drive)
        thread.start()
        ckpt = f"{bucket}/out3/ledger/ocrfleet.shard-0-of-2.sqlite"
        seen: dict[str, Any] | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and thread.is_alive():
            seen = _checkpoint_pages(fs, ckpt, work / "peek.sqlite")
            if seen and 3 <= len(seen["done"]) < seen["total"]:
                break
            time.sleep(0.2)
        lost = None
        if seen:
            for node in nodes:
                where = shard_work_dir(work / "nodes", f"s3://{bucket}/out3", node.node_id, 2, 0)
                if where.exists():
                    lost = node.node_id
                    # The machine goes away: its raylet, the shard's process (whose pid is
                    # in the run's lock file; its engine workers follow it) and its disk.
                    pid = int((where / ".ocrfleet.shard-0-of-2.lock").read_text() or 0)
                    cluster.remove_node(node, allow_graceful=False)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    shutil.rmtree(where.parent.parent, ignore_errors=True)
                    break
        result["lost"] = {"node": lost, "checkpoint_before": seen}
        thread.join(timeout=240)
        res = outcome.get("result")
        third: dict[str, Any] = {"error": outcome.get("error"), "alive": thread.is_alive()}
        if res is not None:
            third.update(exit_code=res.exit_code, summary=res.summary)
            third.update(_outputs(_download(fs, f"{bucket}/out3", work / "got-3")))
            third["checkpoint_after"] = _checkpoint_pages(fs, ckpt, work / "final.sqlite")
        result["lost_node"] = third
        lap("lost_node")

        # 4. A local (shared filesystem) output: every shard writes its ledger and outputs
        # straight into it; local inputs.
        shared = work / "shared-out"
        local = run_cli(
            "run", str(work / "corpus"), "-o", str(shared), "--engine", "text",
            "--ray", cluster.address, "--num-shards", "2", "--shard-resource", SLOT,
        )  # fmt: skip
        result["shared_fs"] = {
            "returncode": local.returncode,
            "stderr": local.stderr[-4000:],
            "ledgers": sorted(p.name for p in shared.glob("ocrfleet*.sqlite")),
            "status": job_status(str(shared)),
            **_outputs(shared),
        }
        lap("shared_fs")
    finally:
        ray.shutdown()
        cluster.shutdown()
        server.stop()
        result_path.write_text(json.dumps(result, indent=1, ensure_ascii=False), "utf-8")


if __name__ == "__main__":
    target = Path(sys.argv[1])
    with tempfile.TemporaryDirectory(dir=sys.argv[2]) as tmp:
        main(target, Path(tmp))
