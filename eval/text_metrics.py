"""Text metrics for comparing teachers (and a teacher with its student): pure functions.

Diversity within one writer (distinct-n, self-BLEU, mean pairwise embedding cosine),
similarity between writers (same-prompt cosine against a different-prompt baseline,
ROUGE-L), faithfulness to the prompt's elements, and toxicity statistics over whole
fables and word windows (the sentence-level classifier flags ordinary fable words, so
whole fables and windows are what is scored).
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"[A-Za-z0-9']+")
STOPWORDS = frozenset(
    "a an the of to in on at by for with from and or but is are was were be been its it his her their our your my "
    "who whom which that this these those as into over under about than then so such very".split()
)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the corpus (Li et al. 2016); 0 for no n-grams."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: list[str], max_refs: int = 100, seed: int = 0) -> float:
    """Mean sentence BLEU (sacrebleu, 0-100) of each text against the others as references:
    high means the writer repeats itself."""
    from sacrebleu.metrics import BLEU

    if len(texts) < 2:
        return float("nan")
    bleu = BLEU(effective_order=True)
    rng = np.random.default_rng(seed)
    scores = []
    for i, t in enumerate(texts):
        others = [texts[j] for j in range(len(texts)) if j != i]
        if len(others) > max_refs:
            others = [others[j] for j in rng.choice(len(others), max_refs, replace=False)]
        scores.append(bleu.sentence_score(t, others).score)
    return float(np.mean(scores))


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return a @ b.T


def _off_diagonal_mean(c: np.ndarray) -> float:
    n = len(c)
    return float((c.sum() - np.trace(c)) / (n * (n - 1))) if n > 1 else float("nan")


def mean_pairwise_cosine(emb: np.ndarray) -> float:
    """Mean cosine over all distinct pairs of one writer's fables: high = homogeneous."""
    return _off_diagonal_mean(cosine_matrix(emb, emb)) if len(emb) > 1 else float("nan")


def paired_similarity(a: np.ndarray, b: np.ndarray) -> dict:
    """Two writers on the same prompts (row i of a and b share a prompt): mean cosine of
    same-prompt pairs against the mean over different-prompt pairs (the baseline)."""
    c = cosine_matrix(a, b)
    same = float(np.trace(c) / len(c))
    other = _off_diagonal_mean(c)
    return {"same_prompt": same, "different_prompt": other, "lift": same - other}


def rouge_l(a: list[str], b: list[str]) -> float:
    """Mean ROUGE-L F1 of aligned text pairs."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(np.mean([scorer.score(x, y)["rougeL"].fmeasure for x, y in zip(a, b)])) if a else float("nan")


def content_words(phrase: str) -> list[str]:
    return [w for w in words(phrase) if w not in STOPWORDS and len(w) > 2]


def same_word(a: str, b: str) -> bool:
    """'kindness'~'kind', 'rewarded'~'reward': equal, one a 4+ letter prefix of the other,
    or the same first five letters."""
    short, long_ = sorted((a, b), key=len)
    return a == b or (len(short) >= 4 and long_.startswith(short)) or (len(short) >= 5 and a[:5] == b[:5])


def element_used(element: str, text: str) -> bool:
    """Whether a fable uses a prompt element: every content word of the element appears,
    up to its inflection (see same_word)."""
    cw = content_words(element)
    if not cw:
        return True
    vocab = set(words(text))
    return all(any(same_word(w, v) for v in vocab) for w in cw)


def faithfulness(elements: dict[str, str], text: str) -> dict[str, bool]:
    return {k: element_used(v, text) for k, v in elements.items() if v}


def windows(text: str, size: int = 40, stride: int = 20) -> list[str]:
    """Overlapping word windows covering the whole text (one window if it is short)."""
    w = text.split()
    if len(w) <= size:
        return [" ".join(w)] if w else []
    starts = list(range(0, len(w) - size + 1, stride))
    if starts[-1] + size < len(w):
        starts.append(len(w) - size)
    return [" ".join(w[s : s + size]) for s in starts]


def toxicity_stats(whole: np.ndarray, window_max: np.ndarray, threshold: float) -> dict:
    """Summary of per-fable toxicity probabilities (whole fable and its worst window)."""
    whole, window_max = np.asarray(whole, float), np.asarray(window_max, float)
    if whole.size == 0:
        return {"mean": float("nan"), "max": float("nan"), "share_above": float("nan"),
                "window_mean": float("nan"), "window_share_above": float("nan")}
    return {"mean": float(whole.mean()), "max": float(whole.max()), "share_above": float((whole > threshold).mean()),
            "window_mean": float(window_max.mean()), "window_share_above": float((window_max > threshold).mean())}


_VOWEL_GROUPS = re.compile(r"[aeiouy]+")


def syllables(word: str) -> int:
    """Vowel groups, less a silent final e: the usual estimate, right for most short words."""
    w = word.lower().strip("'")
    n = len(_VOWEL_GROUPS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(1, n)


def reading_grade(text: str) -> float | None:
    """Flesch-Kincaid grade level (0.39 words per sentence + 11.8 syllables per word - 15.59):
    longer sentences and longer words read as older. None for a text with no words."""
    ws = [w for w in _WORD.findall(text) if any(c.isalpha() for c in w)]
    if not ws:
        return None
    n_sent = max(1, len(re.findall(r"[.!?]+", text)))
    return 0.39 * len(ws) / n_sent + 11.8 * sum(syllables(w) for w in ws) / len(ws) - 15.59
