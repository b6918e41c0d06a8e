"""The cluster configs cannot run here (no cloud, no Kubernetes); check them with what
can: Ray's own autoscaler schema, and the job's own argument parser and registry."""

import shlex

import pytest
import yaml

from tests.conftest import ROOT

CONFIGS = ROOT / "ray_cluster" / "configs"


def test_ray_up_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CONFIGS / "cluster-aws.yaml").read_text())
    validate_config(prepare_config(config))
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    config["head_node_typo"] = "head"
    with pytest.raises(Exception, match="head_node_typo"):
        validate_config(prepare_config(config))


def test_rayjob_runs_the_generation_module_on_enough_gpu():
    from ray_cluster.generate import build_parser
    from teacher.registry import get_teacher

    job = yaml.safe_load((CONFIGS / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "ray_cluster.generate"]
    args = build_parser().parse_args(argv[3:])
    teachers = [get_teacher(t) for t in args.teacher]
    assert {t.id for t in teachers} == {"mistral-7b-instruct", "llama2-7b-chat", "falcon-7b-instruct"}
    [workers] = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    container = workers["template"]["spec"]["containers"][0]
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    gib = float(next(e["value"] for e in container["env"] if e["name"] == "GPU_MEMORY_GIB"))
    for t in teachers:
        tp = t.engine["tensor_parallel_size"]
        assert gpus >= tp and gib * tp >= t.gpu_memory_gib
    assert workers["replicas"] * gpus >= sum(t.engine["tensor_parallel_size"] for t in teachers)
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == __import__("ray").__version__
