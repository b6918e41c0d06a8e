"""`ray job submit` against a local head (`ray start --head`, token auth on), the way a
team submits generation to its cluster."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_models
from tests.ray_cluster.test_serve import free_port

pytestmark = [pytest.mark.e2e, needs_models]

BIN = Path(sys.executable).parent


@pytest.fixture
def head(tmp_path):
    """A Ray head of this test's own: `ray start --block` in its own session, stopped by
    signalling that session, so nothing else's Ray on the machine is touched (never
    `ray stop`, which stops every Ray on it)."""
    port, dash = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Jobs run the head's python: put this venv first, and let them find the built models.
    env.update(PATH=f"{BIN}:{env['PATH']}", KD_MODELS_DIR=str(ROOT / "models"), RAY_AUTH_MODE="token")
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
        os.killpg(proc.pid, signal.SIGTERM)  # --block: the head stops its own processes on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
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


def test_submitted_generation_job_writes_the_dataset(head, tmp_path):
    from distill.schema import read_rows

    address, env = head
    out = tmp_path / "jobs"
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
         "python", "-m", "ray_cluster.generate", "--teacher", "smollm2-135m", "--out", str(out),
         "--n-train", "6", "--n-eval", "2", "--max-new-tokens", "16", "--shard-size", "4"],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    rows = read_rows(out / "smollm2-135m")
    assert len(rows) == 8 and len({r["prompt_id"] for r in rows}) == 8
    assert all(len(r["topk_ids"]) == len(r["token_ids"]) > 0 for r in rows)
