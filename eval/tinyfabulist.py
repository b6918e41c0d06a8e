"""The TinyFabulist file layout: fables in, verdicts in and out, and the elements its prompts name.

Fables: one JSON object a line with `prompt`, `fable`, `hash` and `llm_name`. Verdicts: one a
line with `llm_name`, `hash` and `evaluation` holding a number per criterion (TinyFabulist's
own: grammar, creativity, moral_clarity, adherence_to_prompt, and in its later files
best_age_group, a letter A-E; ours write age_group). `hash`
names (writer, prompt), so verdicts of two judges join on (llm_name, hash). A malformed line
stops with its file and line number.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from eval.controls import KINDS as CONTROL_KINDS

TINYFABULIST_CRITERIA = ["grammar", "creativity", "moral_clarity", "adherence_to_prompt"]
# TinyFabulist's later evaluation files name the age group `best_age_group` (a letter A-E);
# ours write `age_group`. Neither is a score.
AGE_FIELDS = ("age_group", "best_age_group")
NOT_SCORES = {"type", "explanation", *AGE_FIELDS}
_TF_KEYS = {"Main Character": "character", "Setting": "setting", "Challenge": "conflict", "Outcome": "resolution",
            "Teaching": "moral"}


def tinyfabulist_elements(prompt: str) -> dict[str, str]:
    """The elements a TinyFabulist generator prompt names ('- Main Character: a kind fox')."""
    out = {}
    for key, value in re.findall(r"^\s*-\s*([A-Za-z ]+):\s*(.+?)\s*$", prompt, re.M):
        if key.strip() in _TF_KEYS:
            out[_TF_KEYS[key.strip()]] = value.replace("where our story unfolds", "").strip()
    return out


def _lines(path: str | Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, line
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read {what}: {type(e).__name__}: {e}") from None


def read_fables(path: str | Path) -> list[dict]:
    """[{"model", "hash", "prompt", "fable"}] from a TinyFabulist fables file."""
    out = []
    for n, line in _lines(path, "fables"):
        try:
            obj = json.loads(line)
            rec = {"model": str(obj["llm_name"]), "hash": str(obj["hash"]), "prompt": obj["prompt"], "fable": obj["fable"]}
            if not isinstance(rec["prompt"], str) or not isinstance(rec["fable"], str):
                raise TypeError("prompt and fable must be text")
        except (KeyError, TypeError, ValueError) as e:  # ValueError: JSONDecodeError, or an unreadable number
            raise ValueError(f"{path}:{n}: not a TinyFabulist fable ({type(e).__name__}: {str(e)[:200]})") from None
        out.append(rec)
    if not out:
        raise ValueError(f"{path}: no fables in the file")
    return out


def _score(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError(f"a score is a number, not {type(v).__name__}")
    return float(v)


def _age_group(ev: dict) -> str | None:
    """The verdict's age group (a letter, upper-cased) from whichever field its file uses."""
    for field in AGE_FIELDS:
        v = ev.get(field)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if not isinstance(v, str):
            raise TypeError(f"{field} is {v!r:.20}, not text")
        return v.strip().upper() if len(v.strip()) == 1 else v.strip()
    return None


def read_tinyfabulist(path: str | Path) -> list[dict]:
    """Verdict lines -> [{"model", "hash", "scores", "age_group", "control"}]; the criteria are
    the evaluation's numeric fields, which must be finite. `control` is False or a control
    kind (true, in older files, is the shuffled-word control)."""
    out = []
    for n, line in _lines(path, "verdicts"):
        try:
            obj = json.loads(line)
            ev = obj["evaluation"]
            scores = {str(c): _score(v) for c, v in ev.items() if c not in NOT_SCORES}
            if not scores or not all(math.isfinite(v) for v in scores.values()):
                raise ValueError("no finite scores")
            off = [f"{c}={v:g}" for c, v in scores.items() if not 0 <= v <= 10]
            if off:
                raise ValueError(f"{off[0]} outside 0..10")
            control = obj.get("control", False)
            if control is True:  # files written before the criterion controls: the shuffled-word one
                control = "shuffled words"
            if control is not False and control not in CONTROL_KINDS:
                raise TypeError(f"control is {control!r:.30}, not false or one of {list(CONTROL_KINDS)}")
            out.append({"model": str(obj["llm_name"]), "hash": obj.get("hash"), "scores": scores,
                        "age_group": _age_group(ev), "control": control})
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:  # ValueError: JSON too
            raise ValueError(f"{path}:{n}: not a TinyFabulist verdict ({type(e).__name__}: {str(e)[:200]})") from None
    if not out:
        raise ValueError(f"{path}: no verdicts in the file")
    return out


def verdict_line(model: str, hash_: str, verdict: dict, judge: dict, control: str | bool = False) -> str:
    """One verdict of ours in the TinyFabulist layout (what `aggregate` and `agree` read);
    `control` is False for a real fable, else the control's kind (eval/controls.py)."""
    ev = {"type": "Fable Evaluation", **verdict["scores"], "age_group": verdict["age_group"]}
    return json.dumps({"llm_name": model, "hash": hash_, "evaluation": ev, "judge": judge, "control": control}) + "\n"


def aggregate(verdicts: list[dict]) -> dict[str, dict]:
    """Per model: count and mean of every criterion, and the overall mean (the sum of all
    criteria over criteria x count, as TinyFabulist publishes it)."""
    by_model: dict[str, list[dict]] = {}
    for v in verdicts:  # a control copy is its own row, never mixed into its writer's means
        by_model.setdefault(v["model"] + (f" ({v['control']})" if v.get("control") else ""), []).append(v["scores"])
    out = {}
    for model, rows in by_model.items():
        crits = list(rows[0])
        means = {c: sum(r[c] for r in rows) / len(rows) for c in crits}
        out[model] = {"count": len(rows), "means": means, "mean": sum(means.values()) / len(crits)}
    return out
