"""The judge: rubric, verdict parser, the openai-client call against a fake server in the
real chat-completions wire format, the cache, and TinyFabulist verdict files."""

import json
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.judge import Judge, Rubric, VerdictCache, parse_verdict
from eval.protocol import main
from eval.tinyfabulist import aggregate, read_tinyfabulist
from teacher.client import make_client
from tests.conftest import SHARED, needs_shared

GOOD = {"grammar": 8, "creativity": 6, "consistency": 9, "plot": 7, "age_group": "B"}


def test_a_clean_verdict_parses():
    v, why = parse_verdict(json.dumps(GOOD))
    assert why == "ok" and v.scores == {"grammar": 8, "creativity": 6, "consistency": 9, "plot": 7} and v.age_group == "B"


@pytest.mark.parametrize("text", [
    "Here is my evaluation:\n" + json.dumps(GOOD) + "\nI hope this helps!",  # text around the JSON
    "```json\n" + json.dumps(GOOD, indent=2) + "\n```",  # fenced
    "Sure.\n```\n" + json.dumps(GOOD) + "\n```\nDone.",  # fenced without a language
    json.dumps({**GOOD, "grammar": "8", "plot": 7.0, "age_group": " b "}),  # numeric string, integral float, case
])
def test_accepted_variants(text):
    v, why = parse_verdict(text)
    assert why == "ok" and v.scores["grammar"] == 8 and v.scores["plot"] == 7 and v.age_group == "B"


@pytest.mark.parametrize("text, reason", [
    (None, "empty reply"),
    ("   ", "empty reply"),
    (json.dumps(GOOD)[:-12], "truncated JSON"),
    ('{"grammar": 8, "creativity": 6,', "truncated JSON"),
    ('{"grammar": 8 "creativity": 6}', "malformed JSON"),
    (json.dumps({**GOOD, "creativity": "eight"}), "wrong type for 'creativity'"),
    (json.dumps({**GOOD, "creativity": [6]}), "wrong type for 'creativity'"),
    (json.dumps({**GOOD, "grammar": True}), "wrong type for 'grammar'"),
    (json.dumps({**GOOD, "plot": 7.5}), "wrong type for 'plot'"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "plot"}), "missing score 'plot'"),
    (json.dumps({**GOOD, "grammar": 11}), "score grammar=11 outside 1..10"),
    (json.dumps({**GOOD, "consistency": 0}), "score consistency=0 outside 1..10"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "age_group"}), "missing age_group"),
    (json.dumps({**GOOD, "age_group": "Z"}), "age_group 'Z' is not exactly one of A, B, C, D, E"),
    *[(json.dumps({**GOOD, "age_group": a}), "is not exactly one of")
      for a in ["Baby", "A or B", "B-C", "C, D", "E+", "B (4 to 7)", "BB", 2, ["B"]]],
    (json.dumps({**GOOD, "age_group": " "}), "missing age_group"),
    ('{"grammar": ' + "9" * 5000 + "}", "malformed JSON"),  # past Python's 4,300-digit limit
    ("[" * 5000 + "]" * 5000, "JSON nested 5000 deep"),
    ('{"a": ' * 50 + "1" + "}" * 50, "JSON nested 50 deep"),
    (json.dumps({**GOOD, "note": "x" * 30_000}), "longer than any verdict"),
    ("Error: rate limit exceeded, please retry later.", "an error message instead of a verdict"),
    ("I'm sorry, I cannot evaluate this content.", "an error message instead of a verdict"),
    ('{"error": {"message": "model overloaded", "code": 503}}', "an error message instead of a verdict"),
    ("The fable is lovely. 9/10.", "no JSON object"),
    (json.dumps([GOOD]), "JSON is a list"),
])
def test_refused_with_a_reason(text, reason):
    v, why = parse_verdict(text)
    assert v is None and reason in why, why


def test_brackets_inside_strings_are_not_nesting():
    from eval.judge import json_depth

    assert json_depth(json.dumps({**GOOD, "note": "[[[[{{{{[[[[ \\\" ]]]]"})) == 1
    assert parse_verdict(json.dumps({**GOOD, "note": "{" * 40}))[1] == "ok"


def test_a_criterion_is_added_by_editing_the_rubric(tmp_path):
    base = Rubric.load()
    assert base.names == ["grammar", "creativity", "consistency", "plot"]
    src = (tmp_path / "r.toml")
    text = open(Rubric.load.__globals__["RUBRIC"]).read().replace(
        "[age_groups]", '[[criteria]]\nname = "moral_clarity"\ndescription = "The moral is clear."\n\n[age_groups]')
    src.write_text(text)
    r = Rubric.load(src)
    assert r.names[-1] == "moral_clarity" and r.digest != base.digest
    assert r.json_schema()["required"] == r.names + ["age_group"]
    assert "moral_clarity: The moral is clear." in r.messages("write a fable", "a fable")[1]["content"]
    v, why = parse_verdict(json.dumps(GOOD), r)
    assert v is None and why == "missing score 'moral_clarity'"
    assert parse_verdict(json.dumps({**GOOD, "moral_clarity": 5}), r)[0].scores["moral_clarity"] == 5


def test_bad_rubric_file_is_named(tmp_path):
    (tmp_path / "bad.toml").write_text("name = 'x'\n")
    with pytest.raises(ValueError, match="bad.toml"):
        Rubric.load(tmp_path / "bad.toml")


class FakeChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint (ChatCompletion JSON, as vLLM returns it) whose
    replies come from a queue; a status code in the queue is returned as an error."""

    replies: list = []
    requests: list = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append(body)
        reply = FakeChat.replies.pop(0) if FakeChat.replies else json.dumps(GOOD)
        logprobs = None
        if isinstance(reply, tuple):  # (content, logprobs content) in the OpenAI wire format
            reply, logprobs = reply[0], {"content": reply[1]}
        if reply == 401:  # a server that quotes the key it was sent, without "Bearer "
            key = self.headers["Authorization"].removeprefix("Bearer ")
            data, code = json.dumps({"error": {"message": f"Incorrect API key provided: {key}. Check your key.",
                                               "type": "invalid_request_error"}}).encode(), 401
        elif isinstance(reply, int):
            data, code = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode(), reply
        else:
            data, code = json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                             "message": {"role": "assistant", "content": reply, "tool_calls": []}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def chat_server():
    FakeChat.replies, FakeChat.requests = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


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


def _logprob_tokens(text: str, alternatives: dict[str, dict[str, float]]) -> list[dict]:
    """The wire format of a reply's logprobs, one character per token (digits are single
    tokens for Qwen's tokenizer); `alternatives[name]` is the distribution at name's score."""
    import math
    import re

    tokens = [{"token": ch, "logprob": 0.0, "bytes": None, "top_logprobs": [{"token": ch, "logprob": 0.0, "bytes": None}]}
              for ch in text]
    for name, dist in alternatives.items():
        at = re.search(rf'"{name}"\s*:\s*(\d)', text).start(1)
        tokens[at]["top_logprobs"] = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in dist.items()]
    return tokens


GEVAL_RUBRIC = Path(__file__).resolve().parents[2] / "eval" / "rubrics" / "fable-5.toml"


def test_weighted_scores_are_the_expectation_over_the_scale():
    from eval.judge import weighted_scores

    rubric = Rubric.load(GEVAL_RUBRIC)
    text = json.dumps({"grammar": 4, "creativity": 3, "consistency": 5, "plot": 2, "age_group": "B"})
    dists = {"grammar": {"4": 0.5, "5": 0.25, " 3": 0.25}, "creativity": {"3": 0.6, "x": 0.3, "9": 0.1},
             "consistency": {"5": 1.0}, "plot": {"2": 0.5, "1": 0.5}}
    w = weighted_scores(_logprob_tokens(text, dists), rubric)
    assert w["grammar"] == pytest.approx(4 * 0.5 + 5 * 0.25 + 3 * 0.25)
    assert w["creativity"] == pytest.approx(3.0)  # "x" and the off-scale 9 carry no weight
    assert w["consistency"] == 5.0 and w["plot"] == pytest.approx(1.5)
    assert weighted_scores(_logprob_tokens(text, {}), rubric)["plot"] == 2.0  # only the written token
    no_scale = {**dists, "plot": {"x": 1.0}}
    assert weighted_scores(_logprob_tokens(text, no_scale), rubric) is None
    assert weighted_scores([], rubric) is None


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
        FakeCompletions.requests.append(body)
        n = len(self.token_logprobs)
        data = json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "text": body["prompt"] + " x", "finish_reason": "length",
                                        "logprobs": {"tokens": ["t"] * n, "token_logprobs": self.token_logprobs,
                                                     "text_offset": list(range(n)), "top_logprobs": [None] * n}}],
                           "usage": {"prompt_tokens": n - 1, "completion_tokens": 1, "total_tokens": n}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_ensemble_adds_fluency_from_the_judges_text_loss(tmp_path):
    from eval.judge import FLUENCY, fluency_score

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


def test_ensemble_gate_floors_every_criterion_of_a_text_the_judge_cannot_read():
    from eval.judge import FLUENCY, ensemble_verdict

    rubric = Rubric.load(GEVAL_RUBRIC)
    verdict = {"scores": {"grammar": 4.6, "creativity": 4.0, "consistency": 3.5, "plot": 4.2}, "age_group": "B"}
    salad = ensemble_verdict(verdict, 6.5, rubric, max_text_loss=4.5)
    assert salad["gated"] and set(salad["scores"].values()) == {1.0} and FLUENCY in salad["scores"]
    assert salad["ungated"]["grammar"] == 4.6 and salad["age_group"] == "B"
    prose = ensemble_verdict(verdict, 2.5, rubric, max_text_loss=4.5)
    assert not prose["gated"] and prose["scores"]["grammar"] == 4.6 and prose["scores"][FLUENCY] == pytest.approx(2.5)


@given(st.floats(0, 20), st.floats(0.1, 20))
def test_ensemble_gate_never_ranks_an_unreadable_text_above_a_readable_one(loss, gate):
    from eval.judge import ensemble_verdict
    from eval.stats import overall_score

    rubric = Rubric.load(GEVAL_RUBRIC)
    worst = {"scores": {c: float(rubric.low) for c in rubric.names}}
    best = {"scores": {c: float(rubric.high) for c in rubric.names}}
    readable = ensemble_verdict(worst, min(loss, gate), rubric, gate)
    unreadable = ensemble_verdict(best, gate + 0.01 + loss, rubric, gate)
    assert overall_score({"verdict": readable}) >= overall_score({"verdict": unreadable})


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(["B", 8, "8"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["grammar", "creativity", "consistency", "plot", "age_group", "error"]) | st.text(max_size=5),
        inner, max_size=6),
    max_leaves=30)


@given(reply=st.one_of(
    st.text(max_size=300),
    JSONISH.map(lambda o: json.dumps(o, allow_nan=True)),
    st.builds(lambda o, pre, cut: (pre + json.dumps({**GOOD, **o}))[:cut],
              st.dictionaries(st.sampled_from(list(GOOD)), JSONISH, max_size=3), st.text(max_size=20),
              st.integers(1, 400)),
    st.builds(lambda d, n: "[" * d + "9" * n + "]" * d, st.integers(0, 3000), st.integers(0, 6000)),
))
@settings(max_examples=400, deadline=None)
def test_any_reply_is_a_verdict_in_range_or_a_reason_never_an_exception(reply):
    rubric = Rubric.load()
    v, why = parse_verdict(reply, rubric)
    assert isinstance(why, str) and why
    if v is None:
        assert why != "ok"
    else:
        assert why == "ok" and set(v.scores) == set(rubric.names)
        assert all(type(x) is int and rubric.low <= x <= rubric.high for x in v.scores.values())
        assert v.age_group in dict(rubric.age_groups)


def test_eight_processes_share_one_cache_without_losing_a_verdict(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from eval.judge import VerdictCache; c = VerdictCache(sys.argv[1]); "
            "[(c.put(f'{sys.argv[2]}-{k}', {'verdict': None, 'reason': 'x' * 2000}), c.get(f'0-{k}'), len(c)) "
            "for k in range(100)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache.sqlite"), str(i)],
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]) for i in range(8)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8 and not any(errors), errors
    assert len(VerdictCache(tmp_path / "cache.sqlite")) == 8 * 100


def test_a_damaged_cache_is_set_aside_and_refilled_from_the_verdicts_file(chat_server, tmp_path, capsys):
    cache_file, verdicts = tmp_path / "cache.sqlite", tmp_path / "verdicts.jsonl"
    judge = Judge(make_client(chat_server), "m", Rubric.load(), cache=VerdictCache(cache_file))
    items = [{"prompt": "p", "fable": f"fable {i}"} for i in range(3)]
    verdicts.write_text("".join(json.dumps({**it, **judge.judge(it["prompt"], it["fable"])}) + "\n" for it in items)
                        + '{"torn line\n')
    assert len(FakeChat.requests) == 3
    judge.cache._db.close()
    cache_file.write_bytes(b"this is not a database" * 100)

    rebuilt = VerdictCache(cache_file, recover_from=verdicts)
    err = capsys.readouterr().err
    assert "verdict cache" in err and "was damaged" in err and "3 verdicts restored" in err
    assert len(list(tmp_path.glob("cache.sqlite.damaged-*"))) == 1 and len(rebuilt) == 3
    again = Judge(make_client(chat_server), "m", Rubric.load(), cache=rebuilt)
    assert all(again.judge(it["prompt"], it["fable"])["cached"] for it in items) and len(FakeChat.requests) == 3


def test_a_damaged_record_is_a_miss_not_a_crash(tmp_path):
    cache = VerdictCache(tmp_path / "c.sqlite")
    with cache._db:
        cache._db.execute("INSERT INTO verdicts VALUES (?, ?)", ("k", "{not json"))
    assert cache.get("k") is None
