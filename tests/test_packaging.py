"""The package as a user installs it: a wheel, outside the repository, with the stack the
virtualenv already has (installed --no-deps into a folder of its own)."""

import os
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import ROOT

HEAVY = ("torch", "vllm", "ray", "transformers", "peft", "pyarrow")


def test_the_wheel_installs_and_runs_fable_kd_from_outside_the_repository(tmp_path):
    # Built from a copy: an in-tree build would leave build/ in the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "models", "runs", "build", "*.egg-info",
                                                            "__pycache__", ".pytest_cache", ".hypothesis"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("fable_kd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eval/rubrics/fable.toml" in names and "eval/rubrics/fable-5.toml" in names
    assert {"configs/default.toml", "configs/production.toml", "configs/tiny.toml"} <= set(names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(tmp_path / "home")}
    env.pop("KD_MODELS_DIR", None)
    env.pop("XDG_DATA_HOME", None)
    helped = subprocess.run([str(site / "bin" / "fable-kd"), "--help"], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "distill" in helped.stdout and "compare" in helped.stdout, helped.stderr
    # The default config ships in the wheel: the documented command finds it outside a checkout.
    planned = subprocess.run([str(site / "bin" / "fable-kd"), "distill", "--config", "configs/default.toml", "--dry-run"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0 and "qwen2.5-coder-1.5b" in planned.stdout, planned.stderr[-2000:]
    probe = (
        "import sys; from distill import cli; cli.main(['--help']);"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules];"
        "from eval.rubric import Rubric; r = Rubric.load();"
        "from teacher.registry import MODELS_DIR;"
        "print('HEAVY', heavy); print('CLI', cli.__file__); print('RUBRIC', r.name, len(r.names)); print('MODELS', MODELS_DIR)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.split(" ", 1)[0].isupper())
    assert lines["HEAVY"] == "[]"  # --help imports no model stack: it answers at once
    assert lines["CLI"].startswith(str(site))  # the installed copy, not the checkout
    assert lines["RUBRIC"] == "fable-v1 4"
    # Not site-packages/models: the user's data folder
    assert lines["MODELS"] == str(tmp_path / "home" / ".local" / "share" / "fable-kd" / "models")


def test_python_m_distill_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "distill", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "fable-kd COMMAND" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "distill", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr
