"""Likelihood grading: the four criteria read from the judge's own token probabilities.

A small judge answers narrow yes/no questions about grammar, the prompt, the plot and
originality barely better than chance (the checklist's controls in BENCHMARKS.md), yet its
language model knows a broken sentence, a story written for another prompt, shuffled events
and a text that says nothing beyond its instructions when it reads them. So, after GPTScore
(arXiv 2302.04166) and BARTScore (arXiv 2106.11520), from two reads of the fable:

- grammar: the judge's nats/token on the fable alone (u);
- consistency: how many nats/token the prompt saves it, u - p, where p is the fable's
  nats/token read after its prompt (pointwise mutual information of prompt and fable);
- plot: the fable's nats/token after its prompt with its close read too (p_close): the
  events in an order the judge expects, given what was asked, up to an ending it expects.
  The close is CLOSE ("The End.") after the fable: cheap after a story that has reached its
  end, dear after one broken off mid-way, and counted as tokens of the text (not on a scale
  of its own), so a fable that ends where the judge expects it to pays almost nothing for it;
- creativity: the share of the information in prompt and fable together that the fable
  brings, F / (F + P), F the fable's nats after its prompt and P the prompt's own nats (the
  same read). A retelling of the prompt's elements adds little the judge cannot predict from
  them; a fable with its own events, images and dialogue adds much. It is a total, not a
  rate: it grows with length as well as with surprise, and it rises on noise too (grammar and
  plot are what fall there). Per token, surprise is the opposite of the plot's coherence.

Only the age group stays a question (eval/checklist.py). Each likelihood is mapped onto the
rubric's scale by a logistic, so no two fables tie at a clipped end: u and p centred on the
readability gate's threshold (the middle of the scale at `max_text_loss`, a logit per nat),
the PMI on zero (the middle when the prompt tells the judge nothing about the fable, a
logit per PMI_SCALE nats), the share on one half (F = P, a logit per factor e of F / P).
The readability gate is optional (judge.fluency_gate): these scores already sink on
unreadable text, and a gate that floors a real fable and its control alike makes a tie of
every pair it touches (a small judge of another family often reads a real fable past the
threshold). Pure functions; eval/judge.py makes the requests.

The judge's likelihoods are its own family's taste too: a judge reads text of its own
family (tokenizer, training data) at a lower loss. The report says where judge and writer
share a family.
"""

from __future__ import annotations

import math

# The criteria read from likelihoods; a rubric judged this way must name all four.
LIKELIHOOD_CRITERIA = ("grammar", "creativity", "consistency", "plot")
# Recorded with every likelihood verdict, so that verdicts cached under an earlier way of
# reading them are not reused (creativity was a checklist question before; plot read p alone).
METHOD = "u, u-p, p+close, F/(F+P)"
# Read after the fable for the plot: whether the judge expects the story to end there. On the
# default run's resolved teacher fables, p alone put 1 of 6 of their first halves above the
# whole (by 0.03 nats/token); the close costs a fable cut mid-way 3-6 nats more.
CLOSE = "\n\nThe End."
# Nats/token of PMI worth one logit: on the default run's and TinyFabulist's real fables the
# prompt saves the judge 0.1-0.45 nats/token (quartiles); a fable read after another prompt, ~0.
PMI_SCALE = 0.1


def read_nats(token_logprobs: list, text_offsets: list[int], start: int = 0, end: int | None = None) -> dict | None:
    """From a completions response with echo, the nats of the echoed text split at character
    `start` (a prompt, then the fable after it) and, where given, at `end` (the fable, then
    its close): {"before": nats of the tokens before `start`, "after": nats of those from
    `start` up to `end`, "tokens": how many those are, and with `end` "close" and
    "close_tokens" for the tokens from `end` on}. A token that straddles a split belongs to
    the part it starts in. The last entry, the one token generated after the text, is
    dropped; the first token has no logprob (None). None when no token is left between
    `start` and `end`, or a logprob is not finite."""
    pairs = [(v, at) for v, at in list(zip(token_logprobs, text_offsets))[:-1] if v is not None]
    stop = math.inf if end is None else end
    after = [v for v, at in pairs if start <= at < stop]
    if not after or not all(math.isfinite(v) for v, _ in pairs):
        return None
    out = {"before": -sum(v for v, at in pairs if at < start), "after": -sum(after), "tokens": len(after)}
    if end is not None:
        close = [v for v, at in pairs if at >= end]
        out |= {"close": -sum(close), "close_tokens": len(close)}
    return out


def per_token(nats: dict) -> float:
    """Mean nats/token of the text from `start` on (u or p), from read_nats' figures."""
    return nats["after"] / nats["tokens"]


def per_token_with_close(nats: dict) -> float:
    """Mean nats/token of the text and its close together (p_close), from read_nats' figures
    with `end`; the text's alone where no token of the close came back."""
    return (nats["after"] + nats.get("close", 0.0)) / (nats["tokens"] + nats.get("close_tokens", 0))


def _logistic(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2.0))  # 1 / (1 + e^-x), without overflow


def likelihood_scores(u: float, p: float, fable_nats: float, prompt_nats: float, rubric,
                      max_text_loss: float, p_close: float | None = None) -> dict[str, float]:
    """The four criteria on the rubric's scale from u (nats/token of the fable alone), p
    (after its prompt), the nats of the fable after its prompt and of the prompt itself, and
    p_close (p with the close read too; p where not given)."""
    p_close = p if p_close is None else p_close
    span = rubric.high - rubric.low
    total = fable_nats + prompt_nats
    return {"grammar": rubric.low + span * _logistic(max_text_loss - u),
            "creativity": rubric.low + span * (fable_nats / total if total > 0 else 0.5),
            "consistency": rubric.low + span * _logistic((u - p) / PMI_SCALE),
            "plot": rubric.low + span * _logistic(max_text_loss - p_close)}


def likelihood_problem(rubric) -> str | None:
    """What keeps a rubric from likelihood grading, or None: it must name the four
    likelihood criteria, and have the checklist's age question and checklist questions for
    any other criterion."""
    missing = [c for c in LIKELIHOOD_CRITERIA if c not in rubric.names]
    if missing:
        return f"judge mode 'likelihood' reads {', '.join(LIKELIHOOD_CRITERIA)} from likelihoods; rubric {rubric.name} " \
               f"has no {', '.join(missing)}"
    others = [c for c in rubric.names if c not in LIKELIHOOD_CRITERIA]
    if not rubric.checklist:
        return f"judge mode 'likelihood' asks the age group{' and ' + ', '.join(others) if others else ''} as " \
               f"checklist questions; rubric {rubric.name} has none (use eval/rubrics/fable-checklist.toml)"
    return None
