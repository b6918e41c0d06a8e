"""Checklist grading: a criterion scored from yes/no questions a small judge can answer.

A small model cannot fill in a 1-5 form for four criteria at once with any reliability, but
it can answer one narrow question about a story ("Is the main character a trusting
elephant?"), and its probability of "yes" is a graded answer. Each criterion's score is the
scale's low end plus its range times the weighted mean P(yes) of its questions (fixed
weights, in the rubric file). Questions that name a prompt element are asked only where the
elements are known. Pure functions; eval/judge.py makes the requests. After RocketEval
(arXiv 2503.05142) and the checklist graders it builds on.
"""

from __future__ import annotations

import math
import string

from teacher.prompts import ELEMENTS


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def checklist_problem(rubric) -> str | None:
    """What is wrong with a rubric's checklist, or None: every criterion needs a question
    that names no element (so it is scored whatever the prompt), weights are positive, and
    questions name only prompt elements."""
    names = set(rubric.names)
    for criterion, question, weight in rubric.checklist:
        if criterion not in names:
            return f"checklist question {question!r:.60} is for {criterion!r}, not a criterion"
        if not weight > 0 or not math.isfinite(weight):
            return f"checklist question {question!r:.60} has weight {weight}; weights are > 0"
        if placeholders(question) - set(ELEMENTS):
            return f"checklist question {question!r:.60} names {sorted(placeholders(question) - set(ELEMENTS))}"
    plain = {c for c, q, _ in rubric.checklist if not placeholders(q)}
    if names - plain:
        return f"criteria {sorted(names - plain)} have no checklist question that names no element"
    if not rubric.yes_no or "{age_groups}" not in rubric.age_question:
        return "a checklist rubric needs template.yes_no and template.age (with {age_groups})"
    return None


def questions_for(rubric, elements: dict[str, str]) -> list[tuple[str, str, float]]:
    """The checklist with the prompt's elements filled in, less the questions that name an
    element this prompt does not give."""
    known = {k: str(v).strip().rstrip(".") for k, v in elements.items() if k in ELEMENTS and str(v).strip()}
    return [(c, q.format(**known), w) for c, q, w in rubric.checklist if placeholders(q) <= set(known)]


def messages(rubric, prompt: str, fable: str, question: str) -> list[dict]:
    """The story first, the question last: a server with prefix caching reads the story once."""
    user = rubric.user.format(prompt=prompt.strip(), fable=fable.strip(), question=question)
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": user}]


def age_question(rubric) -> str:
    return rubric.age_question.format(age_groups="\n".join(f"{k}: {v}" for k, v in rubric.age_groups))


def _probs(top_logprobs: list[dict], normalize) -> dict[str, float]:
    out: dict[str, float] = {}
    for alt in top_logprobs or []:
        key = normalize(alt["token"])
        if key is not None and math.isfinite(alt["logprob"]):
            out[key] = out.get(key, 0.0) + math.exp(alt["logprob"])
    return out


def p_yes(top_logprobs: list[dict]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the answer token's alternatives ("Yes", " yes", "YES"
    all count); None when neither is among them."""
    p = _probs(top_logprobs, lambda t: t.strip().lower() if t.strip().lower() in ("yes", "no") else None)
    z = p.get("yes", 0.0) + p.get("no", 0.0)
    return p.get("yes", 0.0) / z if z > 0 else None


def _age_probs(top_logprobs: list[dict], letters: list[str]) -> dict[str, float]:
    return _probs(top_logprobs, lambda t: t.strip().upper() if t.strip().upper() in letters else None)


def age_letter(top_logprobs: list[dict], letters: list[str]) -> str | None:
    """The age group letter the judge finds likeliest at its answer token; None if none is there."""
    p = _age_probs(top_logprobs, letters)
    return max(p, key=p.get) if p else None


def age_expected(top_logprobs: list[dict], letters: list[str]) -> float | None:
    """The judge's expected age group as a position in `letters` (0 the youngest), weighted
    by its probabilities over the letters at its answer token (as G-Eval weights a score): a
    small judge that answers "A" to every fable still leans older on some, which its letter
    hides. None if no letter is there."""
    p = _age_probs(top_logprobs, letters)
    z = sum(p.values())
    return sum(letters.index(k) * v for k, v in p.items()) / z if z > 0 else None


def criterion_scores(answers: list[tuple[str, float, float]], rubric) -> dict[str, float]:
    """(criterion, P(yes), weight) answers -> the score on the rubric's scale of each
    criterion answered (every one, for a rubric that passes checklist_problem)."""
    out = {}
    for name in rubric.names:
        mine = [(p, w) for c, p, w in answers if c == name]
        if not mine:
            continue
        mean = sum(p * w for p, w in mine) / sum(w for _, w in mine)
        out[name] = rubric.low + (rubric.high - rubric.low) * mean
    return out
