"""The judge's endpoint: judge.base_url or OPENAI_BASE_URL when set, else a vLLM OpenAI server
started here for an embedded judge model, on 127.0.0.1, stopped on exit."""

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def judge_endpoint(judge_cfg, log_path: Path | None = None):
    """Yields a function returning the judge's base URL: judge.base_url, else OPENAI_BASE_URL,
    else a vLLM OpenAI server started here for an embedded model (127.0.0.1, stopped on
    exit, its output in log_path). The server starts at once and the function waits for it,
    so its start-up can overlap other work."""
    url = judge_cfg.base_url or os.environ.get("OPENAI_BASE_URL")
    if url:
        yield lambda: url
        return
    from teacher.engine import cpu_env
    from teacher.hardware import engine_dtype, engine_eager
    from teacher.registry import get_teacher

    teacher = get_teacher(judge_cfg.model)
    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(teacher.model_path()),
           "--served-model-name", teacher.id, "--host", "127.0.0.1", "--port", str(port), "--dtype", engine_dtype(),
           "--max-model-len", str(judge_cfg.server_max_model_len), "--seed", "0", "--load-format", "safetensors", *(["--enforce-eager"] if engine_eager() else [])]
    log_path = Path(log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"kd-judge-server-{port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **cpu_env(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))})
    url = f"http://127.0.0.1:{port}/v1"
    ready = []

    def wait() -> str:
        if not ready:
            _wait_ready(url, proc, log.name)
            ready.append(True)
        return url

    try:
        yield wait
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait_ready(url: str, proc, log_name: str, timeout_s: float = 900) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ValueError(f"the local judge server exited with {proc.returncode}; see {log_name}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(2)
    raise ValueError(f"the local judge server did not answer within {timeout_s:.0f} s; see {log_name}")
