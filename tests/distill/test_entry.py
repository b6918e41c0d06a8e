"""Every command ends an error it did not expect in one line, credentials masked, and
leaves the traceback in a log file."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill import entry
from distill.redact import MASK
from tests.conftest import ROOT

PRODUCT = ["distill", "eval", "ray_cluster", "teacher", "student"]


def failing(argv):
    def deep():
        raise RuntimeError("endpoint said: Incorrect API key provided: sk-live-abcdefgh12345\nsecond line")
    deep()


@pytest.fixture(autouse=True)
def no_log_dir(monkeypatch):
    monkeypatch.setattr(entry, "_log_dir", None)


def test_an_unexpected_error_is_one_masked_line_and_a_masked_traceback_in_the_runs_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "my-own-key-0123456789")
    entry.log_to(tmp_path / "runs" / "x")
    assert entry.guarded(failing, "python -m distill.pipeline")([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: python -m distill.pipeline failed: RuntimeError: endpoint said")
    assert "sk-live" not in err and MASK in err and "second line" not in err
    log = (tmp_path / "runs" / "x" / "error.log").read_text()
    assert str(tmp_path / "runs" / "x" / "error.log") in err
    assert "Traceback" in log and "def deep" not in log and "in deep" in log and "sk-live" not in log


def test_without_a_folder_the_traceback_goes_to_the_temp_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert entry.guarded(failing, "fable-kd eval")([]) == 1
    err = capsys.readouterr().err
    logs = list((tmp_path / "fable-kd-errors").glob("*.log"))
    assert len(logs) == 1 and str(logs[0]) in err and "Traceback" in logs[0].read_text()


def test_a_commands_own_exit_code_and_interrupt_pass_through(capsys):
    assert entry.guarded(lambda argv: 2)([]) == 2
    assert entry.guarded(lambda argv: None)([]) == 0

    def interrupted(argv):
        raise KeyboardInterrupt

    assert entry.guarded(interrupted)([]) == 130 and "interrupted" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's --help and usage errors keep their own exit
        entry.guarded(lambda argv: sys.exit(2))([])


def test_every_product_command_runs_under_the_guard():
    """Each `python -m` module of the product ends its __main__ block through guarded()."""
    unguarded = []
    for pkg in PRODUCT:
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                    # distill/cli.py guards each subcommand inside its main
                    if "guarded(main" not in ast.unparse(node) and path != ROOT / "distill" / "cli.py":
                        unguarded.append(str(path.relative_to(ROOT)))
    assert unguarded == []


def test_fable_kd_ends_an_unexpected_error_in_one_line(tmp_path):
    """Through the console entry, as a user would meet it: --out under a path that is a file
    (an OSError none of the command's own checks expects)."""
    (tmp_path / "taken").write_text("a file, not a folder")
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "generate", "--teacher", "smollm2-135m", "--out",
                           "taken/gen"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("error: fable-kd generate failed: NotADirectoryError:") and "taken/gen" in last
    log = Path(last.rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert log.is_relative_to(tmp_path) and "NotADirectoryError" in log.read_text()
