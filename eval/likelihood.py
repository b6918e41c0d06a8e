"""Likelihood grading: three criteria read from the judge's own token probabilities.

A small judge answers narrow yes/no questions about grammar, the prompt and the plot barely
better than chance (the checklist's controls in BENCHMARKS.md), yet its language model
knows a broken sentence, a story written for another prompt and shuffled events when it
reads them. So, after GPTScore (arXiv 2302.04166) and BARTScore (arXiv 2106.11520):

- grammar: the judge's nats/token on the fable alone (u);
- consistency: how many nats/token the prompt saves it, u - p, where p is the fable's
  nats/token read after its prompt (pointwise mutual information of prompt and fable);
- plot: p itself: the events in an order the judge expects, given what was asked.

Creativity and the age group stay checklist questions (eval/checklist.py): likelihood
rewards the expected, the opposite of creativity. Each likelihood is mapped onto the
rubric's scale by a logistic, so no two fables tie at a clipped end: u and p centred on the
readability gate's threshold (the middle of the scale at `max_text_loss`, a logit per nat),
the PMI on zero (the middle when the prompt tells the judge nothing about the fable, a
logit per PMI_SCALE nats). The readability gate is optional (judge.fluency_gate): these
scores already sink on unreadable text, and a gate that floors a real fable and its control
alike makes a tie of every pair it touches (a small judge of another family often reads a
real fable past the threshold). Pure functions; eval/judge.py makes the requests.

The judge's likelihoods are its own family's taste too: a judge reads text of its own
family (tokenizer, training data) at a lower loss. The report says where judge and writer
share a family.
"""

from __future__ import annotations

import math

# The criteria read from likelihoods; a rubric judged this way must name all three.
LIKELIHOOD_CRITERIA = ("grammar", "consistency", "plot")
# Nats/token of PMI worth one logit: on the default run's and TinyFabulist's real fables the
# prompt saves the judge 0.1-0.45 nats/token (quartiles); a fable read after another prompt, ~0.
PMI_SCALE = 0.1


def text_loss(token_logprobs: list, text_offsets: list[int], start: int = 0) -> float | None:
    """Mean nats/token of the echoed tokens that start at or after character `start` (the
    fable after its prompt), from a completions response with echo: the last entry, the one
    token generated after the prompt, is dropped; the first token has no logprob (None).
    None when no token is left, or a logprob is not finite."""
    pairs = list(zip(token_logprobs, text_offsets))[:-1]
    values = [v for v, at in pairs if at >= start and v is not None]
    if not values or not all(math.isfinite(v) for v in values):
        return None
    return -sum(values) / len(values)


def _logistic(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2.0))  # 1 / (1 + e^-x), without overflow


def likelihood_scores(u: float, p: float, rubric, max_text_loss: float) -> dict[str, float]:
    """Grammar, consistency and plot on the rubric's scale from u (nats/token of the fable
    alone) and p (after its prompt)."""
    span = rubric.high - rubric.low
    return {"grammar": rubric.low + span * _logistic(max_text_loss - u),
            "consistency": rubric.low + span * _logistic((u - p) / PMI_SCALE),
            "plot": rubric.low + span * _logistic(max_text_loss - p)}


def likelihood_problem(rubric) -> str | None:
    """What keeps a rubric from likelihood grading, or None: it must name the three
    likelihood criteria and have checklist questions for the others."""
    missing = [c for c in LIKELIHOOD_CRITERIA if c not in rubric.names]
    if missing:
        return f"judge mode 'likelihood' reads {', '.join(LIKELIHOOD_CRITERIA)} from likelihoods; rubric {rubric.name} " \
               f"has no {', '.join(missing)}"
    if not rubric.checklist:
        return f"judge mode 'likelihood' asks checklist questions for the other criteria and the age group; rubric " \
               f"{rubric.name} has none (use eval/rubrics/fable-checklist.toml)"
    return None
