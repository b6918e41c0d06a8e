"""The Makefile: its choice of stack, read from `make -n` (nothing is run), and the Ray
head `make ray-up` starts."""

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.conftest import ROOT, needs_models
from tests.listeners import assert_ray_head_guarded, is_loopback, listeners, stop_session
from tests.ray_cluster.test_job_submit import wait_for_dashboard
from tests.ray_cluster.test_serve import free_ports


def plan(venv, *args) -> str:
    return subprocess.run(["make", "-n", "setup", f"VENV={venv}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout


def test_a_gpu_venv_stays_a_gpu_venv_without_gpu_1(tmp_path):
    gpu = tmp_path / "gpu-venv"
    gpu.mkdir()
    (gpu / ".setup-gpu").touch()
    # Set up with GPU=1 before: a plain `make` target keeps it (nothing to reinstall).
    assert "requirements/cpu.txt" not in plan(gpu) and "torch==" not in plan(gpu)
    fresh = tmp_path / "new-venv"
    assert "requirements/cpu.txt" in plan(fresh)  # a new venv gets the CPU stack by default
    assert "requirements/gpu.txt" in plan(fresh, "GPU=1")


@needs_models
@pytest.mark.e2e
def test_make_ray_up_keeps_its_dashboard_on_loopback_and_token_auth_on(tmp_path):
    """`make ray-up` as a user runs it, held in the foreground (--block) and in its own temp
    dir so that stopping it (a signal to its session) touches no other Ray on the machine.
    Its prerequisites are taken as done (-o): this test must not install or convert."""
    port, dash = free_ports(2)
    temp = tempfile.mkdtemp(prefix="kdray-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    log = open(tmp_path / "ray-up.log", "w")
    proc = subprocess.Popen(["make", "-o", "setup", "-o", "models", "ray-up", f"RAY_PORT={port}", f"DASH_PORT={dash}",
                             f"RAY_START_FLAGS=--block --temp-dir {temp}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_dashboard(f"http://127.0.0.1:{dash}", proc, tmp_path / "ray-up.log")
        found = listeners(proc.pid)
        dashboard = [row for row in found if row[2] == dash]
        assert dashboard and all(is_loopback(ip) for _, ip, _ in dashboard), dashboard
        assert_ray_head_guarded(found)
    finally:
        stop_session(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
