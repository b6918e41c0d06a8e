"""Pairwise judging: a criterion scored as how often a fable beats a reference fable.

A small judge that cannot place one fable on a 1-5 scale can still say which of two is
better in one respect, and its probability of "A" over "B" is a graded answer. Each pair
is asked in both orders and the two answers averaged, which cancels a judge that prefers
whichever story comes first (MT-Bench's position swap, arXiv 2306.05685; JudgeLRM, arXiv
2504.00050, for small pairwise judges). A fable against an identical reference scores the
midpoint without a request. Pure functions; eval/judge.py makes the requests.
"""

from __future__ import annotations

import string

from eval.checklist import _probs


def pairwise_problem(rubric) -> str | None:
    """What is wrong with a rubric's pairwise templates, or None."""
    fields = {name for _, name, _, _ in string.Formatter().parse(rubric.pair) if name}
    if fields != {"prompt", "first", "second", "question"}:
        return f"template.pair must name {{prompt}}, {{first}}, {{second}} and {{question}} (names {sorted(fields)})"
    fields = {name for _, name, _, _ in string.Formatter().parse(rubric.pair_question) if name}
    if not fields <= {"criterion", "description"}:
        return f"template.pair_question may name {{criterion}} and {{description}} only (names {sorted(fields)})"
    if "{age_groups}" not in rubric.age_question:
        return "a pairwise rubric needs template.age (with {age_groups}): the age group is asked of the fable alone"
    return None


def messages(rubric, prompt: str, first: str, second: str, question: str) -> list[dict]:
    user = rubric.pair.format(prompt=prompt.strip(), first=first.strip(), second=second.strip(), question=question)
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": user}]


def questions(rubric) -> list[tuple[str, str]]:
    """(criterion, question) for every criterion."""
    return [(name, rubric.pair_question.format(criterion=name, description=description))
            for name, description in rubric.criteria]


def p_first(top_logprobs: list[dict]) -> float | None:
    """P(A) / (P(A) + P(B)) over the answer token's alternatives ("A", " A", "a"); None when
    neither letter is among them."""
    p = _probs(top_logprobs, lambda t: t.strip().upper() if t.strip().upper() in ("A", "B") else None)
    z = p.get("A", 0.0) + p.get("B", 0.0)
    return p.get("A", 0.0) / z if z > 0 else None


def beats(p_a_fable_first: float, p_a_reference_first: float) -> float:
    """P(the fable beats the reference) from both orders: as A, its P(A); as B, 1 - P(A)."""
    return (p_a_fable_first + (1.0 - p_a_reference_first)) / 2.0


def scores(wins: dict[str, float], rubric) -> dict[str, float]:
    """Each criterion's P(win) on the rubric's scale: the reference itself is the midpoint."""
    return {name: rubric.low + (rubric.high - rubric.low) * wins[name] for name in rubric.names}


def with_references(items: list[dict], reference_model: str) -> list[dict]:
    """Each item with `reference`: the reference writer's first fable for the prompt text it
    is judged against (a wrong-prompt control carries the other prompt's text, so it meets
    the reference's fable for that one); None where the reference wrote none."""
    ref = {}
    for it in items:
        if it["model"] == reference_model and it.get("role") != "control" and it["sample"] == 0:
            ref.setdefault(it["prompt"], it["fable"])
    return [{**it, "reference": ref.get(it["prompt"])} for it in items]
