"""The likelihood measurement's scoring of controls (benchmarks/judge_likelihood.py): pure, no engine."""

from benchmarks.judge_likelihood import accuracies


def _item(role, u, p, model="w", prompt_id="a", **kw):
    return {"role": role, "model": model, "prompt_id": prompt_id, "sample": 0, "u": u, "p": p, "c": p, "end": -1.0, **kw}


def test_a_control_counts_when_its_measure_is_worse_than_the_real_fables_and_ties_count_half():
    items = [_item("teacher", 3.0, 2.5), _item("teacher", 3.0, 2.5, prompt_id="b"),
             _item("control", 3.4, 2.5, model="w (grammar errors)", control="grammar errors", control_of="w"),
             _item("control", 3.0, 2.9, model="w (grammar errors)", prompt_id="b", control="grammar errors",
                   control_of="w"),
             _item("control", 3.0, 2.9, model="w (wrong prompt)", control="wrong prompt", control_of="w")]
    acc = accuracies(items)
    assert acc["grammar errors"]["u (alone)"] == (0.75, 2)  # one worse, one tie
    assert acc["grammar errors"]["p (after prompt)"] == (0.75, 2)
    assert acc["wrong prompt"]["u (alone)"] == (0.5, 1)  # the same text alone: a tie
    assert acc["wrong prompt"]["PMI u-p"] == (1.0, 1)  # the prompt explains the fable less
    assert accuracies([_item("teacher", 3.0, 2.5)]) == {}
