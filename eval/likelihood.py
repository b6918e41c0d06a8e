"""Likelihood grading: the four criteria read from the judge's own token probabilities.

A small judge answers narrow yes/no questions about grammar, the prompt, the plot and
originality barely better than chance (the checklist's controls in BENCHMARKS.md), yet its
language model knows a broken sentence, a story written for another prompt, shuffled events
and a text that says nothing beyond its instructions when it reads them. So, after GPTScore
(arXiv 2302.04166) and BARTScore (arXiv 2106.11520), from three reads of the fable (alone;
after its prompt with a close; and with a next line in place of the close):

- grammar: the judge's nats/token on the fable alone (u);
- consistency: how many nats/token the prompt saves it, u - p, where p is the fable's
  nats/token read after its prompt (pointwise mutual information of prompt and fable);
- plot: the fable's nats/token after its prompt (p), plus END_WEIGHT times how many more nats
  the judge pays to end the story where the fable stops than to go on with it: the nats of
  the close, CLOSE ("The End.") after the fable (or the close it wrote itself), less those of
  GO_ON ("The next day,") read in its place. The events in an order the judge expects, given
  what was asked, up to an ending it expects. The difference, not the close alone: after a
  text that stops mid-sentence every next line is dear, ending or not; what tells a story
  that has ended from one broken off at a sentence mid-way is which of the two the judge
  would rather read next;
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
import re

# The criteria read from likelihoods; a rubric judged this way must name all four.
LIKELIHOOD_CRITERIA = ("grammar", "creativity", "consistency", "plot")
# Recorded with every likelihood verdict, so that verdicts cached under an earlier way of
# reading them are not reused (creativity was a checklist question before; plot read p alone,
# then p with the close averaged in).
METHOD = "u, u-p, p+w(end-go on), F/(F+P)"
# Read after the fable for the plot: whether the judge expects the story to end there ...
CLOSE = "\n\nThe End."
# ... or to go on.
GO_ON = "\n\nThe next day,"
# Nats/token of plot loss per nat the judge would rather go on than end. Measured on the default
# run's resolved teacher fables (25 pairs, the 1.5B's held-out and training fables) and 52
# sentence-shuffled copies: p alone put the cut-short copy below the whole in 20 of 25 pairs
# (a fable's second half, its moral, often reads dearer than its first), the close alone 24
# of 25 but shuffled copies right in 30 of 52, end-less-go-on alone 25 and 39 of 52; p plus
# 0.05-0.2 of it 25 of 25 and 49-51 of 52 (0.1: 25 and 50).
END_WEIGHT = 0.1
# A close the fable wrote itself ("The end", "**THE END!**") on its last line or after its last
# sentence: read as its close, in place of CLOSE (a second close after it would be dear however
# well the story ended: a 1.5B fable ending "The end" once read worse than its own first half).
_OWN_CLOSE = re.compile(r"(?:(?<=[.!?\"'”’)*_])|(?<=\n))[\s*_#]*the\s+end[\s.!*_]*\Z", re.IGNORECASE)


def with_close(fable: str) -> tuple[str, int]:
    """The fable (stripped) with its close, and the character where the close begins: its own
    close where it ends with one, else CLOSE after it."""
    body = fable.strip()
    own = _OWN_CLOSE.search(body)
    if own and body[:own.start()].strip():
        return body, own.start()
    return body + CLOSE, len(body)


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


def plot_loss(p: float, close_nats: float, go_on_nats: float) -> float:
    """p plus END_WEIGHT times the nats of the close less those of the next line read in its
    place: the plot's loss, on p's scale."""
    return p + END_WEIGHT * (close_nats - go_on_nats)


def _logistic(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2.0))  # 1 / (1 + e^-x), without overflow


def likelihood_scores(u: float, p: float, fable_nats: float, prompt_nats: float, rubric,
                      max_text_loss: float, plot: float | None = None) -> dict[str, float]:
    """The four criteria on the rubric's scale from u (nats/token of the fable alone), p
    (after its prompt), the nats of the fable after its prompt and of the prompt itself, and
    the plot's loss (plot_loss; p where not given)."""
    plot = p if plot is None else plot
    span = rubric.high - rubric.low
    total = fable_nats + prompt_nats
    return {"grammar": rubric.low + span * _logistic(max_text_loss - u),
            "creativity": rubric.low + span * (fable_nats / total if total > 0 else 0.5),
            "consistency": rubric.low + span * _logistic((u - p) / PMI_SCALE),
            "plot": rubric.low + span * _logistic(max_text_loss - plot)}


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
