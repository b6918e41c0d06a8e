"""The served teachers: Ray Serve LLM + vLLM behind one OpenAI-compatible endpoint,
called with the official `openai` client."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, needs_models

pytestmark = [pytest.mark.e2e, needs_models]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [l for l in out if any(k in l for k in ("raylet", "gcs_server", "ray::", "VLLM::"))]


@pytest.fixture(scope="module")
def endpoint():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "ray_cluster.serve", "--port", str(port), "--top-k", "5"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 900
    line = ""
    while time.time() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line.startswith("ready"):
            break
    assert line.startswith("ready"), f"server did not come up (exit {proc.poll()})"
    yield f"http://127.0.0.1:{port}/v1", proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def test_models_are_listed_on_loopback(endpoint):
    from teacher.client import make_client

    url, _ = endpoint
    assert {m.id for m in make_client(url).models.list().data} == {"smollm2-135m", "gemma3-270m"}


def test_chat_completion_returns_top_logprobs(endpoint):
    from teacher.client import chat_with_logprobs, make_client

    url, _ = endpoint
    text, lp = chat_with_logprobs(make_client(url), "smollm2-135m", "Write one sentence about a fox.", 12, top_k=5)
    assert text and 0 < len(lp.tokens) <= 12 and len(lp.logprobs) == len(lp.tokens)
    assert all(len(t) == 5 for t in lp.top) and all(v <= 0 for t in lp.top for v in t.values())


def test_text_completion_of_the_base_teacher(endpoint):
    from teacher.client import complete_with_logprobs, make_client

    url, _ = endpoint
    text, lp = complete_with_logprobs(make_client(url), "gemma3-270m", "Once upon a time, a fox", 10, top_k=3)
    assert text and len(lp.tokens) == len(lp.logprobs) > 0
    assert all(1 <= len(t) <= 4 for t in lp.top)  # top-3 plus the sampled token when it ranks lower


def test_stopping_leaves_no_process_behind(endpoint):
    _, proc = endpoint
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    deadline = time.time() + 30
    while ray_processes() and time.time() < deadline:
        time.sleep(1)
    assert ray_processes() == []
