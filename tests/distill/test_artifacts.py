import os
import signal
import subprocess
import sys

import pytest

from distill import artifacts
from distill.artifacts import remove_partial_writes, write_text_atomic
from tests.conftest import ROOT


def test_a_writer_killed_mid_write_leaves_the_old_file_and_the_next_run_sweeps_its_temp(tmp_path):
    target = tmp_path / "sub" / "00000.json"
    write_text_atomic(target, "old")
    # A writer that dies between creating its temp file and the rename, as SIGKILL does.
    code = (
        "import sys, time, distill.artifacts as a\n"
        "orig = a.os.replace\n"
        "a.os.replace = lambda *x: (print('written', flush=True), time.sleep(60), orig(*x))\n"
        f"a.write_text_atomic({str(target)!r}, 'new' * 1000)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(target.parent.glob(".*.tmp"))
    assert len(left) == 1 and target.read_text() == "old"

    keep = tmp_path / "sub" / "notes.tmp"  # not a writer's temp name: left alone
    keep.write_text("mine")
    assert remove_partial_writes(tmp_path, recursive=True) == left
    assert not list(tmp_path.rglob(".*.tmp")) and keep.exists() and target.read_text() == "old"
    assert remove_partial_writes(tmp_path / "absent") == []


def test_a_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import distill.artifacts as a

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(a.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(tmp_path / "x.json", "text")
    assert list(tmp_path.iterdir()) == []


def test_checkpoints_are_ordered_by_step_not_by_name(tmp_path):
    for step in (10, 2, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "runs").mkdir()
    assert [p.name for p in artifacts.checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-100"]
