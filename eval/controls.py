"""Controls for the judge: texts whose right score is known, so a judge can be checked.

A word-shuffled copy of a fable keeps its words (length, vocabulary, the prompt's
elements) and loses grammar and plot; a judge worth reading scores the real fable above
its shuffled copy nearly every time. Pure functions: the protocol judges the copies.
"""

from __future__ import annotations

import random

CONTROL_SUFFIX = " (shuffled)"


def shuffle_words(text: str, seed: str | int) -> str:
    """The same words in a random order (seeded, so a rerun judges the same copy from the
    cache). A text of fewer than two distinct words comes back unchanged."""
    words = text.split()
    if len(set(words)) < 2:
        return text
    rng = random.Random(str(seed))
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def shuffled_items(items: list[dict]) -> list[dict]:
    """A control item per judged item: its fable shuffled, labelled `<model> (shuffled)`."""
    return [{**it, "model": it["model"] + CONTROL_SUFFIX, "role": "control", "control_of": it["model"],
             "fable": shuffle_words(it["fable"], f"{it['prompt_id']}/{it['sample']}")} for it in items]


def control_accuracy(judged: list[dict], score) -> dict:
    """How often the judge scored a real fable above its shuffled copy. Pairs where either
    verdict failed are counted apart; a tie counts as half a win (the judge could not tell).
    `score(item)` gives a judged item's overall score or None."""
    real = {(j["model"], j["prompt_id"], j["sample"]): j for j in judged if j.get("role") != "control"}
    pairs = above = ties = failed = 0
    for c in (j for j in judged if j.get("role") == "control"):
        r = real.get((c["control_of"], c["prompt_id"], c["sample"]))
        if r is None:
            continue
        a, b = score(r), score(c)
        if a is None or b is None:
            failed += 1
            continue
        pairs += 1
        above += a > b
        ties += a == b
    share = (above + ties / 2) / pairs if pairs else float("nan")
    return {"pairs": pairs, "real_above": above, "ties": ties, "failed": failed, "accuracy": share}
