"""The cluster configs cannot run here (no cloud, no Kubernetes); check them with what
can: Ray's own autoscaler schema, KubeRay's CRD schema, and the pipeline's own parser."""

import shlex

import pytest
import yaml

from tests.conftest import ROOT
from tests.ray_head import files_holding

CONFIGS = ROOT / "ray_cluster" / "configs"


def test_ray_up_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CONFIGS / "cluster-aws.yaml").read_text())
    validate_config(prepare_config(config))
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    config["head_node_typo"] = "head"
    with pytest.raises(Exception, match="head_node_typo"):
        validate_config(prepare_config(config))


def test_ray_up_gpu_workers_are_what_the_engines_ask_for_and_run_the_installed_ray():
    from ray_cluster.cluster import engine_bundles
    from teacher.registry import get_teacher

    config = yaml.safe_load((CONFIGS / "cluster-aws.yaml").read_text())
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["resources"]["GPU"] >= 1 and worker["max_workers"] >= 1
    # A GPU teacher's engine asks for GPUs even before the cluster has one: that demand is
    # what the autoscaler answers with a gpu_worker. A CPU teacher asks for none.
    bundles = engine_bundles(get_teacher("llama2-7b-chat"), gpus=0, remote=True)
    assert bundles == [{"GPU": 1, "CPU": 1}]
    assert all(set(b) <= set(worker["resources"]) and b["GPU"] <= worker["resources"]["GPU"] for b in bundles)
    assert engine_bundles(get_teacher("smollm2-135m"), gpus=0) == [{"CPU": 1}]
    # setup_commands build ~/fable-kd/.venv; every ray start must be that venv's ray.
    assert "make setup GPU=1" in " ".join(config["setup_commands"])
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert ".venv/bin/ray " in cmd and "fable-kd/.venv/bin:$PATH" in cmd or cmd.endswith("ray stop")
    assert config["file_mounts"]["/home/ubuntu/fable-kd"] == "."
    # Token auth on every node, with the one token copied from the user's machine.
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert "RAY_AUTH_MODE=token " in cmd or cmd.endswith("ray stop")
    # The local venv, models and runs never travel; the job runs the synced checkout's venv.
    assert {".venv", "models", "runs"} <= set(config["rsync_exclude"]) and ".gitignore" in config["rsync_filter"]
    header = (CONFIGS / "cluster-aws.yaml").read_text()
    assert "--working-dir . -- \\\n#     .venv/bin/python" not in header and "cd ~/fable-kd && .venv/bin/python" in header


def test_engine_resources_go_into_every_bundle_of_an_engine():
    import dataclasses

    from ray_cluster.cluster import engine_bundles
    from teacher.registry import get_teacher

    llama = get_teacher("llama2-7b-chat")
    tp2 = dataclasses.replace(llama, engine={**llama.engine, "tensor_parallel_size": 2})
    assert engine_bundles(tp2, gpus=0, remote=True, resources={"teacher_node": 1}) == [
        {"GPU": 1, "CPU": 1, "teacher_node": 1}] * 2
    assert engine_bundles(get_teacher("smollm2-135m"), gpus=0, resources={"teacher_node": 1}) == [
        {"CPU": 1, "teacher_node": 1}]


def test_a_gpu_teacher_on_a_local_cpu_head_is_refused_not_left_waiting():
    from ray_cluster.cluster import engine_bundles
    from teacher.registry import get_teacher

    with pytest.raises(ValueError, match="teacher 'falcon-7b-instruct' needs 1 GPU.*this local Ray head has 0"):
        engine_bundles(get_teacher("falcon-7b-instruct"), gpus=0, remote=False)


def rayjob_schema() -> dict:
    crd = yaml.safe_load((CONFIGS / "kuberay" / "ray.io_rayjobs.yaml").read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def test_rayjob_passes_the_kuberay_crd_schema():
    import jsonschema

    job = yaml.safe_load((CONFIGS / "rayjob.yaml").read_text())
    schema = rayjob_schema()
    jsonschema.validate(job, schema)
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        jsonschema.validate(job, schema)


def test_rayjob_runs_the_whole_pipeline_from_its_image_with_the_token_on_the_driver():
    from distill import config
    from distill.pipeline import build_parser

    job = yaml.safe_load((CONFIGS / "rayjob.yaml").read_text())
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "distill.pipeline"]
    args = build_parser().parse_args(argv[3:])
    cfg = config.load(ROOT / args.config)
    assert {tr.teacher for tr in cfg.teachers} == {"mistral-7b-instruct", "llama2-7b-chat", "falcon-7b-instruct"}
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "working_dir" not in runtime_env  # the code is in the image, not on a volume nothing fills
    assert (ROOT / "ray_cluster" / "Dockerfile").read_text().count("COPY") == 1
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"] for e in head["env"]}
    assert {"HF_TOKEN", "OPENAI_API_KEY"} <= env  # the driver loads the gated Llama-2 tokenizer and calls the judge
    assert all("value" not in e for e in head["env"])  # secrets by reference only
    # The driver trains on the head's GPU; the teachers run one after another, so workers
    # start at zero and only the autoscaler adds them.
    assert int(head["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    [workers] = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["minReplicas"] == workers["replicas"] == 0 and spec["rayClusterSpec"]["enableInTreeAutoscaling"]
    assert spec["rayClusterSpec"]["rayVersion"] == __import__("ray").__version__
    assert spec["rayClusterSpec"]["authOptions"]["mode"] == "token"
    # An image that exists where it is built, never pulled as :latest from nowhere.
    pods = [head] + [c for g in spec["rayClusterSpec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert all(not c["image"].endswith(":latest") and c["imagePullPolicy"] == "IfNotPresent" for c in pods)
    # The volume every pod mounts is defined, and shared across nodes.
    claims = {v["persistentVolumeClaim"]["claimName"] for g in [spec["rayClusterSpec"]["headGroupSpec"]]
              + spec["rayClusterSpec"]["workerGroupSpecs"] for v in g["template"]["spec"]["volumes"]}
    pvc = yaml.safe_load((CONFIGS / "rayjob-volume.yaml").read_text())
    assert claims == {pvc["metadata"]["name"]} and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # COPY . . ships no venv, models or runs.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "models", "runs", ".git"} <= set(ignored)


@pytest.mark.parametrize("node", ["head", "worker"])
def test_ray_up_start_commands_read_secrets_by_name_into_ray_start_alone(node, tmp_path):
    """Each node's start command as `ray up` runs it, over a stand-in home: `aws` answers
    for /fable-kd/HF_TOKEN only (its value from the environment, so no file holds it) and
    `.venv/bin/ray` records what it was started with. `ray start` gets the secret and token
    auth; a parameter that is missing is named and skipped; no file ends up holding the secret."""
    import hashlib
    import subprocess

    config = yaml.safe_load((CONFIGS / "cluster-aws.yaml").read_text())
    [start] = [c for c in config[f"{node}_start_ray_commands"] if "ray start" in c]
    home, bin_ = tmp_path / "home", tmp_path / "bin"
    checkout = home / "fable-kd"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / "ray_cluster").symlink_to(ROOT / "ray_cluster")
    bin_.mkdir()
    (bin_ / "aws").write_text('#!/bin/sh\n[ "$4" = /fable-kd/HF_TOKEN ] && [ "$3" = --name ] || exit 254\n'
                              'printf "%s\\n" "$STAND_IN_SECRET"\n')
    ray = checkout / ".venv" / "bin" / "ray"
    ray.write_text('#!/bin/sh\npython3 -c "import os, sys, hashlib; print(os.environ[\'RAY_AUTH_MODE\'], '
                   'hashlib.sha256(os.environ.get(\'HF_TOKEN\', \'\').encode()).hexdigest(), *sys.argv[1:])" "$@"\n')
    for f in (bin_ / "aws", ray):
        f.chmod(0o755)
    secret = "hf_stand_in_9f8e7d"
    env = {"HOME": str(home), "PATH": f"{bin_}:/usr/bin:/bin", "RAY_HEAD_IP": "10.0.0.1", "STAND_IN_SECRET": secret}
    proc = subprocess.run(["bash", "-c", start], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    auth, digest, *args = proc.stdout.split()
    assert auth == "token" and digest == hashlib.sha256(secret.encode()).hexdigest() and args[0] == "start"
    assert ("--head" in args) == (node == "head")
    missing = [n for n in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if n in start]
    assert [f"/fable-kd/{n}" in proc.stderr for n in missing] == [True] * len(missing)
    assert secret not in start + proc.stdout + proc.stderr
    assert files_holding(tmp_path, secret) == []
    bad = subprocess.run([str(ROOT / "ray_cluster/node_secrets.sh"), "HF_TOKEN=hf_typed", "--", "true"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "pass names, never values" in bad.stderr and "hf_typed" not in bad.stderr


def docker_context(root, ignore_file) -> tuple[int, int]:
    """Files and bytes `docker build` sends as its context from root: every file but those a
    .dockerignore line matches, itself or through a folder above it (Docker's rules: a pattern
    is anchored at the root, `*` stays within a path segment, `**` spans any number of them)."""
    import re
    from fnmatch import translate

    def segment(part: str) -> str:  # fnmatch's `*` may cross `/`; Docker's does not
        return r"[^/]+(?:/[^/]+)*" if part == "**" else translate(part).removeprefix("(?s:").removesuffix(r")\Z").replace(".*", "[^/]*")

    def regex(pattern: str) -> re.Pattern:
        parts = pattern.strip("/").split("/")
        # `**/` before a segment: any folders, none included
        body = "/".join(segment(p) for p in parts).replace(r"[^/]+(?:/[^/]+)*/", r"(?:[^/]+/)*")
        return re.compile(body)

    patterns = [regex(line.strip()) for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    files = size = 0
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        prefixes = ["/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 2)]
        if p.is_file() and not any(r.fullmatch(x) for r in patterns for x in prefixes):
            files, size = files + 1, size + p.stat().st_size
    return files, size


def test_docker_context_ships_the_code_and_no_venv_models_or_runs(tmp_path, capsys):
    """What `docker build -f ray_cluster/Dockerfile .` sends from this checkout, reported; the
    same rules over a stand-in tree with a venv, models, runs and caches keep only the code."""
    tree = {".venv/lib/torch.so": 1000, "models/q/model.safetensors": 1000, "runs/default/report.md": 10,
            "distill/__pycache__/x.pyc": 10, "eval/sub/__pycache__/y.pyc": 10, "fable_kd.egg-info/PKG-INFO": 10,
            ".git/objects/ab": 10, "distill/config.py": 7, "configs/default.toml": 5, "venv.md": 3}
    for rel, n in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * n)
    assert docker_context(tmp_path, ROOT / ".dockerignore") == (3, 15)
    files, size = docker_context(ROOT, ROOT / ".dockerignore")
    with capsys.disabled():
        print(f"\ndocker build context of this checkout: {files} files, {size / 1e6:.1f} MB")
    assert size < 30e6, f"{size / 1e6:.0f} MB: something large is not in .dockerignore"


def test_the_readmes_cluster_job_finds_its_entrypoint_in_the_package_ray_makes(tmp_path):
    """The README's `ray job submit --working-dir . ... -- python -m M --config C`: the folder
    packed by Ray's own code (honouring .gitignore, as `ray job submit` does) holds module M
    and config C, and none of the venv, models or runs."""
    import re
    import shlex
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    readme = (ROOT / "README.md").read_text()
    [cmd] = re.findall(r"^ray job submit .*?(?<!\\)\n", readme.replace("\\\n", " "), flags=re.M)
    argv = shlex.split(cmd)
    assert argv[argv.index("--working-dir") + 1] == "."
    entry = argv[argv.index("--") + 1:]
    module, config_file = entry[entry.index("-m") + 1], entry[entry.index("--config") + 1]
    create_package(str(ROOT), tmp_path / "pkg.zip", include_gitignore=True)
    names = set(zipfile.ZipFile(tmp_path / "pkg.zip").namelist())
    assert module.replace(".", "/") + ".py" in names and config_file in names, (module, config_file)
    assert not [n for n in names if n.split("/")[0] in (".venv", "models", "runs")]
