"""Checklist grading: questions from the prompt's elements, P(yes) from the answer token's
logprobs, criterion scores as weighted means, through a fake server in the wire format."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eval.checklist import age_expected, age_letter, checklist_problem, criterion_scores, p_yes, questions_for
from eval.rubric import RUBRIC_CHECKLIST, Rubric

RUBRIC = Rubric.load(RUBRIC_CHECKLIST)
ELEMENTS = {"character": "elephant", "trait": "trusting", "setting": "a savanna at dusk",
            "conflict": "a drought dries up the water", "resolution": "they share what they have",
            "moral": "be content with what you have"}


def _alts(**probs):
    return [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in probs.items()]


def test_p_yes_reads_every_spelling_of_yes_and_no_and_ignores_the_rest():
    assert p_yes(_alts(Yes=0.6, yes=0.1, No=0.2, maybe=0.1)) == pytest.approx(0.7 / 0.9)
    assert p_yes([{"token": " YES", "logprob": -0.1}, {"token": "no ", "logprob": -2.0}]) > 0.8
    assert p_yes(_alts(maybe=0.5, perhaps=0.5)) is None and p_yes([]) is None


@given(st.floats(1e-6, 1.0), st.floats(1e-6, 1.0), st.floats(1e-6, 1.0))
def test_more_mass_on_yes_never_lowers_p_yes(yes, no, extra):
    before = p_yes(_alts(Yes=yes, No=no))
    after = p_yes(_alts(Yes=yes, No=no, yes=extra))
    assert 0 <= before <= 1 and after >= before - 1e-12


def test_age_letter_is_the_likeliest_letter_of_the_rubric():
    assert age_letter(_alts(B=0.3, C=0.5, Z=0.9), list("ABCDE")) == "C"
    assert age_letter(_alts(b=0.4, **{" B": 0.3}, A=0.5), list("ABCDE")) == "B"
    assert age_letter(_alts(Z=1.0), list("ABCDE")) is None


def test_the_expected_age_weighs_each_letter_by_its_probability():
    # "A" is the letter, yet a quarter of the mass says "E": the expectation shows the lean
    assert age_expected(_alts(A=0.6, E=0.2, Z=0.2), list("ABCDE")) == pytest.approx(0.2 / 0.8 * 4)
    assert age_expected(_alts(b=0.4, **{" B": 0.3}), list("ABCDE")) == pytest.approx(1.0)
    assert age_expected(_alts(Z=1.0), list("ABCDE")) is None


@given(st.lists(st.floats(1e-6, 1.0), min_size=5, max_size=5), st.integers(0, 4), st.floats(1e-6, 1.0))
def test_more_mass_on_a_group_moves_the_expected_age_towards_it(ps, group, extra):
    letters = list("ABCDE")
    before = age_expected(_alts(**dict(zip(letters, ps))), letters)
    after = age_expected(_alts(**dict(zip(letters, ps)), **{f" {letters[group]}": extra}), letters)
    assert 0 <= before <= 4 and 0 <= after <= 4
    assert (after - before) * (group - before) >= -1e-9  # never away from the group given more mass


def test_questions_name_the_prompts_elements_and_skip_those_it_does_not_give():
    full = questions_for(RUBRIC, ELEMENTS)
    assert ("consistency", "Is the main character a trusting elephant?", 1.0) in full and len(full) == 13
    no_trait = questions_for(RUBRIC, {k: v for k, v in ELEMENTS.items() if k != "trait"})  # a TinyFabulist prompt
    assert len(no_trait) == 12 and not any("elephant?" in q for _, q, _ in no_trait)
    bare = questions_for(RUBRIC, {})
    assert {c for c, _, _ in bare} == set(RUBRIC.names)  # every criterion still asked


def test_criterion_scores_span_the_scale():
    answers = [(c, 1.0, 1.0) for c in RUBRIC.names]
    assert criterion_scores(answers, RUBRIC) == {c: 5.0 for c in RUBRIC.names}
    mixed = [("grammar", 1.0, 2.0), ("grammar", 0.0, 1.0)] + [(c, 0.0, 1.0) for c in RUBRIC.names[1:]]
    assert criterion_scores(mixed, RUBRIC)["grammar"] == pytest.approx(1 + 4 * 2 / 3)
    assert criterion_scores(mixed, RUBRIC)["plot"] == 1.0


def test_a_checklist_without_a_plain_question_for_a_criterion_is_refused(tmp_path):
    text = RUBRIC_CHECKLIST.read_text().replace('question = "Does the story do what the instructions ask?"',
                                                'question = "Does the {character} do what the instructions ask?"')
    bad = tmp_path / "r.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=r"criteria \['consistency'\] have no checklist question that names no element"):
        Rubric.load(bad)
    bad.write_text(RUBRIC_CHECKLIST.read_text().replace("{trait} {character}", "{hero}"))
    with pytest.raises(ValueError, match=r"names \['hero'\]"):
        Rubric.load(bad)
    assert checklist_problem(RUBRIC) is None


def _answer(p_yes_value):
    """A reply of one token with its top logprobs, as vLLM returns it."""
    alts = [{"token": "Yes", "logprob": math.log(p_yes_value), "bytes": None},
            {"token": "No", "logprob": math.log(1 - p_yes_value), "bytes": None}]
    return ("Yes", [{"token": "Yes", "logprob": alts[0]["logprob"], "bytes": None, "top_logprobs": alts}])


def test_the_judge_asks_each_question_once_after_the_story_and_caches_the_verdict(chat_server, tmp_path):
    from openai import OpenAI

    from eval.judge import Judge
    from eval.verdict_cache import VerdictCache
    from tests.eval.conftest import FakeChat

    age = ("B", [{"token": "B", "logprob": -0.2, "bytes": None,
                  "top_logprobs": [{"token": "B", "logprob": -0.2, "bytes": None},
                                   {"token": "C", "logprob": -1.8, "bytes": None}]}])
    FakeChat.replies = [_answer(0.9)] * 13 + [age]
    judge = Judge(OpenAI(base_url=chat_server, api_key="x", max_retries=0), "smollm2-135m", RUBRIC,
                  mode="checklist", cache=VerdictCache(tmp_path / "c.sqlite"))
    fable = "Once, a trusting elephant lived on the savanna."
    rec = judge.judge("Write a fable.", fable, {**ELEMENTS, "model": "not an element"})
    assert rec["verdict"]["scores"] == {c: pytest.approx(1 + 4 * 0.9) for c in RUBRIC.names}
    assert rec["verdict"]["age_group"] == "B" and len(rec["verdict"]["answers"]) == 13
    assert len(FakeChat.requests) == 14 and all(r["max_tokens"] == 1 and r["top_logprobs"] == 20 for r in FakeChat.requests)
    user = FakeChat.requests[4]["messages"][-1]["content"]
    assert user.index(fable) < user.index("Is the main character a trusting elephant?")
    assert judge.judge("Write a fable.", fable, ELEMENTS)["cached"] is True and len(FakeChat.requests) == 14
    # judged against other elements (the wrong-prompt control): a different verdict, asked anew
    FakeChat.replies = [_answer(0.2)] * 13 + [age]
    other = judge.judge("Write a fable.", fable, {**ELEMENTS, "character": "crab"})
    assert other["cached"] is False and other["verdict"]["scores"]["consistency"] == pytest.approx(1 + 4 * 0.2)


def test_an_answer_with_neither_yes_nor_no_fails_the_verdict_by_name(chat_server):
    from openai import OpenAI

    from eval.judge import Judge
    from tests.eval.conftest import FakeChat

    FakeChat.replies = [("Maybe", [{"token": "Maybe", "logprob": -0.1, "bytes": None,
                                    "top_logprobs": [{"token": "Maybe", "logprob": -0.1, "bytes": None}]}])]
    judge = Judge(OpenAI(base_url=chat_server, api_key="x", max_retries=0), "m", RUBRIC, mode="checklist")
    rec = judge.judge("p", "a story", ELEMENTS)
    assert rec["verdict"] is None and rec["reason"].startswith("no yes or no among the answer's top tokens to 'Is every")
    with pytest.raises(ValueError, match="judge mode 'checklist' needs a rubric with \\[\\[checklist\\]\\] questions"):
        Judge(OpenAI(base_url=chat_server, api_key="x"), "m", Rubric.load(), mode="checklist")


def test_the_checklist_with_the_fluency_gate_floors_a_text_the_judge_cannot_read(tmp_path):
    """fluency_gate adds the ensemble's fluency criterion and readability gate to the
    checklist's verdict: past max_text_loss nats/token every criterion gets the floor."""
    import threading
    from http.server import ThreadingHTTPServer

    from eval.judge import Judge
    from eval.rubric import FLUENCY
    from teacher.client import make_client
    from tests.eval.conftest import FakeChat
    from tests.eval.test_judge import FakeCompletions

    FakeChat.requests, FakeCompletions.requests = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeCompletions)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    age = ("B", [{"token": "B", "logprob": -0.1, "bytes": None, "top_logprobs": [{"token": "B", "logprob": -0.1}]}])
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        FakeChat.replies = [_answer(0.9)] * 13 + [age]
        readable = Judge(make_client(url), "m", RUBRIC, mode="checklist", fluency_gate=True).judge("p", "a fable", ELEMENTS)
        FakeChat.replies = [_answer(0.9)] * 13 + [age]
        judge = Judge(make_client(url), "m", RUBRIC, mode="checklist", fluency_gate=True, max_text_loss=1.5)
        floored = judge.judge("p", "fable a", ELEMENTS)
    finally:
        srv.shutdown()
    # the fake's text costs 2 nats/token: fluency 5 - 2 = 3; above a 1.5 gate, the floor
    assert readable["verdict"]["scores"][FLUENCY] == pytest.approx(3.0) and readable["verdict"]["gated"] is False
    assert readable["verdict"]["scores"]["plot"] == pytest.approx(1 + 4 * 0.9)
    assert floored["verdict"]["gated"] is True and set(floored["verdict"]["scores"].values()) == {1.0}
    assert floored["judge"]["fluency_gate"] is True and len(FakeCompletions.requests) == 2
