"""deploy/ray: the `ray up` cluster config is valid YAML and says what the runbook says."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

yaml = pytest.importorskip("yaml")


def test_aws_cluster_config_runs_the_bootstrap_on_g6_12xlarge_workers() -> None:
    config = yaml.safe_load((REPO / "deploy" / "ray" / "aws-cluster.yaml").read_text("utf-8"))
    assert config["provider"]["type"] == "aws"
    workers = config["available_node_types"]["gpu-worker"]
    assert workers["node_config"]["InstanceType"] == "g6.12xlarge"
    assert workers["resources"]["GPU"] == 4
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {}  # no shard lands on the head
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = " ".join(config[key])
        script = "deploy/aws/setup_multi_gpu_env.sh"
        assert script in commands and (REPO / script).is_file()
        assert "[ray,s3]" in commands
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "RAY_ENABLE_UV_RUN_RUNTIME_ENV=0" in starts
