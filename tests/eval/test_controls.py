"""The judge's controls: each a real fable changed one way, and its accuracy count."""

import re
from collections import Counter

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eval.controls import (KINDS, age_vs_readability, control_accuracies, control_accuracy, control_items,
                           cut_short, grammar_errors, sentences, shuffle_sentences, shuffle_words, shuffled_items,
                           states_its_moral, templated_retelling)
from teacher.prompts import make_splits

FABLE = ("Once upon a time, a proud fox lived in a dark forest. He was sure he was the fastest animal of all. "
         "One day a tortoise said, \"Let us race!\" The fox laughed and ran ahead. He took a nap under an oak tree. "
         "The tortoise went on, slowly and steadily. When the fox woke, the tortoise had won. "
         "The fox learned that slow and steady wins the race.")


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
    assert "passes" in text and "floored 9 of 10 word-shuffled copies and" in text and "t (teacher) 1/10" in text
    # the other controls' copies are counted apart: they are not word-shuffled
    models["t (teacher) (cut short)"] = {"role": "control", "verdicts": 10, "gated": 2}
    text = "\n".join(sanity_line(control, models))
    assert "floored 9 of 10 word-shuffled copies, 2 of 10 other control copies and" in text
    assert "gate" not in "\n".join(sanity_line(control, {"t": {"role": "teacher", "verdicts": 3}}))
    assert "FAILS" in "\n".join(sanity_line({**control, "real_above": 5, "accuracy": 0.5}))


_SENTENCE = st.builds(lambda ws, end: " ".join(ws).capitalize() + end,
                      st.lists(st.sampled_from(["the", "fox", "was", "a", "owl", "went", "home", "an", "apple", "**bold**"]),
                               min_size=1, max_size=8), st.sampled_from([".", "!", "?", ".\"", "!'", "..."]))


@given(st.lists(_SENTENCE, min_size=0, max_size=12))
def test_sentence_controls_keep_the_sentences_and_change_only_their_order_or_length(sents):
    text = " ".join(sents)
    assert sentences(text) == [s for s in sents if s.strip()]
    shuffled = shuffle_sentences(text, "p/0")
    if len(set(sents)) >= 2:
        assert Counter(sentences(shuffled)) == Counter(sents) and sentences(shuffled) != sents
        assert shuffle_sentences(text, "p/0") == shuffled  # seeded: the cache holds its verdict
    else:
        assert shuffled is None
    cut = cut_short(text)
    if len(sents) >= 3:
        assert sentences(cut) == sents[: len(sents) // 2]
    else:
        assert cut is None


@given(st.lists(st.sampled_from(list("abcdeiou AWT.,!'\n") + ["was ", "an ", "went ", "The ", "Is ", "do ", "has "]),
                max_size=60).map("".join), st.integers(0, 5))
@example("do", 0)  # found by hypothesis: agreement errors reach do/does and has/have too
def test_grammar_errors_change_only_words_that_can_take_one(text, seed):
    out = grammar_errors(text, seed)
    if out is None:
        return
    assert out != text and grammar_errors(text, seed) == out
    # the text around the changed words is untouched: same separators, same count of words
    words = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
    assert words.split(out) == words.split(text)
    changed = [(a, b) for a, b in zip(words.findall(text), words.findall(out)) if a != b]
    can_take_one = {"a", "an", "the", "was", "were", "is", "are", "has", "have", "do", "does", "went"}
    assert changed and all(a.lower() in can_take_one for a, _ in changed)


def test_grammar_errors_on_a_real_fable_break_agreement_tense_and_articles():
    out = grammar_errors(FABLE, "p1/0", share=1.0)
    assert "He were sure he were the fastest" in out and "The tortoise go on" in out
    assert "an proud fox" in out and "a oak tree" in out
    assert grammar_errors("Sun. Moon.", "s") is None  # no word can take an error: no control


def test_templated_retelling_names_every_element_and_nothing_else():
    [p], _ = make_splits(1, 1, seed=3)
    elements = {k: getattr(p, k) for k in ("character", "trait", "setting", "conflict", "resolution", "moral")}
    text = templated_retelling(elements)
    assert all(v in text for v in elements.values())
    assert len(text.split()) <= 20 + sum(len(v.split()) for v in elements.values())


def _item(pid, character, setting, moral, sample=0, fable=FABLE, model="T (teacher)"):
    return {"model": model, "role": "teacher", "prompt_id": pid, "sample": sample, "fable": fable,
            "prompt": f"about a {character} in {setting}: {moral}", "character": character, "trait": "proud",
            "setting": setting, "conflict": "a race", "resolution": "patience", "moral": moral}


def test_every_control_kind_is_made_for_a_real_fable_and_labelled_with_its_kind():
    items = [_item("p1", "fox", "a forest", "slow and steady wins"), _item("p2", "owl", "a barn", "unity is strength"),
             _item("p3", "fox", "a barn", "greed loses all")]
    controls = control_items(items)
    by = Counter((c["prompt_id"], c["control"]) for c in controls)
    assert all(by[("p1", k)] == 1 for k in KINDS)
    wrong = next(c for c in controls if c["prompt_id"] == "p1" and c["control"] == "wrong prompt")
    # judged against p2's prompt and elements (p3 shares p1's character): the fable is p1's
    assert wrong["judged_against"] == "p2" and wrong["character"] == "owl" and wrong["prompt"] == items[1]["prompt"]
    assert wrong["fable"] == FABLE and wrong["model"] == "T (teacher) (wrong prompt)"
    assert ("p3", "wrong prompt") not in by  # every other prompt shares its character or setting
    assert all(c["role"] == "control" and c["control_of"] == "T (teacher)" for c in controls)
    assert control_items(items) == controls  # seeded: a rerun judges the same copies
    with pytest.raises(ValueError, match="unknown judge control"):
        control_items(items, ("louder",))


def test_a_fable_stopped_by_the_token_limit_is_not_cut_short_again():
    """Cutting off the second half tests whether the judge misses an ending: a teacher fable
    that ran into its token limit has none to miss, so it gets no cut-short copy (it keeps
    its other controls); an item that does not say (TinyFabulist's) is taken as ended."""
    ended, limited, unknown = ({**_item(p, "fox", "a forest", "slow and steady wins"), **flag} for p, flag in
                               (("p1", {"ended": True}), ("p2", {"ended": False}), ("p3", {})))
    by = Counter((c["prompt_id"], c["control"]) for c in control_items([ended, limited, unknown]))
    assert by[("p1", "cut short")] == by[("p3", "cut short")] == 1 and ("p2", "cut short") not in by
    assert by[("p2", "shuffled sentences")] == by[("p2", "grammar errors")] == 1


def test_a_fable_that_never_reaches_its_moral_is_not_cut_short():
    """Cutting off the second half takes the resolution with it only where there was one: a
    fable that ended (EOS) without naming its moral in its second half, as a small writer's
    text that drifts off does, gets no cut-short copy; its other controls stay."""
    stated, paraphrased, drifted = (_item("p1", "fox", "a forest", "slow and steady wins the race"),
                                    _item("p2", "fox", "a forest", "listen to good advice",
                                          fable=FABLE + " From that day on, he listened to advice that was good."),
                                    _item("p3", "fox", "a forest", "pride goes before destruction"))
    by = Counter((c["prompt_id"], c["control"]) for c in control_items([stated, paraphrased, drifted]))
    assert by[("p1", "cut short")] == by[("p2", "cut short")] == 1 and ("p3", "cut short") not in by
    assert by[("p3", "shuffled sentences")] == by[("p3", "grammar errors")] == 1
    # the moral named in the first half only, the part a cut keeps, is not a resolution to cut
    early = "The fox knew pride goes before destruction. " + " ".join(["He ran on."] * 4)
    assert not states_its_moral(early, "pride goes before destruction")


@given(st.lists(st.text(alphabet="abcdefghij .,!?\n", max_size=30), max_size=8), st.text(alphabet="abcdefgh ", max_size=40))
def test_a_moral_stated_as_the_last_sentence_is_always_found(sents, moral):
    text = " ".join(sents + [f"The moral: {moral}."])
    assert states_its_moral(text, moral)


def test_control_accuracies_compare_each_kind_on_its_own_criterion():
    def judged(model, role, pid, scores, **kw):
        return {"model": model, "role": role, "prompt_id": pid, "sample": 0,
                "verdict": {"scores": scores, "age_group": "B"}, **kw}
    real = [judged("T", "teacher", "p1", {"grammar": 8, "plot": 6, "creativity": 5, "consistency": 7})]
    ctrl = [judged("T (grammar errors)", "control", "p1", {"grammar": 5, "plot": 9, "creativity": 9, "consistency": 9},
                   control="grammar errors", control_of="T"),
            judged("T (cut short)", "control", "p1", {"grammar": 8, "plot": 6, "creativity": 1, "consistency": 1},
                   control="cut short", control_of="T")]
    from eval.stats import overall_score

    acc = control_accuracies(real + ctrl, overall_score)
    assert acc["grammar errors"]["criterion"] == "grammar" and acc["grammar errors"]["accuracy"] == 1.0
    # a cut-short fable is judged on plot: a tie is half, whatever the other criteria did
    assert acc["cut short"]["criterion"] == "plot" and acc["cut short"]["accuracy"] == 0.5
    assert set(acc) == {"grammar errors", "cut short"}


def test_age_group_against_readability_rises_with_harder_text():
    easy = "The cat sat. The dog ran. It was fun."
    hard = ("Notwithstanding considerable institutional opposition, the magnanimous elephant deliberated "
            "extensively regarding the philosophical ramifications of unconditional generosity.")
    judged = [{"role": "teacher", "fable": t, "verdict": {"age_group": a}}
              for t, a in [(easy, "A"), (easy, "B"), (hard, "D"), (hard, "E"), (easy + " " + easy, "B"), (hard, "D")]]
    r = age_vs_readability(judged, ["A", "B", "C", "D", "E"])
    assert r["fables"] == 6 and r["rho"] > 0.8 and r["distinct_groups"] == 4
    flat = age_vs_readability([{**j, "verdict": {"age_group": "A"}} for j in judged], ["A", "B", "C", "D", "E"])
    assert flat["distinct_groups"] == 1 and flat["rho"] != flat["rho"]  # one group guessed: no correlation (nan)
    assert not r["expected"] and not flat["expected"]
    # every letter "A", yet the judge's expected age leans older on the harder texts: that lean is what is read
    leaning = [{**j, "verdict": {"age_group": "A", "age_expected": 0.1 + 0.5 * (j["fable"] == hard)}} for j in judged]
    lean = age_vs_readability(leaning, ["A", "B", "C", "D", "E"])
    assert lean["expected"] and lean["distinct_groups"] == 1 and lean["rho"] > 0.8


def test_the_wrong_prompt_control_takes_the_elements_the_other_prompt_gives():
    """TinyFabulist's prompts name no trait: the control is built from what they give (it
    raised KeyError: 'trait' in `eval.protocol score` on the published files)."""
    items = [{k: v for k, v in it.items() if k != "trait"}
             for it in (_item("p1", "fox", "a forest", "haste makes waste"), _item("p2", "owl", "a barn", "unity is strength"))]
    wrong = control_items(items, ("wrong prompt",))
    assert [c["judged_against"] for c in wrong] == ["p2", "p1"] and all("trait" not in c for c in wrong)
    assert wrong[0]["character"] == "owl" and wrong[0]["moral"] == "unity is strength"
