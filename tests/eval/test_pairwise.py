"""Pairwise judging: each criterion as P(the fable beats its reference), both orders to cancel
position bias, through a fake server in the wire format."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eval.pairwise import beats, p_first, pairwise_problem, questions, scores, with_references
from eval.rubric import RUBRIC_PAIRWISE, Rubric

RUBRIC = Rubric.load(RUBRIC_PAIRWISE)


def _letter(p_a):
    """A reply of one token with its top logprobs, as vLLM returns it."""
    alts = [{"token": "A", "logprob": math.log(p_a), "bytes": None},
            {"token": " B", "logprob": math.log(1 - p_a), "bytes": None},
            {"token": "The", "logprob": math.log(1e-3), "bytes": None}]
    return ("A", [{"token": "A", "logprob": alts[0]["logprob"], "bytes": None, "top_logprobs": alts}])


AGE = ("B", [{"token": "B", "logprob": -0.2, "bytes": None, "top_logprobs": [{"token": "B", "logprob": -0.2, "bytes": None}]}])


def test_p_first_reads_both_letters_and_ignores_the_rest():
    assert p_first(_letter(0.8)[1][0]["top_logprobs"]) == pytest.approx(0.8)
    assert p_first([{"token": "The", "logprob": -0.1}]) is None


@given(a=st.floats(0, 1), b=st.floats(0, 1))
def test_a_judge_that_always_picks_the_first_story_calls_it_a_tie(a, b):
    assert beats(1.0, 1.0) == 0.5 and beats(0.0, 0.0) == 0.5  # pure position bias cancels
    assert 0 <= beats(a, b) <= 1 and beats(a, b) + beats(b, a) == pytest.approx(1.0)  # the two sides' wins add to one


def test_scores_put_the_reference_against_itself_at_the_midpoint():
    assert scores({c: 0.5 for c in RUBRIC.names}, RUBRIC) == {c: 3.0 for c in RUBRIC.names}
    assert scores({c: 1.0 for c in RUBRIC.names}, RUBRIC) == {c: 5.0 for c in RUBRIC.names}


def test_every_criterion_gets_its_question():
    asked = questions(RUBRIC)
    assert [c for c, _ in asked] == RUBRIC.names and all(q.endswith("Answer with one letter: A or B.") for _, q in asked)


def test_a_pair_template_without_both_stories_is_refused(tmp_path):
    text = RUBRIC_PAIRWISE.read_text().replace("{second}", "")
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(ValueError, match=r"template.pair must name \{prompt\}, \{first\}, \{second\} and \{question\}"):
        Rubric.load(tmp_path / "r.toml")
    assert pairwise_problem(RUBRIC) is None


def test_references_follow_the_prompt_a_fable_is_judged_against():
    items = [{"model": "t", "role": "teacher", "prompt": "P1", "prompt_id": "1", "sample": 0, "fable": "t1"},
             {"model": "t", "role": "teacher", "prompt": "P1", "prompt_id": "1", "sample": 1, "fable": "t1b"},
             {"model": "t", "role": "teacher", "prompt": "P2", "prompt_id": "2", "sample": 0, "fable": "t2"},
             {"model": "s", "role": "kd", "prompt": "P1", "prompt_id": "1", "sample": 1, "fable": "s1"},
             {"model": "s", "role": "kd", "prompt": "P3", "prompt_id": "3", "sample": 0, "fable": "s3"},
             # t's fable for P1 judged against P2 (the wrong-prompt control): against t's fable for P2
             {"model": "t (wrong prompt)", "role": "control", "prompt": "P2", "prompt_id": "1", "sample": 0,
              "fable": "t1"},
             {"model": "t (shuffled)", "role": "control", "prompt": "P1", "prompt_id": "1", "sample": 0, "fable": "1t"}]
    refs = [it["reference"] for it in with_references(items, "t")]
    assert refs == ["t1", "t1", "t2", "t1", None, "t2", "t1"]


def test_the_judge_asks_both_orders_per_criterion_then_the_age(chat_server, tmp_path):
    from openai import OpenAI

    from eval.judge import Judge
    from eval.verdict_cache import VerdictCache
    from tests.eval.conftest import FakeChat

    # A judge biased to the first story: 0.9 for A when the fable is A, 0.7 when the reference is.
    FakeChat.replies = [_letter(0.9), _letter(0.7)] * 4 + [AGE]
    judge = Judge(OpenAI(base_url=chat_server, api_key="x", max_retries=0), "m", RUBRIC, mode="pairwise",
                  cache=VerdictCache(tmp_path / "c.sqlite"))
    item = {"reference": "The reference fable.", "character": "fox"}
    rec = judge.judge("Write a fable.", "The judged fable.", item)
    assert rec["verdict"]["wins"] == {c: pytest.approx(0.6) for c in RUBRIC.names}  # (0.9 + 1 - 0.7) / 2
    assert rec["verdict"]["scores"] == {c: pytest.approx(1 + 4 * 0.6) for c in RUBRIC.names}
    assert rec["verdict"]["age_group"] == "B" and len(FakeChat.requests) == 9
    first, second = (r["messages"][-1]["content"] for r in FakeChat.requests[:2])
    assert first.index("The judged fable.") < first.index("The reference fable.")
    assert second.index("The reference fable.") < second.index("The judged fable.")
    assert "The reference fable." not in FakeChat.requests[-1]["messages"][-1]["content"]  # the age: the fable alone
    assert judge.judge("Write a fable.", "The judged fable.", item)["cached"] is True and len(FakeChat.requests) == 9
    # against another reference: a different verdict, asked anew
    FakeChat.replies = [_letter(0.1), _letter(0.9)] * 4 + [AGE]
    other = judge.judge("Write a fable.", "The judged fable.", {"reference": "Another."})
    assert other["cached"] is False and other["verdict"]["wins"]["plot"] == pytest.approx(0.1)


def test_the_reference_itself_scores_the_midpoint_without_a_pair(chat_server):
    from openai import OpenAI

    from eval.judge import Judge
    from tests.eval.conftest import FakeChat

    FakeChat.replies = [AGE]
    judge = Judge(OpenAI(base_url=chat_server, api_key="x", max_retries=0), "m", RUBRIC, mode="pairwise")
    rec = judge.judge("p", "Same fable. ", {"reference": "Same fable."})
    assert rec["verdict"]["scores"] == {c: 3.0 for c in RUBRIC.names} and len(FakeChat.requests) == 1


def test_no_reference_or_no_letter_fails_the_verdict_by_name(chat_server):
    from openai import OpenAI

    from eval.judge import Judge
    from tests.eval.conftest import FakeChat

    judge = Judge(OpenAI(base_url=chat_server, api_key="x", max_retries=0), "m", RUBRIC, mode="pairwise")
    rec = judge.judge("p", "a story", {"reference": None})
    assert rec["verdict"] is None and rec["reason"] == "pairwise: no reference fable for this prompt"
    assert not FakeChat.requests
    FakeChat.replies = [("Maybe", [{"token": "Maybe", "logprob": -0.1, "bytes": None,
                                    "top_logprobs": [{"token": "Maybe", "logprob": -0.1, "bytes": None}]}])]
    rec = judge.judge("p", "a story", {"reference": "another story"})
    assert rec["verdict"] is None and rec["reason"].startswith("no A or B among the answer's top tokens to 'Which story")
    with pytest.raises(ValueError, match="judge mode 'pairwise' needs a rubric with template.pair"):
        Judge(OpenAI(base_url=chat_server, api_key="x"), "m", Rubric.load(), mode="pairwise")
