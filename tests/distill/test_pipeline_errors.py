"""Bad input stops the pipeline early with one line naming the problem."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run(args, **env):
    return subprocess.run([sys.executable, "-m", "distill.pipeline", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/tiny.toml", "--set", 'teachers=["gpt-9"]'], "unknown teacher 'gpt-9'"),
    (["--config", "configs/tiny.toml", "--set", "train.lr=7"], "train.lr: 7 must be in (0, 1)"),
    (["--config", "configs/nope.toml"], "configs/nope.toml cannot be read"),
    (["--config", "configs/tiny.toml", "--set", 'prompts_file="/nonexistent/p.jsonl"'], "/nonexistent/p.jsonl cannot be read"),
    (["--config", "configs/tiny.toml", "--set", 'judge.rubric="no/such.toml"'], "judge.rubric: rubric no/such.toml: FileNotFoundError"),
    (["--config", "configs/tiny.toml", "--set", "seed=4294967296"], "seed: 4294967296 must be within 0..4294967295"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    proc = run(args, KD_RUNS_DIR=str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert not list(tmp_path.iterdir())  # nothing started


def test_missing_model_names_the_fix(tmp_path):
    proc = run(["--config", "configs/tiny.toml"], KD_RUNS_DIR=str(tmp_path), KD_MODELS_DIR=str(tmp_path / "none"))
    assert proc.returncode == 2
    assert "model folder" in proc.stderr and "make models" in proc.stderr
