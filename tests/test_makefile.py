"""The Makefile's choice of stack, read from `make -n` (nothing is run)."""

import subprocess

from tests.conftest import ROOT


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
