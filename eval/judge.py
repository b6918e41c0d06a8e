"""The LLM judge: a rubric file, the verdict parser, the call through the `openai` client,
and a verdict cache.

Its command line is the protocol's (`python -m eval.protocol`).

Any OpenAI-compatible endpoint can judge (OPENAI_BASE_URL / OPENAI_API_KEY: GPT-4o, a
remote vLLM server, `make serve`). The rubric (eval/rubrics/*.toml) holds the criteria, so
adding one is editing that file. Every verdict records the judge's model and settings and
the rubric's hash; verdicts are cached on (judge, rubric, prompt, fable), so a rerun pays
only for new fables. A reply that is not a valid verdict is a counted failure with its
reason, never a zero.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import re
import sqlite3
import sys
import threading
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from distill.redact import redact

RUBRIC = Path(__file__).parent / "rubrics" / "fable.toml"
# G-Eval weights each score by the judge's probabilities over the scale's values, read at the
# token where it wrote the score: every value must be one token, so a scale of single digits.
RUBRIC_GEVAL = Path(__file__).parent / "rubrics" / "fable-5.toml"
# "ensemble" adds a fluency criterion from the judge's own per-token loss on the fable, and
# gates on that loss: a small judge's form scores cannot tell a fable from its words
# shuffled (SmolLM2-135M's G-Eval scores prefer the shuffled copy), its loss can.
JUDGE_MODES = ("form", "geval", "ensemble")
FLUENCY = "fluency"


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
    out = {**verdict, "scores": scores, "text_loss": loss, "gated": loss > max_text_loss}
    if out["gated"]:
        out.update(scores={c: float(rubric.low) for c in scores}, ungated=scores)
    return out


def criteria_names(rubric: Rubric, mode: str) -> list[str]:
    return rubric.names + ([FLUENCY] if mode == "ensemble" else [])


@dataclass(frozen=True)
class Rubric:
    name: str
    criteria: tuple[tuple[str, str], ...]  # (name, description)
    low: int
    high: int
    age_groups: tuple[tuple[str, str], ...]  # (letter, ages)
    system: str
    user: str
    digest: str  # sha256 of the rubric file: part of every cache key

    @classmethod
    def load(cls, path: str | Path = RUBRIC) -> Rubric:
        try:
            raw_text = Path(path).read_text()
            raw = tomllib.loads(raw_text)
            criteria = tuple((c["name"], c["description"]) for c in raw["criteria"])
            low, high = raw["scale"]
            rubric = cls(raw["name"], criteria, int(low), int(high), tuple(raw["age_groups"].items()),
                         raw["template"]["system"], raw["template"]["user"],
                         hashlib.sha256(raw_text.encode()).hexdigest()[:16])
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"rubric {path}: {type(e).__name__}: {e}") from None
        if not criteria or len({c for c, _ in criteria}) != len(criteria) or not low < high:
            raise ValueError(f"rubric {path}: criteria must be unique and non-empty, scale low < high")
        return rubric

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.criteria]

    def messages(self, prompt: str, fable: str) -> list[dict]:
        user = self.user.format(
            prompt=prompt.strip(), fable=fable.strip(), low=self.low, high=self.high,
            criteria="\n".join(f"- {n}: {d}" for n, d in self.criteria),
            age_groups="\n".join(f"- {k}: {v}" for k, v in self.age_groups),
            keys=", ".join(self.names + ["age_group"]),
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def json_schema(self) -> dict:
        props = {n: {"type": "integer", "minimum": self.low, "maximum": self.high} for n in self.names}
        props["age_group"] = {"type": "string", "enum": [k for k, _ in self.age_groups]}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


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
    if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*", v):
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
    if (depth := json_depth(text)) > MAX_JSON_DEPTH:
        return None, f"JSON nested {depth} deep; a verdict is one object (limit {MAX_JSON_DEPTH})"
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = body.find("{")
    bracket = body.find("[")
    if 0 <= bracket < start or (start < 0 <= bracket):
        try:  # a JSON array where an object was asked for (prose with brackets falls through)
            arr, _ = json.JSONDecoder().raw_decode(body[bracket:])
            return None, f"JSON is a list, not an object ({len(arr)} items)"
        except ValueError:  # JSONDecodeError, or a number past Python's digit limit
            pass
    if start < 0:
        if _ERRORISH.search(text):
            return None, f"an error message instead of a verdict: {_clip(text)}"
        return None, f"no JSON object in the reply: {_clip(text)}"
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as e:
        if body.count("{") > body.count("}") or e.pos >= len(body[start:].rstrip()) - 1:
            return None, "truncated JSON (the reply ends before the object closes)"
        return None, f"malformed JSON: {e.msg} at char {e.pos}"
    except ValueError as e:  # an integer past Python's digit limit
        return None, f"malformed JSON: {_clip(str(e))}"
    if not any(n in obj for n in rubric.names) and ("error" in obj or "message" in obj):
        return None, f"an error message instead of a verdict: {_clip(json.dumps(obj))}"
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
        return None, f"age_group {_clip(str(age), 40)!r} is not exactly one of {', '.join(letters)}"
    return Verdict(scores, a), "ok"


def _clip(s: str, n: int = 120) -> str:
    s = " ".join(redact(s).split())  # before clipping: a clipped key is still a key
    return s if len(s) <= n else s[:n] + "…"


_SCORE_TOKEN = re.compile(r"\s*(\d+)\s*")


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
        m = re.search(rf'"{re.escape(name)}"\s*:\s*"?(\d)', text)
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


class VerdictCache:
    """Verdicts by (judge settings, rubric, prompt, fable), in SQLite: each one is
    committed as it arrives, so a killed evaluation keeps every verdict it paid for.

    Several processes may share one cache: WAL lets readers run beside the writer, and a
    writer waits up to BUSY_TIMEOUT_S for the lock; a write that still fails costs that one
    verdict its caching, never the evaluation. A damaged cache file is set aside with a
    warning and rebuilt, refilled from `recover_from` (a verdicts.jsonl) when given."""

    BUSY_TIMEOUT_S = 60.0

    def __init__(self, path: str | Path, recover_from: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{self.path}{suffix}").exists():
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            self._db = self._open()
            restored = self.restore(recover_from) if recover_from else 0
            print(f"warning: verdict cache {self.path} was damaged ({e}); moved to {aside.name} and rebuilt"
                  + (f", {restored} verdicts restored from {recover_from}" if recover_from else ""), file=sys.stderr)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=self.BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def key(settings: dict, prompt: str, fable: str) -> str:
        # The address is recorded but not part of the key: the same judge moved is the same judge.
        settings = {k: v for k, v in settings.items() if k != "base_url"}
        return hashlib.sha256(json.dumps([settings, prompt, fable], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM verdicts WHERE key = ?", (key,)).fetchone()
        try:
            return json.loads(row[0]) if row else None
        except (TypeError, ValueError):  # a damaged record is a miss: the fable is judged again
            return None

    def put(self, key: str, record: dict) -> None:
        try:
            with self._lock, self._db:
                self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(record)))
        except sqlite3.OperationalError as e:  # still locked after the busy timeout
            print(f"warning: verdict not cached in {self.path}: {e}", file=sys.stderr)

    def restore(self, verdicts: str | Path) -> int:
        """Put back the verdicts a run wrote to verdicts.jsonl (request failures were never
        cached and are not restored). Returns how many."""
        n = 0
        path = Path(verdicts)
        if not path.is_file():
            return 0
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                j = json.loads(line)
                if "request failed" in str(j.get("reason", "")):
                    continue
                record = {k: j[k] for k in ("verdict", "reason", "raw", "judge")}
                self.put(self.key(j["judge"], j["prompt"], j["fable"]), record)
                n += 1
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return n

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]


class Judge:
    """Scores fables through an OpenAI-compatible chat endpoint.

    Transient errors (connection, 429, 5xx) are retried with exponential backoff by the
    `openai` client (max_retries); what still fails is returned as a failure record and
    not cached, so the next run asks again."""

    def __init__(self, client, model: str, rubric: Rubric, temperature: float = 0.0, max_tokens: int = 256,
                 structured: bool = True, cache: VerdictCache | None = None, mode: str = "form",
                 max_text_loss: float = 4.5):
        if mode not in JUDGE_MODES:
            raise ValueError(f"judge mode {mode!r} is not one of {', '.join(JUDGE_MODES)}")
        if mode in ("geval", "ensemble") and rubric.high > 9:
            raise ValueError(f"judge mode '{mode}' needs a scale of single digits; rubric {rubric.name} goes to "
                             f"{rubric.high} (use eval/rubrics/fable-5.toml)")
        self.client, self.model, self.rubric, self.cache = client, model, rubric, cache
        self.temperature, self.max_tokens, self.structured, self.mode = temperature, max_tokens, structured, mode
        self.max_text_loss = max_text_loss

    def settings(self) -> dict:
        """What is recorded with every verdict (the endpoint's address, never its key)."""
        return {"model": self.model, "base_url": str(self.client.base_url), "temperature": self.temperature,
                "max_tokens": self.max_tokens, "structured": self.structured, "rubric": self.rubric.name,
                "rubric_digest": self.rubric.digest, "mode": self.mode,
                **({"max_text_loss": self.max_text_loss} if self.mode == "ensemble" else {})}

    def _key(self, prompt: str, fable: str) -> str:
        return VerdictCache.key(self.settings(), prompt, fable)

    def cached(self, prompt: str, fable: str) -> dict | None:
        """The cached verdict record for this fable, or None: no request is made."""
        hit = self.cache.get(self._key(prompt, fable)) if self.cache is not None else None
        return {**hit, "cached": True} if hit is not None else None

    def judge(self, prompt: str, fable: str) -> dict:
        if (hit := self.cached(prompt, fable)) is not None:
            return hit
        settings = self.settings()
        try:
            raw, tokens = self._ask(prompt, fable)
        except Exception as e:  # the openai client already retried transient errors
            return {"verdict": None, "reason": f"request failed: {type(e).__name__}: {_clip(str(e))}", "raw": None,
                    "judge": settings, "cached": False}
        verdict, reason = parse_verdict(raw, self.rubric)
        record = {"verdict": asdict(verdict) if verdict else None, "reason": reason,
                  "raw": redact(raw) if isinstance(raw, str) else raw, "judge": settings}
        if verdict and self.mode in ("geval", "ensemble"):
            weighted = weighted_scores(tokens or [], self.rubric)
            if weighted is None:
                record.update(verdict=None, reason="no probabilities over the scale at a score token (logprobs)")
            else:  # the written integers are kept beside the weighted scores
                record["verdict"] = {**record["verdict"], "scores": weighted, "written": verdict.scores}
        if record["verdict"] and self.mode == "ensemble":
            try:
                loss = self._text_loss(fable)
            except Exception as e:  # the openai client already retried transient errors
                return {**record, "verdict": None, "reason": f"text loss request failed: {type(e).__name__}",
                        "cached": False}
            if loss is None:
                record.update(verdict=None, reason="no prompt logprobs for the fable's text loss")
            else:
                record["verdict"] = ensemble_verdict(record["verdict"], loss, self.rubric, self.max_text_loss)
        if self.cache is not None:
            self.cache.put(self._key(prompt, fable), record)
        return {**record, "cached": False}

    def _text_loss(self, fable: str) -> float | None:
        """The judge's mean nats/token on the fable alone, from the completions endpoint's
        prompt logprobs (echo); None when the server returns none."""
        resp = self.client.completions.create(model=self.model, prompt=fable.strip(), max_tokens=1, echo=True,
                                              logprobs=0, temperature=0.0)
        lp = resp.choices[0].logprobs
        values = [v for v in (lp.token_logprobs if lp is not None else None) or [] if v is not None]
        # echo returns the prompt's tokens then the one generated: drop the generated one
        values = values[:-1]
        return -sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else None

    def _ask(self, prompt: str, fable: str) -> str | None:
        kw = {}
        if self.structured:
            kw["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "verdict", "schema": self.rubric.json_schema()}}
        if self.mode in ("geval", "ensemble"):
            kw.update(logprobs=True, top_logprobs=20)
        resp = self.client.chat.completions.create(model=self.model, messages=self.rubric.messages(prompt, fable),
                                                   temperature=self.temperature, max_tokens=self.max_tokens, **kw)
        choice = resp.choices[0]
        lp = choice.logprobs.content if choice.logprobs is not None and choice.logprobs.content else None
        return choice.message.content, [t.model_dump() for t in lp] if lp else None


def rubric_for(judge_cfg) -> Rubric:
    """The configured rubric, else the mode's own: 1-10 for "form", single-digit 1-5 otherwise."""
    return Rubric.load(judge_cfg.rubric or (RUBRIC if judge_cfg.mode == "form" else RUBRIC_GEVAL))


def judge_from_config(client, judge_cfg, rubric: Rubric, cache: VerdictCache | None) -> Judge:
    """A Judge with every setting of a run's [judge] table (distill.config.JudgeConfig)."""
    return Judge(client, judge_cfg.model, rubric, judge_cfg.judge_temperature, judge_cfg.max_tokens,
                 judge_cfg.structured, cache, judge_cfg.mode, judge_cfg.max_text_loss)


def judge_all(judge: Judge, items: list[dict], workers: int = 8, progress: str = "judge") -> list[dict]:
    """Judge every {"prompt", "fable", ...} item, several requests in flight so the server
    can batch them; returns the items with their verdict records, in order."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with ThreadPoolExecutor(workers) as pool:
        records = list(tqdm(pool.map(lambda it: judge.judge(it["prompt"], it["fable"]), items), total=len(items),
                            desc=progress, unit="fable"))
    return [{**it, **rec} for it, rec in zip(items, records)]
