"""Comparison metrics on hand-computed cases."""

import numpy as np
import pytest

from eval import text_metrics as M


def test_distinct_n_by_hand():
    # words a b a b c: 3 distinct of 5 unigrams; bigrams (a b)(b a) | (b c): 3 of 3
    assert M.distinct_n(["a b a", "b c"], 1) == pytest.approx(3 / 5)
    assert M.distinct_n(["a b a", "b c"], 2) == pytest.approx(1.0)
    assert M.distinct_n(["a"], 2) == 0.0


def test_self_bleu_is_high_for_repetition_and_low_for_variety():
    same = ["the fox ran into the dark forest at night"] * 3
    assert M.self_bleu(same) == pytest.approx(100.0)
    varied = ["the fox ran into the dark forest", "a crow sang on a tall pine", "two ants carried seeds home today"]
    assert M.self_bleu(varied) < 20
    assert np.isnan(M.self_bleu(["only one"]))


def test_embedding_similarities_by_hand():
    e = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    # pairs (0,1)=0, (0,2)=1, (1,2)=0 -> mean 1/3
    assert M.mean_pairwise_cosine(e) == pytest.approx(1 / 3)
    sim = M.paired_similarity(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 0.0], [0.0, 5.0]]))
    assert sim == {"same_prompt": pytest.approx(1.0), "different_prompt": pytest.approx(0.0), "lift": pytest.approx(1.0)}


def test_rouge_l_by_hand():
    # LCS of "the cat sat" / "the cat ran" is 2 of 3 words each side: F1 = 2/3
    assert M.rouge_l(["the cat sat"], ["the cat ran"]) == pytest.approx(2 / 3)
    assert M.rouge_l(["a b c"], ["a b c"]) == pytest.approx(1.0)


def test_faithfulness_matches_inflections_not_stopwords():
    text = "The kind fox was rewarded for her kindness in the forest."
    got = M.faithfulness({"character": "a fox", "trait": "kind", "setting": "a desert", "moral": "kindness is rewarded"}, text)
    assert got == {"character": True, "trait": True, "setting": False, "moral": True}
    assert M.element_used("the", "anything")  # nothing to look for


def test_windows_cover_the_text():
    text = " ".join(f"w{i}" for i in range(100))
    ws = M.windows(text)
    assert len(ws) == 4 and ws[0].split()[0] == "w0" and ws[-1].split()[-1] == "w99"
    short = M.windows(" ".join(f"w{i}" for i in range(45)))
    assert len(short) == 2 and short[-1].split()[-1] == "w44"
    assert M.windows("") == []


def test_toxicity_stats_by_hand():
    s = M.toxicity_stats(np.array([0.1, 0.7, 0.2, 0.0]), np.array([0.2, 0.9, 0.6, 0.1]), 0.5)
    assert s["mean"] == pytest.approx(0.25) and s["max"] == pytest.approx(0.7)
    assert s["share_above"] == pytest.approx(0.25) and s["window_share_above"] == pytest.approx(0.5)
    assert s["window_mean"] == pytest.approx(0.45)
