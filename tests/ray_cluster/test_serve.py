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
from tests.listeners import assert_ray_head_guarded, is_loopback, listeners

pytestmark = [pytest.mark.e2e, needs_models]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: held open together while they are drawn (one at a time, the OS
    may hand back the same port twice; a Ray head then refuses its dashboard port)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    err = tmp_path_factory.mktemp("serve") / "stderr.log"
    proc = subprocess.Popen([sys.executable, "-m", "ray_cluster.serve", "--port", str(port), "--top-k", "5",
                             "--kv-cache-gib", os.environ["VLLM_CPU_KVCACHE_SPACE"]],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=open(err, "w"), text=True)
    deadline = time.time() + 900
    line = ""
    while time.time() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line.startswith("ready"):
            break
    try:
        assert line.startswith("ready"), f"server did not come up (exit {proc.poll()}): {err.read_text()[-3000:]}"
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:  # also when it never came up: a half-started server holds engines and memory
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


def test_teacher_scores_given_tokens_as_transformers_does(endpoint):
    """Prompt logprobs through the endpoint (what on-policy distillation uses) against the
    same teacher run by transformers in fp32; the engine computes in bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teacher.client import make_client, score_topk
    from teacher.registry import get_teacher

    url, _ = endpoint
    path = get_teacher("smollm2-135m").model_path()
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok("Once upon a time, a little fox").input_ids
    completion = tok(" found a shiny stone by the river and took it home.").input_ids
    ids, lps = score_topk(make_client(url), "smollm2-135m", prompt, completion, top_k=5)
    assert len(ids) == len(completion) and all(len(r) == 5 for r in ids)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([prompt + completion])).logits[0].log_softmax(-1)
    ref = ref[len(prompt) - 1 : len(prompt) - 1 + len(completion)]
    same_top1 = sum(r[0] == int(ref[i].argmax()) for i, r in enumerate(ids))
    assert same_top1 >= 0.8 * len(ids)
    for i, (r, l) in enumerate(zip(ids, lps)):
        assert abs(l[0] - float(ref[i, r[0]])) < 0.25


def test_on_policy_steps_against_the_served_teacher(endpoint, tmp_path):
    from transformers import AutoTokenizer

    from distill.onpolicy import endpoint_scorer
    from distill.train import TrainConfig, train
    from student.build import apply_lora, build_student
    from teacher.registry import get_teacher

    url, _ = endpoint
    path = get_teacher("smollm2-135m").model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model, _ = build_student("pruned", path, layers=2)
    model = apply_lora(model, 4, 8, 0.0)
    rows = [{"prompt_id": str(i), "prompt_token_ids": tok(f"Write a fable about a {a}.").input_ids,
             "token_ids": [tok.eos_token_id], "topk_ids": [[tok.eos_token_id] * 5], "topk_logprobs": [[-1.6] * 5]}
            for i, a in enumerate(["fox", "crow"])]
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=0, save_steps=2, logging_steps=1, lora_r=4,
                      on_policy=1.0, on_policy_max_new_tokens=8)
    result = train(model, tok, rows, tmp_path, cfg, scorer=endpoint_scorer("smollm2-135m", 5, base_url=url))
    assert result["steps"] == 2
    assert all(h["train_on_policy"] == 1.0 and 0 <= h["train_kd"] < 50 for h in result["history"])


def test_the_endpoint_listens_on_loopback_and_its_ray_head_wants_the_token(endpoint):
    url, proc = endpoint
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    found = listeners(proc.pid)
    http = [row for row in found if row[2] == port]
    assert http and all(is_loopback(ip) for _, ip, _ in http), http
    assert_ray_head_guarded(found)


def test_stopping_leaves_no_process_behind(endpoint):
    """Every process the service started (its Ray head's daemons, Serve, the engines: all its
    descendants, whatever another test runs beside it) is gone once it has stopped."""
    import psutil

    _, proc = endpoint
    started = psutil.Process(proc.pid).children(recursive=True)
    assert any("raylet" in " ".join(p.cmdline()) for p in started), "the service's Ray head is not its own"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    deadline = time.time() + 30
    while _alive(started) and time.time() < deadline:
        time.sleep(1)
    assert _alive(started) == []


def _alive(procs) -> list:
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_the_local_judge_joins_a_running_cluster_on_loopback_and_leaves_only_its_own_app(monkeypatch, ray_head):
    """judge_endpoint under RAY_ADDRESS, as `make eval` runs on a team's cluster: it starts
    `python -m ray_cluster.serve --app judge`, which deploys the embedded judge beside the
    cluster's other applications (under /judge, on the token-guarded session head of `make
    ray-up`), answers a chat completion through Serve's loopback proxy, starts no Ray head of
    its own, and on leaving the block deletes its application only: the cluster and its Serve
    stay. (Without RAY_ADDRESS the same service starts its own head: the `endpoint` fixture
    above, and test_stopping_leaves_no_process_behind.) In this file, not tests/eval/:
    pytest-xdist gives a file to one worker, and two services on one machine at once failed
    the first one's start (make test, two workers)."""
    import json
    import urllib.request

    import psutil

    from distill.config import JudgeConfig
    from eval.endpoint import judge_endpoint
    from teacher.client import make_client

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")

    def routes(url: str) -> dict:
        with urllib.request.urlopen(url.split("/judge/")[0] + "/-/routes", timeout=30) as r:
            return json.load(r)

    with judge_endpoint(JudgeConfig(model="smollm2-135m")) as wait:
        url = wait()
        service = next(p for p in psutil.Process().children() if "ray_cluster.serve" in " ".join(p.cmdline()))
        own = [p.name() for p in service.children(recursive=True)]
        reply = make_client(url, max_retries=0).chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Say yes."}], max_tokens=2)
        during = routes(url)
        found = listeners(ray_head.proc.pid)  # Serve's proxy is a worker of the session head
    assert url.endswith("/judge/v1") and reply.choices[0].message.content is not None
    assert not {"raylet", "gcs_server"} & set(own), own
    assert "/judge" in during
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    http = [row for row in found if row[2] == port]
    assert http and all(is_loopback(ip) for _, ip, _ in http), http
    assert not service.is_running() or service.status() == psutil.STATUS_ZOMBIE
    assert "/judge" not in routes(url)  # the proxy still answers: Serve and the head stayed
    assert ray_head.proc.poll() is None
