"""Run configuration: a TOML file (configs/*.toml) read into validated dataclasses.

Settings are documented once, where they are declared: GenerationConfig in
ray_cluster/generate.py, TrainConfig in distill/train.py, the rest below. A
misspelt or invalid setting stops the run before any work, naming the setting.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from distill.train_config import TrainConfig
from ray_cluster.generate import GenerationConfig
from teacher.registry import MODEL_KEYS, TEACHERS, Teacher, declare, get_teacher


@dataclass(frozen=True)
class EvalConfig:
    student_samples: int = 8  # eval prompts on which the student writes a fable for the report
    max_new_tokens: int = 160
    temperature: float = 1.0

    def __post_init__(self):
        if self.student_samples < 0 or self.max_new_tokens < 1 or self.temperature < 0:
            raise ValueError(f"invalid eval settings {dataclasses.asdict(self)}")


@dataclass(frozen=True)
class JudgeConfig:
    """The LLM-judge protocol (eval/judge.py, eval/protocol.py)."""

    enabled: bool = True  # judge students and teachers at the end of the run
    model: str = "smollm2-135m"  # the judge's model name at the endpoint
    # "" = OPENAI_BASE_URL if set, else a local vLLM server for `model` (an embedded teacher)
    base_url: str = ""
    prompts: int = 50  # held-out prompts judged (the protocol: 50)
    samples: int = 10  # completions per prompt and writer (the protocol: 10)
    temperature: float = 1.0  # of the judged completions
    max_new_tokens: int = 160  # of the students' judged completions
    judge_temperature: float = 0.0
    max_tokens: int = 256  # of a verdict
    structured: bool = True  # JSON-schema structured output, where the server supports it
    workers: int = 8  # requests in flight
    retries: int = 3  # per request, with exponential backoff, on transient errors
    checkpoints: bool = False  # also judge the KD student's saved checkpoints: score against loss
    # "form": the scores the judge writes; "geval": each score weighted by the judge's own
    # probabilities over the scale's values (G-Eval; needs logprobs from the endpoint);
    # "ensemble": geval plus a fluency criterion, the scale's top minus the judge's nats/token
    # on the fable (needs the completions endpoint's prompt logprobs), behind a readability gate.
    mode: str = "form"
    # Ensemble's gate: a fable that costs the judge more nats/token than this is not read as
    # language and gets the scale's floor on every criterion. English prose costs SmolLM2-135M
    # 2.1-2.9 nats/token, the same words shuffled 6.3-6.9 (TinyFabulist, BENCHMARKS.md).
    max_text_loss: float = 4.5
    rubric: str = ""  # rubric file; "" = eval/rubrics/fable.toml (form) or fable-5.toml (geval, ensemble)
    # Judge a word-shuffled copy of every judged teacher fable: the share of pairs where the
    # real fable scores higher is the judge's sanity line in the report.
    shuffled_control: bool = True

    def __post_init__(self):
        ok = {"prompts": self.prompts >= 1, "samples": self.samples >= 1, "temperature": self.temperature >= 0,
              "max_tokens": self.max_tokens >= 16, "workers": self.workers >= 1, "retries": self.retries >= 0,
              "max_new_tokens": self.max_new_tokens >= 1, "judge_temperature": self.judge_temperature >= 0,
              "mode": self.mode in ("form", "geval", "ensemble"), "max_text_loss": self.max_text_loss > 0}
        bad = [k for k, v in ok.items() if not v]
        if bad:
            raise ValueError(f"invalid judge setting {bad[0]}={getattr(self, bad[0])!r}")


@dataclass(frozen=True)
class TeacherRun:
    teacher: str
    n_train: int  # training prompts (one fable each unless generation.train_samples > 1)
    n_heldout: int  # evaluation prompts the teacher also writes for: held-out KL and report samples
    generation: GenerationConfig
    train: TrainConfig
    # false: the teacher only writes held-out fables, for the comparison and the judge; no
    # student is trained from it (and n_train may be 0).
    distil: bool = True
    model: Teacher | None = None  # the teacher itself; None = the built-in one named `teacher`

    def __post_init__(self):
        if self.model is None:
            object.__setattr__(self, "model", get_teacher(self.teacher))


@dataclass(frozen=True)
class RunConfig:
    name: str  # outputs go to runs/<name>/
    seed: int = 0  # prompt sampling and training
    eval_prompts: int = 50  # size of the held-out evaluation split (disjoint from training)
    prompts_file: str = ""  # optional JSONL of training prompts instead of combinatorial ones
    teachers: list[TeacherRun] = field(default_factory=list)
    eval: EvalConfig = EvalConfig()
    judge: JudgeConfig = JudgeConfig()
    # Also train the same student for the same steps with plain cross-entropy on the
    # teacher's text (SFT), so the report shows what the logits add.
    sft_baseline: bool = True
    # Every hub teacher's revision must be a commit hash (production: the weights a report
    # describes cannot move under it).
    pin_revisions: bool = False
    # Teachers generating at once (each its own Ray Data LLM job); Ray places their engines
    # as resources allow and queues the rest. 1 = one teacher after another.
    parallel_teachers: int = 1

    def objectives(self, tr: TeacherRun) -> list[str]:
        """The students trained for one teacher, by objective: the configured one first."""
        if not tr.distil:
            return []
        main = tr.train.objective
        return [main] + (["sft"] if self.sft_baseline and main != "sft" else [])


def _build(cls, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown setting {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"bad value in [{where}]: {e}") from None
    except ValueError as e:
        raise ValueError(f"[{where}] {e}") from None


def _merge(base: dict, over: dict) -> dict:
    return {**base, **over}


def parse(raw: dict) -> RunConfig:
    raw = dict(raw)
    gen, train, ev = raw.pop("generation", {}), raw.pop("train", {}), raw.pop("eval", {})
    judge = _build(JudgeConfig, raw.pop("judge", {}), "judge")
    per_teacher = raw.pop("teacher", {})
    ids = raw.pop("teachers", [])
    if not ids:
        raise ValueError("setting teachers is empty: name at least one teacher")
    # Check the shared sections on their own first, so an error names the section the user wrote.
    _build(GenerationConfig, gen, "generation")
    _build(TrainConfig, train, "train")
    defaults = {"n_train": raw.pop("n_train", 64), "n_heldout": raw.pop("n_heldout", 16), "distil": True}
    runs = []
    pinned = raw.get("pin_revisions", False)
    if not isinstance(pinned, bool):
        raise ValueError(f"setting pin_revisions={pinned!r} must be true or false")
    for tid in ids:
        over = dict(per_teacher.get(tid, {}))
        g, t = over.pop("generation", {}), over.pop("train", {})
        declared = {k: over.pop(k) for k in MODEL_KEYS if k in over}
        model = declare(tid, declared, pinned) if declared or pinned or tid not in TEACHERS else TEACHERS[tid]
        unknown = sorted(set(over) - set(defaults))
        if unknown:
            raise ValueError(f"unknown setting teacher.{tid}.{unknown[0]}")
        counts = _merge(defaults, over)
        if not isinstance(counts["distil"], bool):
            raise ValueError(f"setting teacher.{tid}.distil={counts['distil']!r} must be true or false")
        runs.append(TeacherRun(
            teacher=tid, n_train=int(counts["n_train"]), n_heldout=int(counts["n_heldout"]), distil=counts["distil"],
            model=model,
            generation=_build(GenerationConfig, _merge(gen, g), f"teacher.{tid}.generation"),
            train=_build(TrainConfig, _merge(train, t), f"teacher.{tid}.train"),
        ))
    for tid, table in per_teacher.items():
        # A table that declares a model (path or hub_id) is a registry entry, usable by a
        # --set teachers=[...] that lists it; any other table for an unlisted id is a typo.
        if tid not in ids and not {"path", "hub_id"} & set(table):
            raise ValueError(f"[teacher.{tid}] configures a teacher not listed in teachers")
    cfg = _build(RunConfig, {**raw, "teachers": runs, "eval": _build(EvalConfig, ev, "eval"), "judge": judge}, "run")
    if not isinstance(cfg.parallel_teachers, int) or cfg.parallel_teachers < 1:
        raise ValueError(f"setting parallel_teachers={cfg.parallel_teachers!r} must be a whole number >= 1")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.name):
        raise ValueError(f"setting name={cfg.name!r} must be letters, digits, '.', '_' or '-'")
    for r in runs:
        if r.n_train < int(r.distil) or not 1 <= r.n_heldout <= cfg.eval_prompts:
            raise ValueError(f"teacher.{r.teacher}: n_train must be >= 1 (>= 0 with distil = false) and n_heldout "
                             f"within 1..{cfg.eval_prompts}")
    return cfg


def _set(raw: dict, dotted: str) -> None:
    """Apply one `--set a.b=value` override; the value is parsed as TOML (so 5, 1e-3, "x", [..])."""
    key, sep, value = dotted.partition("=")
    if not sep:
        raise ValueError(f"--set {dotted!r}: expected key=value")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parsed


def load(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"config file {path} cannot be read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None
    for o in overrides:
        _set(raw, o)
    return parse(raw)


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> RunConfig:
    """Inverse of to_dict: the configuration a run recorded in its config.json."""
    d = dict(d)
    teachers = [TeacherRun(t["teacher"], t["n_train"], t["n_heldout"], GenerationConfig(**t["generation"]),
                           TrainConfig(**t["train"]), t.get("distil", True),
                           Teacher(**t["model"]) if t.get("model") else None) for t in d.pop("teachers")]
    return RunConfig(**{**d, "teachers": teachers, "eval": EvalConfig(**d.pop("eval", {})),
                        "judge": JudgeConfig(**d.pop("judge", {}))})


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """`--set judge.prompts=4`-style overrides of the judge settings of a recorded run."""
    raw: dict = {}
    for o in overrides:
        _set(raw, o)
    unknown = sorted(set(raw) - {"judge"})
    if unknown:
        raise ValueError(f"only judge.* settings can change after a run (got {unknown[0]})")
    if not raw:
        return cfg
    return dataclasses.replace(cfg, judge=_build(JudgeConfig, {**dataclasses.asdict(cfg.judge), **raw["judge"]}, "judge"))
