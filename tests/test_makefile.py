"""The Makefile: its choice of stack, read from `make -n` (nothing is run), and the Ray
head `make ray-up` starts."""

import subprocess

import pytest

from tests.conftest import ROOT
from tests.listeners import assert_ray_head_guarded, is_loopback, listeners


def plan(venv, *args) -> str:
    return subprocess.run(["make", "-n", "setup", f"VENV={venv}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout


def test_make_test_runs_two_workers_and_fails_when_it_selects_no_test():
    """`make test` spreads the files over two pytest-xdist workers, and a selection that
    matches nothing (pytest's exit 5) fails the target instead of passing in silence."""
    dry = subprocess.run(["make", "-n", "-o", "setup", "-o", "models", "test"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60).stdout
    assert "-n 2 --dist loadfile" in dry
    proc = subprocess.run(["make", "-o", "setup", "-o", "models", "test",
                           "PYTEST_ARGS=-k no_test_has_this_name tests/test_makefile.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no tests ran" in proc.stdout + proc.stderr, proc.stdout[-2000:]


def test_a_gpu_venv_stays_a_gpu_venv_without_gpu_1(tmp_path):
    gpu = tmp_path / "gpu-venv"
    gpu.mkdir()
    (gpu / ".setup-gpu").touch()
    # Set up with GPU=1 before: a plain `make` target keeps it (nothing to reinstall).
    assert "requirements/cpu.txt" not in plan(gpu) and "torch==" not in plan(gpu)
    fresh = tmp_path / "new-venv"
    assert "requirements/cpu.txt" in plan(fresh)  # a new venv gets the CPU stack by default
    assert "requirements/gpu.txt" in plan(fresh, "GPU=1")


@pytest.mark.e2e
def test_make_ray_up_keeps_its_dashboard_on_loopback_and_token_auth_on(ray_head):
    """`make ray-up` as a user runs it: the session's head (tests/ray_head.py), to which the
    tiny pipeline run is submitted as a job."""
    found = listeners(ray_head.proc.pid)
    dashboard = [row for row in found if row[2] == ray_head.dash_port]
    assert dashboard and all(is_loopback(ip) for _, ip, _ in dashboard), dashboard
    assert_ray_head_guarded(found)
