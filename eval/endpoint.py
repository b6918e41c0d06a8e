"""The judge's endpoint: judge.base_url or OPENAI_BASE_URL when set, else the embedded judge
model served by the teacher service (ray_cluster/serve.py: Ray Serve LLM + vLLM) as the
application `judge`, on 127.0.0.1, stopped on exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from distill.redact import MASK

ROOT = Path(__file__).resolve().parent.parent
JUDGE_APP = "judge"
READY_TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def judge_endpoint(judge_cfg, log_path: Path | None = None, on_this_head: bool = False, starts=None):
    """Yields a function returning the judge's base URL: judge.base_url, else OPENAI_BASE_URL,
    else the teacher service started here for an embedded model, as the Serve application
    `judge`. The service starts at once and the function waits for it, so its start-up can
    overlap other work; its start is counted in `starts` (ray_cluster.cluster.EngineStarts).

    on_this_head: deployed from this process on the Ray head it holds or starts (the pipeline's
    one head); on exit the application and Serve go, the head stays. Otherwise `python -m
    ray_cluster.serve --app judge` in its own process session, its output in log_path, SIGTERM
    on exit. Under RAY_ADDRESS either way deploys on that cluster's Serve beside its other
    applications and deletes only the judge on exit."""
    url = judge_cfg.base_url or os.environ.get("OPENAI_BASE_URL")
    if MASK in (judge_cfg.base_url or ""):
        raise ValueError(f"judge.base_url {judge_cfg.base_url} was recorded with its credentials masked (a run never "
                         "writes them): give the endpoint again, --set judge.base_url=URL, and the key in OPENAI_API_KEY")
    if url:
        yield lambda: url
        return
    from teacher.registry import get_teacher

    get_teacher(judge_cfg.model).model_path()  # a missing judge model fails here, by name
    log_path = Path(log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"kd-judge-server-{os.getpid()}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if on_this_head:
        with _served_here(judge_cfg, log_path, starts) as wait:
            yield wait
        return
    port = _free_port()
    cmd = [sys.executable, "-m", "ray_cluster.serve", "--teacher", judge_cfg.model, "--app", JUDGE_APP,
           "--port", str(port), "--max-model-len", str(judge_cfg.server_max_model_len),
           "--ready-timeout", str(READY_TIMEOUT_S)]
    log = open(log_path, "w")
    t0 = time.perf_counter()  # the service's start: its own head, Serve and the engine
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready: list[str] = []

    def wait() -> str:
        if not ready:
            ready.append(_wait_ready(proc, log_path))
            if starts is not None:
                starts.add(time.perf_counter() - t0)
        return ready[0]

    try:
        yield wait
    finally:
        if proc.poll() is None:
            # The service's SIGTERM handler shuts Serve and its Ray head down; SIGKILL only
            # if that hangs, and then the whole session.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _wait_ready(proc, log_path: Path, timeout_s: float = READY_TIMEOUT_S + 60) -> str:
    """The URL from the service's `ready <url> ...` line."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("ready "):
                return line.split()[1]
        if proc.poll() is not None:
            raise ValueError(f"the local judge service exited with {proc.returncode}; see {log_path}")
        time.sleep(2)
    raise ValueError(f"the local judge service did not answer within {timeout_s:.0f} s; see {log_path}")


@contextlib.contextmanager
def _served_here(judge_cfg, log_path: Path, starts):
    """The judge deployed from this process, started in a thread; log_path gets its ready line
    or its error (Serve's own logs stay in the Ray session folder)."""
    import threading

    from ray_cluster import serve as service
    from ray_cluster.cluster import connect

    connect()
    outcome: dict = {}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def start() -> None:
        t0 = time.perf_counter()
        try:
            try:
                url = service.start([judge_cfg.model], port=_free_port(), max_model_len=judge_cfg.server_max_model_len,
                                    app=JUDGE_APP)
            finally:
                # Importing Ray Serve LLM turns this process's root logger into Ray's JSON at INFO
                # (every judge request then logged); the caller's logging comes back.
                root.handlers[:] = handlers
                root.setLevel(level)
            service.wait_ready(url, [judge_cfg.model], READY_TIMEOUT_S)
            took = time.perf_counter() - t0
            outcome["url"] = url
            if starts is not None:
                starts.add(took)
            log_path.write_text(f"ready {url} models={judge_cfg.model} after {took:.0f} s\n")
        except Exception as e:  # handed to the caller by wait()
            outcome["error"] = e
            log_path.write_text(f"error: {type(e).__name__}: {e}\n")

    thread = threading.Thread(target=start, name="judge-service", daemon=True)
    thread.start()

    def wait() -> str:
        thread.join()
        if "error" in outcome:
            e = outcome["error"]
            raise ValueError(f"the local judge service did not start ({type(e).__name__}: {e}); see {log_path}") from e
        return outcome["url"]

    try:
        yield wait
    finally:
        thread.join()
        service.stop(JUDGE_APP, keep_head=True)
