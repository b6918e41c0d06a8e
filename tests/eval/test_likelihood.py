"""Likelihood grading: the judge's nats on the fable alone and on its prompt and the fable
after it, read from echoed prompt logprobs (the completions wire format, text offsets
included), mapped onto the scale, and the judge mode that asks for them and the age group."""

import math
import threading
from dataclasses import replace
from http.server import ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eval.likelihood import (CLOSE, END_WEIGHT, GO_ON, PMI_SCALE, likelihood_problem, likelihood_scores, per_token,
                             plot_loss, read_nats, with_close)
from eval.rubric import RUBRIC_CHECKLIST, Rubric, criteria_names
from tests.eval.test_checklist import ELEMENTS
from tests.eval.test_judge import FakeCompletions

RUBRIC = Rubric.load(RUBRIC_CHECKLIST)


def test_the_nats_are_split_at_the_fables_start_and_the_generated_token_dropped():
    # "Write.\n\n" (two tokens, the first without a logprob), the fable's two tokens, the generated one
    logprobs, offsets = [None, -1.0, -2.0, -4.0, -9.0], [0, 5, 8, 12, 20]
    assert read_nats(logprobs, offsets) == {"before": 0.0, "after": pytest.approx(7.0), "tokens": 3}
    assert read_nats(logprobs, offsets, start=8) == {"before": pytest.approx(1.0), "after": pytest.approx(6.0),
                                                     "tokens": 2}
    assert read_nats(logprobs, offsets, start=13) is None  # nothing of the text left
    assert read_nats([None, -1.0, float("-inf"), -0.5], [0, 1, 2, 3]) is None
    assert read_nats([None, float("nan"), -1.0, -0.5], [0, 1, 2, 3], start=2) is None  # in the prompt too
    assert read_nats([], []) is None


def test_the_close_is_split_from_the_fable_where_it_starts():
    # "Write.\n\n", the fable's two tokens, the close's two ("\n\nThe", " End."), the generated one
    logprobs, offsets = [None, -1.0, -2.0, -4.0, -3.0, -5.0, -9.0], [0, 5, 8, 12, 16, 21, 26]
    n = read_nats(logprobs, offsets, start=8, end=16)
    assert n == {"before": pytest.approx(1.0), "after": pytest.approx(6.0), "tokens": 2, "close": pytest.approx(8.0),
                 "close_tokens": 2}
    assert per_token(n) == pytest.approx(3.0)
    # a token that straddles the fable's end (".\n\n" merged by the tokenizer) stays the fable's
    assert read_nats(logprobs, offsets, start=8, end=14)["tokens"] == 2
    assert read_nats(logprobs, offsets, start=8, end=8) is None  # no fable between them
    whole = read_nats(logprobs, offsets, start=8)  # no end: no close, the text's own mean
    assert "close" not in whole and per_token(whole) == pytest.approx(14.0 / 4)


@given(st.floats(0.0, 12.0), st.floats(0.0, 12.0), st.floats(0.0, 30.0), st.floats(0.0, 30.0), st.floats(0.01, 20.0))
def test_a_judge_that_would_rather_go_on_lowers_the_plot_and_nothing_else(u, p, close, go_on, d):
    """A fable broken off mid-way: the judge expects a next line more than an ending there."""
    whole = likelihood_scores(u, p, 200.0, 80.0, RUBRIC, 4.5, plot=plot_loss(p, close, go_on))
    broken = likelihood_scores(u, p, 200.0, 80.0, RUBRIC, 4.5, plot=plot_loss(p, close + d, go_on))
    assert broken["plot"] <= whole["plot"] and {c: v for c, v in broken.items() if c != "plot"} == \
        {c: v for c, v in whole.items() if c != "plot"}
    # the difference counts, not the close alone: both dearer alike (a text stopped mid-sentence), no change
    assert plot_loss(p, close + d, go_on + d) == pytest.approx(plot_loss(p, close, go_on))
    assert plot_loss(p, 10.0, 10.0) == p and plot_loss(p, 15.0, 10.0) == pytest.approx(p + 5 * END_WEIGHT)
    assert likelihood_scores(u, p, 200.0, 80.0, RUBRIC, 4.5, plot=p) == likelihood_scores(u, p, 200.0, 80.0, RUBRIC, 4.5)


@given(st.floats(0.0, 12.0), st.floats(0.0, 12.0), st.floats(0.0, 5e3), st.floats(0.0, 5e3), st.floats(0.01, 3.0))
def test_scores_stay_on_the_scale_and_move_the_right_way(u, p, f, q, d):
    s = likelihood_scores(u, p, f, q, RUBRIC, 4.5)
    assert set(s) == set(RUBRIC.names) and all(RUBRIC.low <= v <= RUBRIC.high for v in s.values())
    worse_text = likelihood_scores(u + d, p + d, f, q, RUBRIC, 4.5)  # both losses up: an injected error
    assert worse_text["grammar"] <= s["grammar"] and worse_text["plot"] <= s["plot"]
    other_prompt = likelihood_scores(u, p + d, f, q, RUBRIC, 4.5)  # the prompt helps less: another prompt's fable
    assert other_prompt["consistency"] <= s["consistency"] and other_prompt["grammar"] == s["grammar"]
    # a fable that adds more beyond the same prompt (more events, less predictable from it): no less creative
    assert likelihood_scores(u, p, f + 100 * d, q, RUBRIC, 4.5)["creativity"] >= s["creativity"]
    assert likelihood_scores(u, p, f, q + 100 * d, RUBRIC, 4.5)["creativity"] <= s["creativity"]


def test_the_scale_is_anchored_where_the_docstring_says():
    mid = (RUBRIC.low + RUBRIC.high) / 2
    s = likelihood_scores(4.5, 4.5, 80.0, 80.0, RUBRIC, 4.5)  # at the gate, no PMI, the fable adds what the prompt has
    assert s == {c: pytest.approx(mid) for c in RUBRIC.names}
    one = likelihood_scores(3.5, 3.5 - PMI_SCALE, 80.0 * math.e, 80.0, RUBRIC, 4.5)  # each a logit up
    up = RUBRIC.low + 4 / (1 + math.exp(-1))
    assert one == {c: pytest.approx(up) for c in ("grammar", "consistency", "creativity")} | {"plot": one["plot"]}


def test_a_rubric_without_the_likelihood_criteria_is_refused_by_name():
    assert likelihood_problem(RUBRIC) is None
    no_plot = replace(RUBRIC, criteria=tuple(c for c in RUBRIC.criteria if c[0] != "plot"))
    assert likelihood_problem(no_plot).endswith("rubric fable-checklist has no plot")
    assert "has none" in likelihood_problem(Rubric.load(RUBRIC_CHECKLIST.parent / "fable-5.toml"))


class WordCompletions(FakeCompletions):
    """/v1/completions with echo: one token per word of the prompt with its real character
    offset, each word costing ALONE nats, or AFTER nats once the text holds a blank line (the
    prompt before it), then one generated token; chat requests go to the chat fake."""

    requests: list = []
    ALONE, AFTER = 3.0, 2.5

    def echoed(self, text: str) -> tuple[list, list[int]]:
        offsets, at = [], 0
        for word in text.split(" "):
            offsets.append(at)
            at += len(word) + 1
        cost = self.AFTER if "\n\n" in text else self.ALONE
        return [None] + [-cost] * (len(offsets) - 1) + [-0.5], offsets + [len(text)]


@pytest.fixture
def word_server():
    from tests.eval.conftest import FakeChat

    FakeChat.requests, WordCompletions.requests = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), WordCompletions)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


AGE = ("B", [{"token": "B", "logprob": -0.1, "bytes": None, "top_logprobs": [{"token": "B", "logprob": -0.1}]}])


def test_the_judge_reads_four_criteria_from_likelihoods_and_asks_only_the_age(word_server, tmp_path):
    from eval.judge import Judge
    from eval.verdict_cache import VerdictCache
    from teacher.client import make_client
    from tests.eval.conftest import FakeChat

    FakeChat.replies = [AGE]
    judge = Judge(make_client(word_server), "m", RUBRIC, mode="likelihood", cache=VerdictCache(tmp_path / "c.sqlite"))
    fable = "  Once a trusting elephant shared the last water.  "
    rec = judge.judge("Write a fable.", fable, ELEMENTS)
    alone, after, go_on = WordCompletions.requests
    assert alone["prompt"] == fable.strip() and alone["echo"] is True and alone["max_tokens"] == 1
    assert after["prompt"] == "Write a fable.\n\n" + fable.strip() + CLOSE
    assert go_on["prompt"] == "Write a fable.\n\n" + fable.strip() + GO_ON
    v = rec["verdict"]
    assert v["text_loss"] == pytest.approx(3.0) and v["loss_after_prompt"] == pytest.approx(2.5)
    # the words "a" and "fable.\n\nOnce" start before the fable (the prompt's first word has no logprob);
    # the seven from "a" on are the fable's ("water.\n\nThe" starts in it), "End." is the close's,
    # "next day," the next line's: one word against two
    assert v["prompt_nats"] == pytest.approx(2 * 2.5) and v["fable_nats"] == pytest.approx(7 * 2.5)
    assert v["close_nats"] == pytest.approx(2.5) and v["go_on_nats"] == pytest.approx(5.0)
    assert v["plot_loss"] == pytest.approx(2.5 - 2.5 * END_WEIGHT)
    assert v["scores"] == pytest.approx(likelihood_scores(3.0, 2.5, 7 * 2.5, 2 * 2.5, RUBRIC, 4.5, v["plot_loss"]))
    assert v["age_group"] == "B" and v["age_expected"] == pytest.approx(1.0)
    assert "gated" not in v and rec["reason"] == "likelihood"  # no gate unless asked
    # only the age question went to the chat endpoint
    assert len(FakeChat.requests) == 1 and "age group" in FakeChat.requests[0]["messages"][-1]["content"]
    assert judge.judge("Write a fable.", fable, ELEMENTS)["cached"] is True and len(WordCompletions.requests) == 3
    assert rec["judge"]["mode"] == "likelihood" and "fluency_gate" not in rec["judge"]
    assert rec["judge"]["method"] == "u, u-p, p+w(end-go on), F/(F+P)"  # verdicts read another way are not reused


def test_a_fable_that_closes_itself_is_read_with_its_own_close_not_a_second_one(word_server):
    from eval.judge import Judge
    from teacher.client import make_client
    from tests.eval.conftest import FakeChat

    FakeChat.replies = [AGE]
    WordCompletions.requests = []
    fable = "Once a trusting elephant shared the last water.\n\nThe end."
    rec = Judge(make_client(word_server), "m", RUBRIC, mode="likelihood").judge("Write a fable.", fable, ELEMENTS)
    _, after, go_on = WordCompletions.requests
    assert after["prompt"] == "Write a fable.\n\n" + fable  # no CLOSE after it
    assert go_on["prompt"] == "Write a fable.\n\n" + fable[:-len("\n\nThe end.")] + GO_ON  # in place of its own
    # the same seven words as the fable above ("water.\n\nThe" starts in it); "end." is its close
    assert rec["verdict"]["fable_nats"] == pytest.approx(7 * 2.5)


@pytest.mark.parametrize("fable, close_at", [
    ("A fox ran. The end.", len("A fox ran.")),
    ("A fox ran.\n\n**THE END!**", len("A fox ran.")),
    ("He said \"go.\" The End", len('He said "go."')),
    ("He ran.\nthe  end", len("He ran.")),
])
def test_a_close_the_fable_wrote_is_its_close(fable, close_at):
    assert with_close(fable) == (fable, close_at)


@pytest.mark.parametrize("fable", ["She stayed until the end.", "The End.", "Nothing ends here", "It was the endless sea."])
def test_a_fable_without_a_close_of_its_own_gets_the_close_after_it(fable):
    assert with_close(fable) == (fable + CLOSE, len(fable))


@given(st.text())
def test_the_fable_is_never_changed_and_an_own_close_never_takes_all_of_it(text):
    body = text.strip()
    whole, at = with_close(text)
    assert whole in (body, body + CLOSE) and whole[:at] == body[:at]
    if whole == body:  # its own close: some of the fable comes before it
        assert body[:at].strip() and at < len(body)
    else:
        assert at == len(body)


def test_with_the_gate_on_a_text_past_it_gets_the_floor_and_no_fluency_criterion(word_server):
    from eval.judge import Judge
    from teacher.client import make_client
    from tests.eval.conftest import FakeChat

    FakeChat.replies = [AGE]
    rec = Judge(make_client(word_server), "m", RUBRIC, mode="likelihood", fluency_gate=True,
                max_text_loss=2.8).judge("p", "a b c d", ELEMENTS)
    assert rec["verdict"]["gated"] is True and set(rec["verdict"]["scores"].values()) == {1.0}
    # read after "p\n\n", all of the nats are the fable's: the top of the scale, floored by the gate
    assert rec["verdict"]["ungated"]["creativity"] == pytest.approx(5.0)
    assert rec["judge"]["fluency_gate"] is True and set(rec["verdict"]["scores"]) == set(RUBRIC.names)
    assert criteria_names(RUBRIC, "likelihood", True) == RUBRIC.names


def test_an_endpoint_without_prompt_logprobs_fails_the_verdict_with_what_it_needs(chat_server):
    """The chat fake answers completions without prompt logprobs (as a chat-only API judge
    would): the verdict fails, saying what the mode needs; a judge mode that cannot work
    with the rubric is refused when it is built."""
    from openai import OpenAI

    from eval.judge import Judge

    rec = Judge(OpenAI(base_url=chat_server, api_key="x", max_retries=0), "m", RUBRIC, mode="likelihood").judge(
        "p", "a story", ELEMENTS)
    assert rec["verdict"] is None and "needs completions with echo and logprobs" in rec["reason"]
    with pytest.raises(ValueError, match="rubric fable-5 has none"):
        Judge(OpenAI(base_url=chat_server, api_key="x"), "m", Rubric.load(RUBRIC_CHECKLIST.parent / "fable-5.toml"),
              mode="likelihood")
