"""`ray job submit` against a local head (`ray start --head`, token auth on), the way a
team submits the pipeline to its cluster."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_models
from tests.listeners import ensure_ray_token, stop_session
from tests.ray_cluster.test_serve import free_ports

pytestmark = [pytest.mark.e2e, needs_models]

BIN = Path(sys.executable).parent


@pytest.fixture
def head(tmp_path):
    """A Ray head of this test's own: `ray start --block` in its own session, stopped by
    signalling that session, so nothing else's Ray on the machine is touched (never
    `ray stop`, which stops every Ray on it)."""
    port, dash = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Jobs run the head's python: put this venv first, and let them find the built models.
    env.update(PATH=f"{BIN}:{env['PATH']}", KD_MODELS_DIR=str(ROOT / "models"), RAY_AUTH_MODE="token")
    ensure_ray_token(env)
    log = open(tmp_path / "ray-head.log", "w")
    # Its own temp dir, so it never writes /tmp/ray/ray_current_cluster, which a later
    # address-less ray.init anywhere on the machine would join. Short: Ray's socket paths
    # must fit in 107 bytes.
    temp = tempfile.mkdtemp(prefix="kdray-", dir="/tmp")
    proc = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--temp-dir", temp, "--port", str(port),
                             "--dashboard-port", str(dash), "--num-cpus", "8", "--node-ip-address", "127.0.0.1",
                             "--dashboard-host", "127.0.0.1", "--disable-usage-stats"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_dashboard(f"http://127.0.0.1:{dash}", proc, tmp_path / "ray-head.log")
        yield f"http://127.0.0.1:{dash}", env
    finally:
        stop_session(proc, timeout_s=60)  # --block: the head stops its own processes on SIGTERM
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_dashboard(url: str, proc, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/api/version", timeout=5)
            return
        except urllib.error.HTTPError:  # it answered (with token auth on, 401): it is up
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the Ray head's dashboard {url} did not answer in {timeout_s:.0f} s")


def test_the_whole_pipeline_runs_as_one_submitted_job(head, tmp_path):
    """`ray job submit ... -- python -m distill.pipeline`: generation on the cluster's engine,
    then training, evaluation and the report in the job's driver."""
    import json

    from distill.schema import read_rows

    address, env = head
    runs = tmp_path / "runs"
    runtime_env = json.dumps({"env_vars": {"KD_RUNS_DIR": str(runs)}})
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT),
         "--runtime-env-json", runtime_env, "--",
         "python", "-m", "distill.pipeline", "--config", "configs/tiny.toml", "--name", "job",
         "--set", 'teachers=["smollm2-135m"]', "--set", "n_train=4", "--set", "n_heldout=2",
         "--set", "generation.max_new_tokens=16", "--set", "train.steps=2", "--set", "sft_baseline=false",
         "--set", "judge.enabled=false"],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    run = runs / "job"
    rows = read_rows(run / "teachers" / "smollm2-135m")
    assert len(rows) == 4 + 2 and all(len(r["topk_ids"]) == len(r["token_ids"]) > 0 for r in rows)
    stages = [s["stage"] for s in json.loads((run / "stages.json").read_text())]
    assert stages == ["generate", "train-kd", "write", "evaluate-kd", "compare", "report"]
    assert (run / "students" / "smollm2-135m-kd" / "merged" / "model.safetensors").exists()
    assert "smollm2-135m" in (run / "report.md").read_text()
