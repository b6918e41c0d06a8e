"""How every command ends on an error it did not expect: one line on stderr naming what
failed, with credentials masked, and the whole traceback (masked too) in a log file.

An entry point's own checks end in their own one-line messages (exit 2); this is the
net under them: a Ray task's failure, a judge endpoint's AuthenticationError that quotes
the key, a bug. A traceback on the terminal is 200 lines, often a secret among them.

    if __name__ == "__main__":
        sys.exit(guarded(main)())

A command that knows its output folder calls log_to(folder) once it does: the traceback
then goes to <folder>/error.log, beside what the run wrote; before that, or without a
folder, to a file in the temp directory. The line says where.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
import traceback
from pathlib import Path

from distill.redact import redact

LOG_NAME = "error.log"
_log_dir: Path | None = None


def log_to(folder: str | Path) -> None:
    """Where this process's unexpected errors are logged from now on."""
    global _log_dir
    _log_dir = Path(folder)


def one_line(e: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, credentials masked, clipped."""
    lines = str(e).strip().splitlines()
    msg = " ".join(redact(lines[0] if lines else "").split())
    msg = msg if len(msg) <= limit else msg[:limit] + "…"
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def write_log(e: BaseException, command: str) -> Path:
    text = redact("".join(traceback.format_exception(e)))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for folder in ([_log_dir] if _log_dir is not None else []) + [Path(tempfile.gettempdir()) / "fable-kd-errors"]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / (LOG_NAME if folder == _log_dir else f"{int(time.time())}-{command.replace(' ', '_')}.log")
            with open(path, "a", encoding="utf-8") as f:  # appended: a rerun's failure keeps the earlier one's
                f.write(f"--- {stamp} UTC {command}\n{text}\n")
            return path
        except OSError:
            continue
    return Path("(no writable log folder)")


def guarded(main, command: str | None = None):
    """`main(argv) -> int` that ends any unexpected exception in one line and exit code 1."""
    name = command or getattr(main, "__module__", "fable-kd")

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except KeyboardInterrupt:
            print("interrupted: rerun the same command to resume; finished work is kept", file=sys.stderr)
            return 130
        except Exception as e:  # noqa: BLE001 - the net under every command's own checks
            path = write_log(e, name)
            print(f"error: {name} failed: {one_line(e)} (traceback: {path})", file=sys.stderr)
            return 1

    return run
