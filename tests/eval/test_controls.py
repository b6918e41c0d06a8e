"""The judge's shuffled-word control: same words, new order, and its accuracy count."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from eval.controls import control_accuracy, shuffle_words, shuffled_items


@given(st.lists(st.sampled_from(["the", "fox", "ran", "far,", "Owl", "said", "."]), min_size=0, max_size=40))
def test_shuffle_keeps_every_word_and_changes_the_order(words):
    text = " ".join(words)
    out = shuffle_words(text, "p1/0")
    assert Counter(out.split()) == Counter(words)
    if len(set(words)) >= 2:
        assert out.split() != words
    assert shuffle_words(text, "p1/0") == out  # seeded: a rerun judges the same copy


def _judged(model, role, pid, score, **kw):
    return {"model": model, "role": role, "prompt_id": pid, "sample": 0,
            "verdict": None if score is None else {"scores": {"a": score}}, **kw}


def test_control_accuracy_counts_wins_ties_and_failures():
    real = [_judged("T (teacher)", "teacher", p, s) for p, s in [("p1", 4), ("p2", 3), ("p3", 2), ("p4", 5)]]
    ctrl = [_judged("T (teacher) (shuffled)", "control", p, s, control_of="T (teacher)")
            for p, s in [("p1", 1), ("p2", 3), ("p3", 4), ("p4", None)]]
    from eval.stats import overall_score

    acc = control_accuracy(real + ctrl, overall_score)
    assert acc == {"pairs": 3, "real_above": 1, "ties": 1, "failed": 1, "accuracy": 0.5}


def test_shuffled_items_are_labelled_controls_of_their_writer():
    item = {"model": "T (teacher)", "role": "teacher", "prompt_id": "p1", "sample": 0, "fable": "a b c d e f"}
    [c] = shuffled_items([item])
    assert c["role"] == "control" and c["control_of"] == "T (teacher)" and c["model"] == "T (teacher) (shuffled)"
    assert sorted(c["fable"].split()) == sorted(item["fable"].split()) and c["fable"] != item["fable"]


def test_sanity_line_says_how_many_verdicts_the_readability_gate_decided():
    from eval.judge_report import sanity_line

    control = {"pairs": 10, "real_above": 10, "ties": 0, "failed": 0, "accuracy": 1.0}
    models = {"t (teacher)": {"role": "teacher", "verdicts": 10, "gated": 1},
              "t (teacher) (shuffled)": {"role": "control", "verdicts": 10, "gated": 9}}
    text = "\n".join(sanity_line(control, models))
    assert "passes" in text and "floored 9 of 10 shuffled copies" in text and "t (teacher) 1/10" in text
    assert "gate" not in "\n".join(sanity_line(control, {"t": {"role": "teacher", "verdicts": 3}}))
    assert "FAILS" in "\n".join(sanity_line({**control, "real_above": 5, "accuracy": 0.5}))
