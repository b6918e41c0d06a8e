"""Controls for the judge: texts whose right score is known, so a judge can be checked.

Each control is a real fable changed in one way that should move one criterion one way,
judged beside the fable it came from:

    shuffled words       the fable's words in a random order          overall    down
    grammar errors       agreement, tense and article errors put in   grammar    down
    wrong prompt         the fable judged against another prompt      consistency down
    shuffled sentences   its sentences in a random order              plot       down
    cut short            its second half cut off, moral and all       plot       down
    templated retelling  the prompt's six elements in a fixed frame   creativity down

A judge worth reading moves the named criterion the right way nearly every time; one that
cannot is reporting something other than what its criterion claims. The age group has no
cheap paired control (a rewrite to short words needs a model); `age_vs_readability` checks
it across fables instead: older guessed age with harder text. Pure functions: the protocol
judges the copies.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from teacher.prompts import ELEMENTS

CONTROL_SUFFIX = " (shuffled)"


@dataclass(frozen=True)
class Control:
    kind: str
    criterion: str  # a rubric criterion, or "overall"
    what: str  # for the report: what was done to the fable


CONTROLS = (
    Control("shuffled words", "overall", "its words shuffled"),
    Control("grammar errors", "grammar", "agreement, tense and article errors put in"),
    Control("wrong prompt", "consistency", "judged against another prompt (other character, setting and moral)"),
    Control("shuffled sentences", "plot", "its sentences shuffled"),
    Control("cut short", "plot", "cut off after its first half, before the resolution"),
    Control("templated retelling", "creativity", "replaced by the prompt's elements in a fixed frame"),
)
KINDS = {c.kind: c for c in CONTROLS}


def shuffle_words(text: str, seed: str | int) -> str:
    """The same words in a random order (seeded, so a rerun judges the same copy from the
    cache). A text of fewer than two distinct words comes back unchanged."""
    shuffled = _reordered(text.split(), seed)
    return text if shuffled is None else " ".join(shuffled)


def _reordered(items: list[str], seed: str | int) -> list[str] | None:
    """The items in a seeded random order other than their own; None for fewer than two
    distinct items, which have no other order."""
    if len(set(items)) < 2:
        return None
    rng = random.Random(str(seed))
    shuffled = items[:]
    while shuffled == items:
        rng.shuffle(shuffled)
    return shuffled


# Sentence ends: . ! ? (repeated) with any closing quotes or brackets, then whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+")


def sentences(text: str) -> list[str]:
    """The text's sentences, each with its end punctuation; blank ones dropped."""
    cut, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        cut.append(text[start:m.end()].strip())
        start = m.end()
    cut.append(text[start:].strip())
    return [s for s in cut if s]


def shuffle_sentences(text: str, seed: str | int) -> str | None:
    """The sentences in a random order (seeded); None for a text of fewer than two distinct
    sentences, which has no order to break."""
    shuffled = _reordered(sentences(text), seed)
    return None if shuffled is None else " ".join(shuffled)


# Words of a moral that carry none of its meaning, left out when looking for it in a fable.
_FUNCTION_WORDS = frozenset("a all an and are as at be by do for in is it its not of on one than the to what who "
                            "with you your".split())


def states_its_moral(text: str, moral: str) -> bool:
    """Whether the second half of the text's sentences names at least half of the moral's
    content words, each up to its inflection as the element-use metric matches them
    (eval/text_metrics.py:same_word: "listened" names "listen"): the fable reaches its moral
    there, which cutting off that half removes. A fable that ended without reaching its
    moral (a small writer's text that drifts off, or stops with a title) has no resolution
    to miss. A moral of function words alone counts as stated."""
    from eval.text_metrics import same_word, words

    content = [w for w in words(moral) if w not in _FUNCTION_WORDS]
    sents = sentences(text)
    later = set(words(" ".join(sents[len(sents) // 2:])))
    named = sum(any(same_word(w, v) for v in later) for w in content)
    return 2 * named >= len(content)


def cut_short(text: str) -> str | None:
    """The first half of the sentences (rounded down, at least one): a fable stopped before its
    resolution and moral. None for a text of fewer than three sentences, where half a story is
    a sentence or two that may read as whole."""
    sents = sentences(text)
    if len(sents) < 3:
        return None
    return " ".join(sents[: len(sents) // 2])


# Grammar errors a reader sees at once and a judge of grammar should: the verb disagrees with
# its subject, a past tense becomes present in a past-tense story, an article is wrong.
_AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
              "does": "do", "do": "does", "doesn't": "don't", "don't": "doesn't", "wasn't": "weren't",
              "weren't": "wasn't", "isn't": "aren't", "aren't": "isn't"}
_TENSE = {"went": "go", "saw": "see", "said": "say", "came": "come", "took": "take", "found": "find",
          "felt": "feel", "knew": "know", "thought": "think", "made": "make", "gave": "give", "ran": "run",
          "told": "tell", "began": "begin", "decided": "decide", "looked": "look", "asked": "ask",
          "lived": "live", "learned": "learn", "realized": "realize", "wanted": "want", "tried": "try",
          "helped": "help", "worked": "work", "replied": "reply", "smiled": "smile", "became": "become"}
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def _article(word: str, following: str) -> str | None:
    low = word.lower()
    if low == "a" and following[:1].lower() in "aeiou" and following:
        return None  # already wrong or an exception: leave it
    if low == "a":
        return "an"
    if low == "an":
        return "a"
    if low == "the":
        return "a" if following.endswith("s") else None  # "a foxes": a number error as well
    return None


def _swap(word: str, following: str) -> str | None:
    low = word.lower()
    new = _AGREEMENT.get(low) or _TENSE.get(low) or _article(word, following)
    if new is None:
        return None
    return new[0].upper() + new[1:] if word[0].isupper() else new


def grammar_errors(text: str, seed: str | int, share: float = 0.5) -> str | None:
    """The text with grammar errors put in, by a fixed seeded procedure: of the words where
    an agreement (was -> were), tense (went -> go) or article (a -> an) error can go, `share`
    of them (at least one) are changed; nothing else is touched. None when no word can take
    an error."""
    words = list(_WORD.finditer(text))
    sites = []
    for i, m in enumerate(words):
        following = words[i + 1].group() if i + 1 < len(words) else ""
        new = _swap(m.group(), following)
        if new is not None and new != m.group():
            sites.append((m.start(), m.end(), new))
    if not sites:
        return None
    rng = random.Random(str(seed))
    chosen = sorted(rng.sample(sites, max(1, math.floor(len(sites) * share))))
    out, at = [], 0
    for start, end, new in chosen:
        out += [text[at:start], new]
        at = end
    return "".join(out) + text[at:]


def templated_retelling(elements: dict[str, str]) -> str:
    """The prompt's six elements in one fixed frame: a fable with nothing added, the floor of
    creativity for that prompt."""
    e = {k: str(v).strip().rstrip(".") for k, v in elements.items()}
    return (f"There was a {e['trait']} {e['character']} in {e['setting']}. One day, {e['conflict']}. "
            f"In the end, {e['resolution']}. The moral is: {e['moral']}.")


# What a wrong prompt must differ in from the fable's own: who, where, and what it teaches.
MISMATCH = ("character", "setting", "moral")


def other_prompt(items: list[dict], i: int, seed: str | int) -> dict | None:
    """Another item whose prompt names a different character, setting and moral than item i's
    (seeded choice among them), or None where no prompt differs in all three."""
    here = items[i]
    others = [it for it in items if all(it[k] != here[k] for k in MISMATCH)]
    if not others:
        return None
    # By prompt, not by item: every eligible prompt equally likely, however many samples it has.
    by_prompt = {it["prompt_id"]: it for it in others}
    return by_prompt[random.Random(str(seed)).choice(sorted(by_prompt))]


def resolves(item: dict) -> bool:
    """Whether a fable has a resolution to cut off: it ended before its token limit (`ended`;
    an item that does not say, TinyFabulist's, is taken as ended) and, where its prompt
    names a moral, it states that moral in its second half (states_its_moral). On the
    default run's 30 teacher fables 12 ended, and the two that ended without their moral
    (a 270M's and a 135M's) were the two the judge read as whole when cut; 285 of the 300
    TinyFabulist sample fables state theirs."""
    moral = item.get("moral")
    return item.get("ended", True) and (not isinstance(moral, str) or states_its_moral(item["fable"], moral))


def control_items(items: list[dict], kinds: tuple[str, ...] = tuple(KINDS)) -> list[dict]:
    """For every real item (a fable with its prompt and elements) and every control kind, its
    control copy: the same item with `role` "control", `control` the kind, `control_of` the
    writer, `model` "<writer> (<kind>)". Items a kind cannot change (a one-sentence fable has
    no sentence order; one that stopped at its token limit, or never reached its moral, has
    no resolution that cutting it short would remove: `resolves`) get no copy of that kind.
    Seeds come from the item, so a rerun judges the same copies (from the verdict cache)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown judge control(s) {unknown}; known: {list(KINDS)}")
    out = []
    for i, it in enumerate(items):
        seed = f"{it['prompt_id']}/{it['sample']}"
        for kind in kinds:
            change: dict | None
            if kind == "shuffled words":
                text = shuffle_words(it["fable"], seed)
                change = {"fable": text} if text != it["fable"] else None
            elif kind == "grammar errors":
                text = grammar_errors(it["fable"], seed)
                change = {"fable": text} if text else None
            elif kind == "shuffled sentences":
                text = shuffle_sentences(it["fable"], seed)
                change = {"fable": text} if text else None
            elif kind == "cut short":
                text = cut_short(it["fable"]) if resolves(it) else None
                change = {"fable": text} if text else None
            elif kind == "templated retelling":
                change = {"fable": templated_retelling(it)}
            else:  # wrong prompt
                other = other_prompt(items, i, seed)
                # the other prompt's elements, those it gives (TinyFabulist's name no trait)
                change = None if other is None else {"prompt": other["prompt"],
                                                     **{k: other[k] for k in ELEMENTS if k in other},
                                                     "judged_against": other["prompt_id"]}
            if change is not None:
                label = CONTROL_SUFFIX if kind == "shuffled words" else f" ({kind})"
                out.append({**it, **change, "model": it["model"] + label, "role": "control", "control": kind,
                            "control_of": it["model"]})
    return out


def shuffled_items(items: list[dict]) -> list[dict]:
    """A word-shuffled control item per judged item, labelled `<model> (shuffled)`."""
    return control_items(items, ("shuffled words",))


def control_accuracy(judged: list[dict], score, kind: str | None = None) -> dict:
    """How often the judge scored a real fable above its control copy (of `kind`, or of every
    kind when None). Pairs where either verdict failed are counted apart; a tie counts as half
    a win (the judge could not tell). `score(item)` gives the compared score or None."""
    real = {(j["model"], j["prompt_id"], j["sample"]): j for j in judged if j.get("role") != "control"}
    pairs = above = ties = failed = 0
    for c in (j for j in judged if j.get("role") == "control"):
        if kind is not None and c.get("control", "shuffled words") != kind:
            continue
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


def criterion_score(criterion: str, overall):
    """The score a control of `criterion` compares: that criterion's, or the overall score."""
    if criterion == "overall":
        return overall

    def score(item: dict):
        v = item.get("verdict")
        return None if not v else v["scores"].get(criterion)
    return score


def control_accuracies(judged: list[dict], overall) -> dict[str, dict]:
    """Per control kind judged: its criterion, what was done, and control_accuracy on that
    criterion (goal: 0.9 each)."""
    kinds = dict.fromkeys(j.get("control", "shuffled words") for j in judged if j.get("role") == "control")
    out = {}
    for kind in kinds:
        c = KINDS[kind]
        out[kind] = {"criterion": c.criterion, "what": c.what,
                     **control_accuracy(judged, criterion_score(c.criterion, overall), kind)}
    return out


def age_vs_readability(judged: list[dict], age_letters: list[str]) -> dict:
    """The age group's check across fables: Spearman correlation of the judge's guessed age
    group with the fable's Flesch-Kincaid grade, over real fables with a verdict. The guess is
    the verdict's `age_expected` (its probabilities over the letters, 0 the youngest) where
    there is one, else its letter's place in the rubric's order, youngest first. A judge that
    reads the age from the text guesses older for harder text: rho > 0, its 95% interval
    (bootstrap over fables) above zero. `distinct_groups`: how many letters it answered."""
    from eval.stats import spearman_ci
    from eval.text_metrics import reading_grade

    order = {a: i for i, a in enumerate(age_letters)}
    rows = [(j["verdict"], g) for j in judged
            if j.get("role") != "control" and j.get("verdict") and j["verdict"].get("age_group") in order
            and (g := reading_grade(j["fable"])) is not None]
    guess = [v["age_expected"] if v.get("age_expected") is not None else order[v["age_group"]] for v, _ in rows]
    rho, low, high = spearman_ci(guess, [g for _, g in rows])
    return {"fables": len(rows), "rho": rho, "low": low, "high": high,
            "expected": any(v.get("age_expected") is not None for v, _ in rows),
            "distinct_groups": len({v["age_group"] for v, _ in rows})}
