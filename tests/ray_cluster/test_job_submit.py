"""`ray job submit` against a local head (`ray start --head`, token auth on), the way a
team submits generation to its cluster."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_models
from tests.ray_cluster.test_serve import free_port

pytestmark = [pytest.mark.e2e, needs_models]

BIN = Path(sys.executable).parent


@pytest.fixture
def head(tmp_path):
    port, dash = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Jobs run the head's python: put this venv first, and let them find the built models.
    env.update(PATH=f"{BIN}:{env['PATH']}", KD_MODELS_DIR=str(ROOT / "models"), RAY_AUTH_MODE="token")
    subprocess.run([str(BIN / "ray"), "start", "--head", "--port", str(port), "--dashboard-port", str(dash),
                    "--num-cpus", "8", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


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
