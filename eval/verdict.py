"""A judge's reply read as a verdict: the parser (a reply that is not a valid verdict is a
counted failure with its reason, never a zero), G-Eval's probability-weighted scores, and the
ensemble mode's fluency criterion and readability gate.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass

from distill.redact import redact
from eval.rubric import FLUENCY, Rubric


@dataclass(frozen=True)
class Verdict:
    scores: dict[str, int]
    age_group: str


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_ERRORISH = re.compile(r"\b(error|sorry|cannot|can't|unable|rate limit|exception|invalid request)\b", re.I)


def _as_int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[0-9]+\s*", v):  # "7", not "٧": int() reads any script's digits
        return int(v)
    return None


# Bounds checked before any parsing: a verdict is a few hundred characters and one level of
# JSON; a reply far past either is not one, and parsing it could exhaust the recursion
# limit or Python's 4,300-digit integer limit.
MAX_REPLY_CHARS = 20_000
MAX_JSON_DEPTH = 8


def json_depth(text: str) -> int:
    """How deep {} and [] nest in text, brackets inside JSON strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}]":
            depth = max(depth - 1, 0)
    return deepest


def too_deep(candidate: str) -> str | None:
    """Why the JSON starting at candidate[0] is not decoded, if it nests past the bound.

    Measured on exactly the text the decoder is given, from its first bracket: string
    state counted from the start of the whole reply goes wrong at the first quote in the
    prose before the JSON (a quote, then 2,000 brackets: the count skipped them, and the
    decoder's recursion raised RecursionError, which ended the judge run)."""
    depth = json_depth(candidate)
    return None if depth <= MAX_JSON_DEPTH else f"JSON nested {depth} deep; a verdict is one object (limit {MAX_JSON_DEPTH})"


def parse_verdict(text: str | None, rubric: Rubric | None = None) -> tuple[Verdict | None, str]:
    """A judge's reply -> (verdict, "ok") or (None, why it is not one).

    Accepted: the JSON object alone, with prose around it, or in a ``` fence. Refused, with
    the reason: no JSON, truncated or malformed JSON, a JSON error message, a missing
    score, a score of the wrong type or outside the scale, an age group that is not exactly
    one letter of the rubric's, a reply too long or too deeply nested to be a verdict."""
    rubric = rubric or Rubric.load()
    if text is None or not text.strip():
        return None, "empty reply"
    if len(text) > MAX_REPLY_CHARS:
        return None, f"reply of {len(text)} characters, longer than any verdict (limit {MAX_REPLY_CHARS})"
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = body.find("{")
    bracket = body.find("[")
    if 0 <= bracket < start or (start < 0 <= bracket):
        if (why := too_deep(body[bracket:])) is not None:
            return None, why
        try:  # a JSON array where an object was asked for (prose with brackets falls through)
            arr, _ = json.JSONDecoder().raw_decode(body[bracket:])
            return None, f"JSON is a list, not an object ({len(arr)} items)"
        except ValueError:  # JSONDecodeError, or a number past Python's digit limit
            pass
    if start < 0:
        if _ERRORISH.search(text):
            return None, f"an error message instead of a verdict: {clip(text)}"
        return None, f"no JSON object in the reply: {clip(text)}"
    if (why := too_deep(body[start:])) is not None:
        return None, why
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as e:
        if body.count("{") > body.count("}") or e.pos >= len(body[start:].rstrip()) - 1:
            return None, "truncated JSON (the reply ends before the object closes)"
        return None, f"malformed JSON: {e.msg} at char {e.pos}"
    except ValueError as e:  # an integer past Python's digit limit
        return None, f"malformed JSON: {clip(str(e))}"
    if not any(n in obj for n in rubric.names) and ("error" in obj or "message" in obj):
        return None, f"an error message instead of a verdict: {clip(json.dumps(obj))}"
    scores = {}
    for n in rubric.names:
        if n not in obj:
            return None, f"missing score '{n}'"
        v = _as_int(obj[n])
        if v is None:
            return None, f"wrong type for '{n}': {obj[n]!r}"
        if not rubric.low <= v <= rubric.high:
            return None, f"score {n}={v} outside {rubric.low}..{rubric.high}"
        scores[n] = v
    age = obj.get("age_group")
    letters = [k for k, _ in rubric.age_groups]
    if age is None or (isinstance(age, str) and not age.strip()):
        return None, "missing age_group"
    a = age.strip().upper() if isinstance(age, str) else None
    if a not in letters:  # "B-C", "A or B", "E+" and "B (4 to 7)" name no single group
        return None, f"age_group {clip(str(age), 40)!r} is not exactly one of {', '.join(letters)}"
    return Verdict(scores, a), "ok"


def clip(s: str, n: int = 120) -> str:
    s = " ".join(redact(s).split())  # before clipping: a clipped key is still a key
    return s if len(s) <= n else s[:n] + "…"


_SCORE_TOKEN = re.compile(r"\s*([0-9]+)\s*")


def weighted_scores(tokens: list[dict], rubric: Rubric) -> dict[str, float] | None:
    """G-Eval's scores (arXiv 2303.16634): for each criterion, the expected value of the
    judge's own distribution over the scale's values at the token where it wrote that score.

    `tokens` is the reply's logprobs content in the OpenAI wire format
    ([{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}, ...]). None when a
    criterion's score token, or any probability on the scale's values there, is missing."""
    text, starts = "", []
    for t in tokens:
        starts.append(len(text))
        text += t["token"]
    out = {}
    for name in rubric.names:
        m = re.search(rf'"{re.escape(name)}"\s*:\s*"?([0-9])', text)
        if m is None:
            return None
        at = tokens[bisect.bisect_right(starts, m.start(1)) - 1]
        probs: dict[int, float] = {}
        for alt in at.get("top_logprobs") or []:
            v = _SCORE_TOKEN.fullmatch(alt["token"])
            if v and rubric.low <= int(v.group(1)) <= rubric.high and math.isfinite(alt["logprob"]):
                probs[int(v.group(1))] = probs.get(int(v.group(1)), 0.0) + math.exp(alt["logprob"])
        z = sum(probs.values())
        if z <= 0:
            return None
        out[name] = sum(v * p for v, p in probs.items()) / z
    return out


def fluency_score(loss: float, rubric: Rubric) -> float:
    """The judge's nats/token on the fable as a score on the rubric's scale: top of the
    scale minus the loss, clipped (fluent prose costs a small model 2-3 nats/token,
    shuffled words 6 or more)."""
    return float(min(max(rubric.high - loss, rubric.low), rubric.high))


def ensemble_verdict(verdict: dict, loss: float, rubric: Rubric, max_text_loss: float) -> dict:
    """A G-Eval verdict with the fluency criterion added and the readability gate applied:
    past `max_text_loss` nats/token every criterion gets the scale's floor (the judge's
    own scores are kept under "ungated")."""
    scores = {**verdict["scores"], FLUENCY: fluency_score(loss, rubric)}
    return gated({**verdict, "scores": scores, "text_loss": loss}, loss, rubric, max_text_loss)


def gated(verdict: dict, loss: float, rubric: Rubric, max_text_loss: float) -> dict:
    """The readability gate: past `max_text_loss` nats/token every criterion gets the
    scale's floor, the judge's own scores kept under "ungated"."""
    out = {**verdict, "gated": loss > max_text_loss}
    if out["gated"]:
        out.update(scores={c: float(rubric.low) for c in verdict["scores"]}, ungated=verdict["scores"])
    return out
