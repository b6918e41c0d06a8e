"""The judge's rubric: a TOML file (eval/rubrics/*.toml) holding the criteria, the score
scale, the age groups and the prompt templates; adding a criterion is editing that file. Its
hash is part of every verdict's cache key.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

RUBRIC = Path(__file__).parent / "rubrics" / "fable.toml"
# G-Eval weights each score by the judge's probabilities over the scale's values, read at the
# token where it wrote the score: every value must be one token, so a scale of single digits.
RUBRIC_GEVAL = Path(__file__).parent / "rubrics" / "fable-5.toml"
# "ensemble" adds a fluency criterion from the judge's own per-token loss on the fable, and
# gates on that loss: a small judge's form scores cannot tell a fable from its words
# shuffled (SmolLM2-135M's G-Eval scores prefer the shuffled copy), its loss can.
# "checklist" scores each criterion from yes/no questions, each read as P(yes) (eval/checklist.py).
RUBRIC_CHECKLIST = Path(__file__).parent / "rubrics" / "fable-checklist.toml"
# "pairwise" scores each criterion as P(the fable beats a reference fable), both orders (eval/pairwise.py).
RUBRIC_PAIRWISE = Path(__file__).parent / "rubrics" / "fable-pairwise.toml"
# "likelihood" reads grammar, consistency and plot from the judge's own nats/token on the fable
# alone and after its prompt, the rest from checklist questions (eval/likelihood.py).
JUDGE_MODES = ("form", "geval", "ensemble", "checklist", "pairwise", "likelihood")
FLUENCY = "fluency"


def criteria_names(rubric: Rubric, mode: str, fluency_gate: bool = False) -> list[str]:
    # likelihood's gate adds no criterion: its grammar is the gate's loss already
    return rubric.names + ([FLUENCY] if mode == "ensemble" or (fluency_gate and mode != "likelihood") else [])


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
    # checklist mode: (criterion, question, weight) and the answer instructions
    checklist: tuple[tuple[str, str, float], ...] = ()
    yes_no: str = ""
    age_question: str = ""
    # pairwise mode: two stories and one criterion's question
    pair: str = ""
    pair_question: str = ""

    @classmethod
    def load(cls, path: str | Path = RUBRIC) -> Rubric:
        try:
            raw_text = Path(path).read_text()
            raw = tomllib.loads(raw_text)
            criteria = tuple((c["name"], c["description"]) for c in raw["criteria"])
            low, high = raw["scale"]
            checklist = tuple((str(q["criterion"]), str(q["question"]), float(q.get("weight", 1)))
                              for q in raw.get("checklist", []))
            rubric = cls(raw["name"], criteria, int(low), int(high), tuple(raw["age_groups"].items()),
                         raw["template"]["system"], raw["template"]["user"],
                         hashlib.sha256(raw_text.encode()).hexdigest()[:16], checklist,
                         raw["template"].get("yes_no", ""), raw["template"].get("age", ""),
                         raw["template"].get("pair", ""), raw["template"].get("pair_question", ""))
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"rubric {path}: {type(e).__name__}: {e}") from None
        if not criteria or len({c for c, _ in criteria}) != len(criteria) or not low < high:
            raise ValueError(f"rubric {path}: criteria must be unique and non-empty, scale low < high")
        if rubric.pair or rubric.pair_question:
            from eval.pairwise import pairwise_problem

            problem = pairwise_problem(rubric)
            if problem:
                raise ValueError(f"rubric {path}: {problem}")
        if checklist:
            from eval.checklist import checklist_problem

            problem = checklist_problem(rubric)
            if problem:
                raise ValueError(f"rubric {path}: {problem}")
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


def rubric_for(judge_cfg) -> Rubric:
    """The configured rubric, else the mode's own: 1-10 for "form", single-digit 1-5 otherwise.
    A configured one that cannot be read is named as the setting it came from."""
    if not judge_cfg.rubric:
        return Rubric.load({"form": RUBRIC, "checklist": RUBRIC_CHECKLIST, "likelihood": RUBRIC_CHECKLIST,
                            "pairwise": RUBRIC_PAIRWISE}
                           .get(judge_cfg.mode, RUBRIC_GEVAL))
    try:
        return Rubric.load(judge_cfg.rubric)
    except ValueError as e:
        raise ValueError(f"judge.rubric: {e}") from None
