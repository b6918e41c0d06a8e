"""The verdict parser, G-Eval's weighted scores and the ensemble mode's readability gate:
pure functions over a judge's reply, no server."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.rubric import FLUENCY, Rubric
from eval.verdict import ensemble_verdict, json_depth, parse_verdict, weighted_scores
from tests.eval.conftest import GOOD




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
    ('"' + "[" * 2000 + "]" * 2000, "JSON nested 2000 deep"),  # a quote before the nesting
    ('He said "fine. {"a": ' + '{"a": ' * 2000 + "1" + "}" * 2001, "JSON nested 2001 deep"),
    (json.dumps({**GOOD, "grammar": "\u0667"}), "wrong type for 'grammar'"),  # Arabic-Indic 7, not a score
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
    assert json_depth(json.dumps({**GOOD, "note": "[[[[{{{{[[[[ \\\" ]]]]"})) == 1
    assert parse_verdict(json.dumps({**GOOD, "note": "{" * 40}))[1] == "ok"


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


def test_ensemble_gate_floors_every_criterion_of_a_text_the_judge_cannot_read():
    rubric = Rubric.load(GEVAL_RUBRIC)
    verdict = {"scores": {"grammar": 4.6, "creativity": 4.0, "consistency": 3.5, "plot": 4.2}, "age_group": "B"}
    salad = ensemble_verdict(verdict, 6.5, rubric, max_text_loss=4.5)
    assert salad["gated"] and set(salad["scores"].values()) == {1.0} and FLUENCY in salad["scores"]
    assert salad["ungated"]["grammar"] == 4.6 and salad["age_group"] == "B"
    prose = ensemble_verdict(verdict, 2.5, rubric, max_text_loss=4.5)
    assert not prose["gated"] and prose["scores"]["grammar"] == 4.6 and prose["scores"][FLUENCY] == pytest.approx(2.5)


@given(st.floats(0, 20), st.floats(0.1, 20))
def test_ensemble_gate_never_ranks_an_unreadable_text_above_a_readable_one(loss, gate):
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


def closing(opener: str) -> str:
    return "".join({"[": "]", "{": "}"}[c] for c in reversed(opener) if c in "[{")


@given(reply=st.one_of(
    st.text(max_size=300),
    JSONISH.map(lambda o: json.dumps(o, allow_nan=True)),
    st.builds(lambda o, pre, cut: (pre + json.dumps({**GOOD, **o}))[:cut],
              st.dictionaries(st.sampled_from(list(GOOD)), JSONISH, max_size=3), st.text(max_size=20),
              st.integers(1, 400)),
    st.builds(lambda d, n: "[" * d + "9" * n + "]" * d, st.integers(0, 3000), st.integers(0, 6000)),
    # Prose with quotes, brackets and markdown before deep nesting or a verdict: a quote in
    # the prose once hid 2,000 brackets from the depth bound (RecursionError).
    st.builds(lambda pre, opener, d, tail: pre + opener * d + tail + closing(opener) * d,
              st.text(alphabet='"\\ab[]{} `*!()', max_size=12), st.sampled_from(["[", "{", '{"a":', '{"a": [']),
              st.integers(0, 3000), st.sampled_from(["", "1", json.dumps(GOOD)])),
    st.builds(lambda pre, post: pre + json.dumps(GOOD) + post, st.text(alphabet='"\\[]{}ab ', max_size=10),
              st.text(alphabet='"\\[]{}ab ', max_size=10)),
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
