"""The judge: the openai-client call against a fake server in the real chat-completions
wire format, its modes, and the aggregate of TinyFabulist verdict files."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eval.judge import Judge
from eval.protocol import main
from eval.rubric import FLUENCY, Rubric
from eval.tinyfabulist import aggregate, read_tinyfabulist
from eval.verdict import fluency_score
from eval.verdict_cache import VerdictCache
from teacher.client import make_client
from tests.conftest import SHARED, needs_shared
from tests.eval.conftest import GOOD, FakeChat
from tests.eval.test_verdict import GEVAL_RUBRIC, _logprob_tokens


def test_credentials_in_the_judges_url_reach_no_record_and_no_cache_file(chat_server, tmp_path):
    url = chat_server.replace("http://", "http://judge-user:pw-secret-1@")
    cache = VerdictCache(tmp_path / "cache.sqlite")
    rec = Judge(make_client(url), "judge-model", Rubric.load(), cache=cache).judge("p", "Once upon a time…")
    assert rec["reason"] == "ok" and rec["judge"]["base_url"].startswith("http://[REDACTED]@127.0.0.1:")
    files = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"pw-secret-1" not in files and "pw-secret-1" not in json.dumps(rec)
    keyed = Judge(make_client(chat_server + "?api-key=key-secret-2&api-version=1"), "m", Rubric.load())
    assert "key-secret-2" not in json.dumps(keyed.settings()) and "api-version=1" in keyed.settings()["base_url"]


def test_judge_asks_for_schema_output_caches_and_records_its_settings(chat_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-recorded")
    cache = VerdictCache(tmp_path / "cache.sqlite")
    judge = Judge(make_client(chat_server), "judge-model", Rubric.load(), cache=cache)
    rec = judge.judge("Write a fable about a fox.", "Once upon a time…")
    assert rec["verdict"]["scores"]["grammar"] == 8 and rec["reason"] == "ok" and not rec["cached"]
    req = FakeChat.requests[-1]
    assert req["model"] == "judge-model" and req["temperature"] == 0.0
    assert req["response_format"]["type"] == "json_schema"
    assert req["response_format"]["json_schema"]["schema"]["required"][-1] == "age_group"
    assert "Write a fable about a fox." in req["messages"][1]["content"]
    assert rec["judge"]["model"] == "judge-model" and rec["judge"]["rubric_digest"] == Rubric.load().digest
    assert "sk-never" not in json.dumps(rec) and "sk-never" not in (tmp_path / "cache.sqlite").read_bytes().decode("latin1")
    # the same (judge, rubric, prompt, fable) again: from the cache, no request
    again = Judge(make_client(chat_server), "judge-model", Rubric.load(), cache=VerdictCache(tmp_path / "cache.sqlite"))
    assert again.judge("Write a fable about a fox.", "Once upon a time…")["cached"] and len(FakeChat.requests) == 1
    # another fable or another judge setting is a new verdict
    judge.judge("Write a fable about a fox.", "Another fable.")
    Judge(make_client(chat_server), "judge-model", Rubric.load(), temperature=0.7, cache=cache).judge(
        "Write a fable about a fox.", "Once upon a time…")
    assert len(FakeChat.requests) == 3 and len(cache) == 3


def test_garbage_is_a_counted_failure_and_transient_errors_are_retried(chat_server, tmp_path):
    FakeChat.replies = ["I think it deserves a B+.", 503, json.dumps(GOOD)]
    judge = Judge(make_client(chat_server, max_retries=2), "m", Rubric.load(), cache=VerdictCache(tmp_path / "c.sqlite"))
    bad = judge.judge("p", "garbage fable")
    assert bad["verdict"] is None and bad["reason"].startswith("no JSON object") and bad["raw"] == "I think it deserves a B+."
    ok = judge.judge("p", "second fable")  # a 503 first: the client backs off and asks again
    assert ok["verdict"] is not None and len(FakeChat.requests) == 3


def test_a_request_that_keeps_failing_is_a_failure_not_a_crash(chat_server):
    FakeChat.replies = [500, 500]
    rec = Judge(make_client(chat_server, max_retries=1), "m", Rubric.load()).judge("p", "f")
    assert rec["verdict"] is None and rec["reason"].startswith("request failed: InternalServerError")


@pytest.mark.parametrize("key", ["sk-proj-" + "Ab3" * 16, "a-local-server-secret-12345"])
def test_an_endpoint_that_echoes_the_key_records_no_key(chat_server, tmp_path, monkeypatch, key):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    FakeChat.replies = [401]
    rec = Judge(make_client(chat_server, max_retries=0), "m", Rubric.load()).judge("p", "f")
    assert rec["verdict"] is None and rec["reason"].startswith("request failed: AuthenticationError")
    assert "Incorrect API key provided: [REDACTED]" in rec["reason"]
    assert key[:8] not in json.dumps(rec)  # not even the part a clip would have kept


def test_aggregate_counts_and_means(tmp_path):
    lines = [{"llm_name": m, "hash": str(i), "evaluation": {"grammar": g, "creativity": 5, "moral_clarity": 6,
                                                            "adherence_to_prompt": 7}}
             for i, (m, g) in enumerate([("a", 8), ("a", 10), ("b", 4)])]
    f = tmp_path / "v.jsonl"
    f.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    table = aggregate(read_tinyfabulist(f))
    assert table["a"]["count"] == 2 and table["a"]["means"]["grammar"] == 9.0
    assert table["a"]["mean"] == pytest.approx((9 + 5 + 6 + 7) / 4) and table["b"]["means"]["grammar"] == 4.0
    f.write_text(json.dumps(lines[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"v.jsonl:2: not a TinyFabulist verdict"):
        read_tinyfabulist(f)


PUBLISHED = {  # grammar / creativity / moral clarity / adherence / mean, from shared/data/tinyfabulist/README.md
    "mistralai/Mistral-7B-Instruct-v0.3": (8.77, 7.18, 8.80, 8.53, 8.32),
    "meta-llama/Llama-3.1-8B-Instruct": (8.69, 7.23, 8.47, 8.70, 8.27),
    "tiiuae/Falcon3-7B-Instruct": (8.88, 7.56, 8.89, 8.95, 8.57),
}


@needs_shared
def test_aggregate_reproduces_the_published_tinyfabulist_means(capsys):
    files = sorted(str(p) for p in (SHARED / "data" / "tinyfabulist").glob("judged-*.jsonl"))
    assert main(["aggregate", "--input", *files, "--format", "tinyfabulist", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == set(PUBLISHED)
    for model, (g, c, m, a, mean) in PUBLISHED.items():
        t = table[model]
        assert t["count"] == 100
        got = [t["means"][k] for k in ("grammar", "creativity", "moral_clarity", "adherence_to_prompt")] + [t["mean"]]
        assert [round(x, 2) for x in got] == [g, c, m, a, mean]
    assert main(["aggregate", "--input", *files]) == 0
    assert "| mistralai/Mistral-7B-Instruct-v0.3 | 100 | 8.77 | 7.18 | 8.80 | 8.53 | 8.32 |" in capsys.readouterr().out


def test_geval_judge_asks_for_logprobs_and_records_weighted_and_written_scores(chat_server, tmp_path):
    rubric = Rubric.load(GEVAL_RUBRIC)
    text = json.dumps({"grammar": 4, "creativity": 3, "consistency": 5, "plot": 2, "age_group": "B"})
    FakeChat.replies = [(text, _logprob_tokens(text, {"grammar": {"4": 0.5, "5": 0.5}})), text]
    judge = Judge(make_client(chat_server), "m", rubric, cache=VerdictCache(tmp_path / "c.sqlite"), mode="geval")
    rec = judge.judge("p", "a fable")
    req = FakeChat.requests[-1]
    assert req["logprobs"] is True and req["top_logprobs"] == 20
    assert rec["verdict"]["scores"]["grammar"] == pytest.approx(4.5) and rec["verdict"]["written"]["grammar"] == 4
    assert rec["judge"]["mode"] == "geval"
    missing = judge.judge("p", "another fable")  # a server that returns no logprobs: a counted failure
    assert missing["verdict"] is None and "logprobs" in missing["reason"]
    with pytest.raises(ValueError, match="single digits"):
        Judge(make_client(chat_server), "m", Rubric.load(), mode="geval")


class FakeCompletions(BaseHTTPRequestHandler):
    """/v1/completions with echo + logprobs, in vLLM's wire format: the prompt's token logprobs
    (the first is null), then the one generated token's."""

    requests: list = []
    token_logprobs: list = [None, -2.0, -3.0, -1.0, -0.5]

    def log_message(self, *a):
        pass

    def do_POST(self):
        if self.path.endswith("/chat/completions"):  # route before reading: the chat fake reads the body
            FakeChat.do_POST(self)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        logprobs, offsets = self.echoed(body["prompt"])
        n = len(logprobs)
        data = json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "text": body["prompt"] + " x", "finish_reason": "length",
                                        "logprobs": {"tokens": ["t"] * n, "token_logprobs": logprobs,
                                                     "text_offset": offsets, "top_logprobs": [None] * n}}],
                           "usage": {"prompt_tokens": n - 1, "completion_tokens": 1, "total_tokens": n}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def echoed(self, text: str) -> tuple[list, list[int]]:
        """The echoed tokens' logprobs (the generated one last) and character offsets."""
        return self.token_logprobs, list(range(len(self.token_logprobs)))


def test_ensemble_adds_fluency_from_the_judges_text_loss(tmp_path):
    FakeChat.replies, FakeChat.requests, FakeCompletions.requests = [], [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeCompletions)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        rubric = Rubric.load(GEVAL_RUBRIC)
        text = json.dumps({"grammar": 4, "creativity": 3, "consistency": 5, "plot": 2, "age_group": "B"})
        FakeChat.replies = [(text, _logprob_tokens(text, {}))]
        judge = Judge(make_client(f"http://127.0.0.1:{srv.server_address[1]}/v1"), "m", rubric,
                      cache=VerdictCache(tmp_path / "c.sqlite"), mode="ensemble")
        rec = judge.judge("p", "  a fable  ")
    finally:
        srv.shutdown()
    req = FakeCompletions.requests[-1]
    assert req["echo"] is True and req["logprobs"] == 0 and req["max_tokens"] == 1 and req["prompt"] == "a fable"
    # prompt tokens' logprobs -2, -3, -1 (the null first and the generated -0.5 are not the text's): 2 nats/token
    assert rec["verdict"]["text_loss"] == pytest.approx(2.0)
    assert rec["verdict"]["scores"][FLUENCY] == pytest.approx(3.0) and rec["verdict"]["scores"]["grammar"] == 4.0
    assert fluency_score(9.0, rubric) == 1 and fluency_score(-1.0, rubric) == 5
    assert rec["verdict"]["gated"] is False and rec["judge"]["max_text_loss"] == 4.5
