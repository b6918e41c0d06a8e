"""The verdict cache: every verdict by (judge settings, rubric, prompt, fable), in SQLite."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path


def _busy(e: sqlite3.Error) -> bool:
    """Locked or busy past the timeout (SQLITE_BUSY 5, SQLITE_LOCKED 6, and their extended codes)."""
    code = getattr(e, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF in (5, 6)) or "locked" in str(e) or "busy" in str(e)


class VerdictCache:
    """Verdicts by (judge settings, rubric, prompt, fable), in SQLite: each one is
    committed as it arrives, so a killed evaluation keeps every verdict it paid for.

    Several processes may share one cache: WAL lets readers run beside the writer, and a
    writer waits up to BUSY_TIMEOUT_S for the lock; a write that still fails costs that one
    verdict its caching, never the evaluation. A damaged cache file is set aside with a
    warning and rebuilt, refilled from `recover_from` (a verdicts.jsonl) when given."""

    BUSY_TIMEOUT_S = 60.0

    def __init__(self, path: str | Path, recover_from: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Opening is serialized across processes: eight opening a new file at once saw one
        # another's half-made database as damaged, and moved the live file aside.
        with self._opening():
            self._open_or_rebuild(recover_from)

    @contextlib.contextmanager
    def _opening(self):
        with open(f"{self.path}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _open_or_rebuild(self, recover_from) -> None:
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:
            if _busy(e):  # another process holds it: not damage, and never moved from under that writer
                raise RuntimeError(f"verdict cache {self.path} stayed locked by another process for "
                                   f"{self.BUSY_TIMEOUT_S:.0f} s ({e}); let that evaluation finish or stop it, then "
                                   "rerun (finished verdicts are kept)") from None
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{self.path}{suffix}").exists():
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            self._db = self._open()
            restored = self.restore(recover_from) if recover_from else 0
            print(f"warning: verdict cache {self.path} was damaged ({e}); moved to {aside.name} and rebuilt"
                  + (f", {restored} verdicts restored from {recover_from}" if recover_from else ""), file=sys.stderr)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=self.BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def key(settings: dict, prompt: str, fable: str) -> str:
        # The address is recorded but not part of the key: the same judge moved is the same judge.
        settings = {k: v for k, v in settings.items() if k != "base_url"}
        return hashlib.sha256(json.dumps([settings, prompt, fable], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM verdicts WHERE key = ?", (key,)).fetchone()
        try:
            return json.loads(row[0]) if row else None
        except (TypeError, ValueError):  # a damaged record is a miss: the fable is judged again
            return None

    def put(self, key: str, record: dict) -> None:
        try:
            with self._lock, self._db:
                self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(record)))
        except sqlite3.OperationalError as e:  # still locked after the busy timeout
            print(f"warning: verdict not cached in {self.path}: {e}", file=sys.stderr)

    def restore(self, verdicts: str | Path) -> int:
        """Put back the verdicts a run wrote to verdicts.jsonl (request failures were never
        cached and are not restored). Returns how many."""
        n = 0
        path = Path(verdicts)
        if not path.is_file():
            return 0
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                j = json.loads(line)
                if "request failed" in str(j.get("reason", "")):
                    continue
                record = {k: j[k] for k in ("verdict", "reason", "raw", "judge")}
                self.put(self.key(j["judge"], j["prompt"], j["fable"]), record)
                n += 1
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return n

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
