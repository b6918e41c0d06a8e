"""The run folder: where each stage writes, and the typed records one stage leaves for the next.

    runs/<name>/
      config.json  stages.json  manifest.json  report.md  report.html
      teachers/<teacher>/        NNNNN.parquet, plan.json (a dataset: distill/schema.py), DONE (Generated)
      students/<teacher>-initial[-own-tokens].json   the untrained student on held-out data (HeldOut)
      students/<teacher>-<objective>/                checkpoints/, adapter/, base/, merged/, ray-train/,
                                                     train.json (Trained), eval.json (Evaluated)
      students/samples-<label>.json                  the report's fables of a student (StudentFables)
      students/<teacher>-initial-model/              the untrained student, for a full fine-tune's fables
      judge/                     fables-<label>.json (StudentFables), cache.sqlite, verdicts.jsonl,
                                 summary.json (JudgeSummary), server.log, report.md / .html
      compare/                   comparison.json, report.md / .html
      sweep/<variant>.json       benchmarks/kd_sweep.py

This module is the only one that spells these paths. Each record carries `version`; a reader
refuses another version, or a record with a field missing, naming the file and the field.
A record written before records were versioned has no `version` and reads as version 1.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from distill import artifacts
from distill.settings import show, type_problem

RUNS_DIR = Path(os.environ.get("KD_RUNS_DIR", "runs"))
RECORD_VERSION = 1
MERGED, ADAPTER, BASE, CHECKPOINTS = "merged", "adapter", "base", "checkpoints"
COMPARISON = "comparison.json"  # also what `python -m eval.compare --out DIR` writes in DIR


class Record:
    """A dataclass written as one JSON object with its `version`."""

    def to_dict(self) -> dict:
        return {"version": RECORD_VERSION, **dataclasses.asdict(self)}

    def write(self, path: Path) -> None:
        artifacts.write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data, where: str = ""):
        name = where or cls.__name__
        if not isinstance(data, dict):
            raise ValueError(f"{name}: expected a JSON object, got {type(data).__name__}")
        version = data.get("version", 1)
        if version != RECORD_VERSION:
            raise ValueError(f"{name}: record version {version!r}; this fable-kd reads version {RECORD_VERSION}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in fields.items() if n not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{name}: {cls.__name__} lacks {', '.join(missing)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for n in fields:
            if n not in data:
                continue
            kind, value = hints[n], data[n]
            if isinstance(kind, type) and issubclass(kind, Record):
                values[n] = kind.from_dict(value, f"{name}: {n}")
                continue
            problem = _type_problem(kind, value)
            if problem:
                raise ValueError(f"{name}: {n}: {problem}")
            values[n] = value
        return cls(**values)

    @classmethod
    def read(cls, path: Path):
        try:
            data = artifacts.read_json(path)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        return cls.from_dict(data, str(path))


def _type_problem(kind, value) -> str | None:
    """Like distill.settings.type_problem, but a record's number may be NaN (a loss with no
    logged step) and `X | None` admits None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else _type_problem(inner[0], value)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {show(value)}"
    return type_problem(kind, value)


@dataclass(frozen=True)
class Generated(Record):
    """teachers/<teacher>/DONE: what the generate stage did for one teacher."""

    teacher: str
    shards: int
    shards_done_before: int
    rows: int
    failed: int
    generated_tokens: int
    wall_s: float
    engine_starts: int = 0  # ray_cluster.cluster.EngineStarts; absent from runs written before it
    engine_start_s: float = 0.0


@dataclass(frozen=True)
class HeldOut(Record):
    """A student's top-k KL to the teacher and cross-entropy on the teacher's held-out text
    (nats/token; `kl` is None across tokenizer families), per fable too."""

    kl: float | None
    ce: float
    tokens: int
    per_fable: list[dict]
    samples: list[str] = field(default_factory=list)  # fables it wrote, for the report
    # nats per byte of the teacher's text: comparable across tokenizers (None in runs before it)
    ce_per_byte: float | None = None


@dataclass(frozen=True)
class Trained(Record):
    """students/<teacher>-<objective>/train.json: the training stage's result."""

    objective: str
    student_kind: str
    quantization: str
    rows: int
    removed_as_toxic: list
    steps: int
    final_loss: float
    history: list[dict]
    train_runtime_s: float | None
    resumed_from: str | None
    workers: int
    effective_batch: int
    student_layers: int
    params: int
    trainable_params: int
    merged: str
    adapter: str | None = None
    base: str | None = None
    # Across tokenizers: the share of the student's positions that carried the teacher's top-k
    # (distill/align.py; the rest trained on CE alone), over the steps this process ran.
    aligned_share: float | None = None
    divergence: str = "forward_kl"


@dataclass(frozen=True)
class Evaluated(Record):
    """students/<teacher>-<objective>/eval.json: the student before and after training on
    held-out data, and side-by-side fables (prompt_id, instruction, teacher, student)."""

    heldout_rows: int
    before: HeldOut
    after: HeldOut
    samples: list[dict]


@dataclass(frozen=True)
class StudentFables(Record):
    """judge/fables-<label>.json (the judged prompts) and students/samples-<label>.json (the
    report's): a student's completions, one list per sample in prompt order, kept so a rerun
    does not regenerate them."""

    label: str
    samples: list[list[str]]

    @classmethod
    def from_dict(cls, data, where: str = ""):
        if isinstance(data, dict) and data and all(k.isdigit() for k in data):  # before records: {"0": [...]}
            data = {"label": Path(where).stem.removeprefix("fables-"), "samples": [data[k] for k in sorted(data, key=int)]}
        return super().from_dict(data, where)


@dataclass(frozen=True)
class JudgeSummary(Record):
    """judge/summary.json. `models` maps each judged writer to its counts, failure reasons
    and bootstrap intervals (eval/protocol.py:summarize)."""

    judge: dict
    protocol: dict
    models: dict[str, dict]
    criteria: list[str]
    age_groups: dict
    score_vs_loss: dict
    shuffled_control: dict | None  # the word-shuffled control on the overall score: the sanity line
    controls: dict | None = None  # per control kind: its criterion and accuracy (eval/controls.py)
    age_check: dict | None = None  # age group against reading grade across fables


@dataclass(frozen=True)
class StudentFolder:
    path: Path

    @property
    def merged(self) -> Path:
        return self.path / MERGED

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER

    @property
    def base(self) -> Path:
        """The model the adapter was trained on (every objective's is the same seeded build)."""
        return self.path / BASE

    @property
    def trained(self) -> Path:
        return self.path / "train.json"

    @property
    def ray_train(self) -> Path:
        """Ray Train's storage, and rank 0's result handed back to the driver."""
        return self.path / "ray-train"

    @property
    def evaluated_per_teacher(self) -> Path:
        """A student of several teachers: its held-out loss on each one's text (eval/heldout.py evaluate_mix)."""
        return self.path / "eval-per-teacher.json"

    @property
    def evaluated(self) -> Path:
        return self.path / "eval.json"


@dataclass(frozen=True)
class JudgeFolder:
    path: Path

    def fables(self, label: str) -> Path:
        return self.path / f"fables-{label}.json"

    @property
    def merged_checkpoints(self) -> Path:
        """Checkpoints merged for an engine that serves no LoRA on their base; removed
        once their fables are written."""
        return self.path / "merged-checkpoints"

    @property
    def cache(self) -> Path:
        return self.path / "cache.sqlite"

    @property
    def verdicts(self) -> Path:
        return self.path / "verdicts.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def server_log(self) -> Path:
        return self.path / "server.log"

    @property
    def report(self) -> Path:
        return self.path / "report.md"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def named(cls, name: str) -> RunFolder:
        return cls(RUNS_DIR / name)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    def teacher(self, teacher: str) -> Path:
        return self.root / "teachers" / teacher

    def generated(self, teacher: str) -> Path:
        return self.teacher(teacher) / "DONE"

    def student(self, teacher: str, objective: str) -> StudentFolder:
        return StudentFolder(self.root / "students" / f"{teacher}-{objective}")

    def initial(self, teacher: str, own_tokens: bool = False) -> Path:
        return self.root / "students" / f"{teacher}-initial{'-own-tokens' if own_tokens else ''}.json"

    def initial_model(self, teacher: str) -> Path:
        return self.root / "students" / f"{teacher}-initial-model"

    def samples(self, label: str) -> Path:
        """The report's side-by-side fables of one student (`<teacher>-initial` before training)."""
        return self.root / "students" / f"samples-{label}.json"

    @property
    def judge(self) -> JudgeFolder:
        return JudgeFolder(self.root / "judge")

    @property
    def footprint(self) -> Path:
        """The distilled teacher and its students served alike (eval/footprint.py)."""
        return self.root / "footprint.json"

    @property
    def compare(self) -> Path:
        return self.root / "compare"

    @property
    def comparison(self) -> Path:
        return self.compare / COMPARISON

    @property
    def sweep(self) -> Path:
        return self.root / "sweep"
