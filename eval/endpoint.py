"""The judge's endpoint: judge.base_url or OPENAI_BASE_URL when set, else the embedded judge
model served by the teacher service (ray_cluster/serve.py: Ray Serve LLM + vLLM) as the
application `judge`, on 127.0.0.1, stopped on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JUDGE_APP = "judge"
READY_TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def judge_endpoint(judge_cfg, log_path: Path | None = None):
    """Yields a function returning the judge's base URL: judge.base_url, else OPENAI_BASE_URL,
    else the teacher service started here for an embedded model (`python -m ray_cluster.serve
    --app judge`, in its own process session, its output in log_path; SIGTERM on exit). The
    service starts at once and the function waits for it, so its start-up can overlap other
    work. Under RAY_ADDRESS the judge is deployed on that cluster's Serve beside its other
    applications and only it is deleted on exit."""
    url = judge_cfg.base_url or os.environ.get("OPENAI_BASE_URL")
    if url:
        yield lambda: url
        return
    from teacher.registry import get_teacher

    get_teacher(judge_cfg.model).model_path()  # a missing judge model fails here, by name
    port = _free_port()
    cmd = [sys.executable, "-m", "ray_cluster.serve", "--teacher", judge_cfg.model, "--app", JUDGE_APP,
           "--port", str(port), "--max-model-len", str(judge_cfg.server_max_model_len),
           "--ready-timeout", str(READY_TIMEOUT_S)]
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):  # else the service's own default
        cmd += ["--kv-cache-gib", os.environ["VLLM_CPU_KVCACHE_SPACE"]]
    log_path = Path(log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"kd-judge-server-{port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready: list[str] = []

    def wait() -> str:
        if not ready:
            ready.append(_wait_ready(proc, log_path))
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
