"""The openai-client helpers against a fake vLLM server speaking the real wire format
(CompletionResponse with echo + logprobs, tokens as 'token_id:<id>'). The real server
is exercised in tests/ray_cluster/test_serve.py."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from teacher.client import describe, make_client, score_topk


def vllm_echo_response(model, token_ids, k):
    """What vLLM's /v1/completions returns for echo=True, max_tokens=0, logprobs=k,
    return_tokens_as_token_ids=True: the first position has no logprobs. vLLM adds the
    scored token when it ranks below k (k+1 entries); this fake also caps entries at 4,
    to exercise an endpoint that answers with fewer than asked."""
    top = [None] + [{f"token_id:{(t * 7 + j) % 100}": -0.5 * (j + 1) - 0.01 * i for j in range(min(k + (i % 2), 4))}
                    for i, t in enumerate(token_ids[1:], 1)]
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": model,
            "choices": [{"index": 0, "text": "echoed", "finish_reason": "length", "stop_reason": None,
                         "prompt_logprobs": None,
                         "logprobs": {"text_offset": list(range(len(token_ids))),
                                      "token_logprobs": [None] + [-1.0] * (len(token_ids) - 1),
                                      "tokens": [f"token_id:{t}" for t in token_ids], "top_logprobs": top}}],
            "usage": {"prompt_tokens": len(token_ids), "total_tokens": len(token_ids), "completion_tokens": 0}}


class FakeVLLM(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *a):
        pass

    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "smollm2-135m", "object": "model", "created": 0, "owned_by": "vllm"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVLLM.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        self._send(vllm_echo_response(body["model"], body["prompt"], body["logprobs"]))


@pytest.fixture
def fake_server():
    FakeVLLM.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLLM)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_score_topk_asks_for_echoed_prompt_logprobs_and_aligns_them(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test")
    client = make_client(fake_server)
    ids, lps = score_topk(client, "smollm2-135m", [5, 6, 7], [8, 9], top_k=3)
    req = FakeVLLM.requests[-1]
    assert req["path"] == "/v1/completions" and req["auth"] == "Bearer sk-secret-test"
    b = req["body"]
    assert b["prompt"] == [5, 6, 7, 8, 9] and b["echo"] is True and b["max_tokens"] == 0 and b["logprobs"] == 3
    assert b["return_tokens_as_token_ids"] is True
    # positions 3 and 4 of the echo hold the teacher's distribution for tokens 8 and 9
    assert ids == [[(8 * 7 + j) % 100 for j in range(3)], [(9 * 7 + j) % 100 for j in range(3)]]
    assert lps[0] == pytest.approx([-0.53, -1.03, -1.53]) and lps[1] == pytest.approx([-0.54, -1.04, -1.54])
    assert "sk-secret" not in json.dumps(describe(client))


def test_score_topk_refuses_short_answers(fake_server):
    with pytest.raises(ValueError, match="4 logprobs at position 3, asked for 5"):
        score_topk(make_client(fake_server), "smollm2-135m", [5, 6, 7], [8], top_k=5)
