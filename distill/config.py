"""Run configuration: a TOML file (configs/*.toml) read into validated dataclasses.

Settings are documented once, where they are declared: GenerationConfig in
ray_cluster/generation_config.py, TrainConfig in distill/train_config.py, the rest below. A
misspelt or invalid setting stops the run before any work, naming the setting.
"""

from __future__ import annotations

import dataclasses
import os
import typing
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from distill.redact import redact
from distill.settings import SettingError, build, check_ranges, show, type_problem
from distill.train_config import TrainConfig
from eval.controls import KINDS as CONTROL_KINDS
from eval.rubric import JUDGE_MODES
from ray_cluster.generation_config import GenerationConfig
from teacher.registry import MODEL_KEYS, TEACHERS, Teacher, declare, get_teacher


@dataclass(frozen=True)
class EvalConfig:
    # Eval prompts on which the student writes a fable for the report, sampled as the
    # teachers sample ([generation] temperature and top_p: RunConfig.sampling).
    student_samples: int = 8
    max_new_tokens: int = 160
    # The report's headline (eval/footprint.py): the distilled teacher and its students each
    # served alone by vLLM with the same settings, writing footprint_new_tokens for each of
    # the first footprint_prompts held-out prompts: tokens/s and peak memory.
    footprint: bool = True
    footprint_prompts: int = 4
    footprint_new_tokens: int = 64

    def __post_init__(self):
        check_ranges(self, {"student_samples": (self.student_samples >= 0, "must be >= 0"),
                            "max_new_tokens": (self.max_new_tokens >= 1, "must be >= 1"),
                            "footprint_prompts": (self.footprint_prompts >= 1, "must be >= 1"),
                            "footprint_new_tokens": (self.footprint_new_tokens >= 1, "must be >= 1")})


@dataclass(frozen=True)
class JudgeConfig:
    """The LLM-judge protocol (eval/judge.py, eval/protocol.py, eval/rubric.py)."""

    enabled: bool = True  # judge students and teachers at the end of the run
    model: str = "smollm2-135m"  # the judge's model name at the endpoint
    # "" = OPENAI_BASE_URL if set, else `model` (an embedded teacher) served here by the
    # teacher service (ray_cluster/serve.py, as the Serve application `judge`)
    base_url: str = ""
    prompts: int = 50  # held-out prompts judged (the protocol: 50)
    # Completions per prompt and writer (the protocol: 10), sampled as the teachers sample
    # ([generation] temperature and top_p: RunConfig.sampling).
    samples: int = 10
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
    # on the fable (needs the completions endpoint's prompt logprobs), behind a readability gate;
    # "checklist": each criterion from yes/no questions on the prompt's elements and the
    # rubric, each read as P(yes) from the judge's logprobs (eval/checklist.py);
    # "likelihood": grammar, consistency and plot from the judge's own nats/token on the fable
    # alone and after its prompt, creativity and age from checklist questions
    # (eval/likelihood.py; needs completions with echo and logprobs).
    mode: str = "form"
    # Ensemble's gate: a fable that costs the judge more nats/token than this is not read as
    # language and gets the scale's floor on every criterion. English prose costs SmolLM2-135M
    # 2.1-2.9 nats/token, the same words shuffled 6.3-6.9 (TinyFabulist, BENCHMARKS.md).
    max_text_loss: float = 4.5
    # "checklist" and "pairwise" with the ensemble's fluency criterion and readability gate (ensemble
    # always has them); "likelihood" with the gate alone (its grammar criterion is that loss).
    fluency_gate: bool = False
    # rubric file; "" = eval/rubrics/fable.toml (form), fable-checklist.toml (checklist, likelihood),
    # fable-pairwise.toml (pairwise), else fable-5.toml
    rubric: str = ""
    # Controls judged beside every judged teacher fable, each the fable changed one way that
    # should lower one criterion (eval/controls.py): "shuffled words" (overall: the report's
    # sanity line), "grammar errors", "wrong prompt" (consistency), "shuffled sentences" and
    # "cut short" (plot), "templated retelling" (creativity). [] judges none.
    controls: list = field(default_factory=lambda: list(CONTROL_KINDS))
    # Training fables of each distilled teacher (its first prompts, one fable each) judged too,
    # only as sources of controls: more pairs per control where the judged held-out prompts give
    # few. They are not the teacher's score (that is over the held-out prompts, as the students'
    # is). The cut-short control needs fables that ended with their moral: on the default run
    # 8-11 of its 30 held-out teacher fables do, so one miss failed the line. 0 = none (the 50 x
    # 10 protocol has 500 teacher fables a teacher).
    control_train_fables: int = 0
    # Context length (vLLM's max_model_len) of the judge served here when neither base_url
    # nor OPENAI_BASE_URL is set: rubric, prompt, fable and verdict must fit.
    server_max_model_len: int = 2048

    def __post_init__(self):
        check_ranges(self, {
            "server_max_model_len": (self.server_max_model_len > self.max_tokens, "must be more than max_tokens"),
            "prompts": (self.prompts >= 1, "must be >= 1"), "samples": (self.samples >= 1, "must be >= 1"),
            "max_tokens": (self.max_tokens >= 16, "must be >= 16"),
            "workers": (self.workers >= 1, "must be >= 1"), "retries": (self.retries >= 0, "must be >= 0"),
            "max_new_tokens": (self.max_new_tokens >= 1, "must be >= 1"),
            "judge_temperature": (self.judge_temperature >= 0, "must be >= 0"),
            "mode": (self.mode in JUDGE_MODES, f"must be one of {', '.join(repr(m) for m in JUDGE_MODES)}"),
            "max_text_loss": (self.max_text_loss > 0, "must be > 0"),
            "control_train_fables": (self.control_train_fables >= 0, "must be >= 0"),
            "controls": (isinstance(self.controls, list) and len(set(map(str, self.controls))) == len(self.controls)
                         and set(self.controls) <= set(CONTROL_KINDS),
                         f"must be a list of distinct controls from {list(CONTROL_KINDS)}"),
        })


@dataclass(frozen=True)
class ClusterConfig:
    """What the dry run prices a run with (distill/plan.py): the GPU the cluster runs on and
    what an hour of it and the judge's tokens cost. Nothing here changes what a run does."""

    gpu: str = ""  # "" = not priced; else a key of usd_per_gpu_hour (and of distill/plan.py's GPU_SPECS)
    usd_per_gpu_hour: dict = field(default_factory=dict)  # e.g. {"A10G" = 1.01, "H100" = 6.88}
    judge_usd_per_mtok: dict = field(default_factory=dict)  # {input = 2.5, output = 10.0}: the judge API's price

    def __post_init__(self):
        from teacher.hardware import GPU_SPECS

        check_ranges(self, {
            "gpu": (self.gpu in ("", *GPU_SPECS), f"must be one of {', '.join(GPU_SPECS)} (or \"\")"),
            "usd_per_gpu_hour": (all(isinstance(v, int | float) and v >= 0 for v in self.usd_per_gpu_hour.values()),
                                 "prices must be numbers >= 0"),
            "judge_usd_per_mtok": (set(self.judge_usd_per_mtok) <= {"input", "output"}
                                   and all(isinstance(v, int | float) and v >= 0 for v in self.judge_usd_per_mtok.values()),
                                   "takes input and output, each a number >= 0 (USD per million tokens)"),
        })
        if self.gpu and self.gpu not in self.usd_per_gpu_hour:
            raise SettingError("usd_per_gpu_hour", f"has no price for cluster.gpu = {self.gpu!r}")


@dataclass(frozen=True)
class CompareConfig:
    """The comparison of the run's writers (eval/compare.py)."""

    # The toxicity classifier: "profanity" (alt-profanity-check, offline) or "toxigen-roberta"
    # (the ToxiGen RoBERTa with which arXiv 2401.08491 chose the seed teachers; needs the hub or its cache).
    toxicity: str = "profanity"

    def __post_init__(self):
        from eval.toxicity import CLASSIFIERS

        check_ranges(self, {"toxicity": (self.toxicity in CLASSIFIERS, f"must be one of {', '.join(CLASSIFIERS)}")})


@dataclass(frozen=True)
class TeacherRun:
    teacher: str
    generation: GenerationConfig
    train: TrainConfig
    # n_train and n_heldout may also be set at the top level, for every teacher at once.
    n_train: int = 64  # training prompts (one fable each unless generation.train_samples > 1)
    n_heldout: int = 16  # evaluation prompts the teacher also writes for: held-out KL and report samples
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
    # The held-out prompts: the first eval_prompts of this JSONL (teacher/prompts.py's format;
    # a relative path not found here is looked up in the package), by default the curated 50
    # shipped in eval/prompts/ (every trait, setting, conflict, resolution and moral, the
    # instruction variants evenly). "" draws them from the seed, as the training prompts are.
    eval_prompts_file: str = "eval/prompts/heldout-50.jsonl"
    teachers: list[TeacherRun] = field(default_factory=list)
    eval: EvalConfig = EvalConfig()
    judge: JudgeConfig = JudgeConfig()
    compare: CompareConfig = CompareConfig()
    cluster: ClusterConfig = ClusterConfig()
    # Also train the same student for the same steps with plain cross-entropy on the
    # teacher's text (SFT), so the report shows what the logits add.
    sft_baseline: bool = True
    # Every hub teacher's revision must be a commit hash (production: the weights a report
    # describes cannot move under it).
    pin_revisions: bool = False
    # Teachers generating at once (each its own Ray Data LLM job); Ray places their engines
    # as resources allow and queues the rest. 1 = one teacher after another.
    parallel_teachers: int = 1
    # A student of several teachers at once: teacher id -> its loss weight, e.g.
    # mix = { "qwen2.5-coder-1.5b" = 1.0, "smollm2-135m" = 0.5 }. Trained by KD from all their
    # training shards together (students/mix-kd), with the first listed one's [train] settings
    # (a checkpoint student), each teacher's top-k carried onto the student's tokens where their
    # token maps differ, and the loss logged per teacher. {} = none.
    mix: dict = field(default_factory=dict)

    def __post_init__(self):
        check_ranges(self, {
            # A path component of runs/<name>: no separators, and not "." or "..".
            "name": (bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", self.name)),
                     "must be 1-100 letters, digits, '.', '_' or '-', not starting with '.' or '-'"),
            # numpy and transformers.set_seed take 32-bit seeds
            "seed": (0 <= self.seed < 2**32, "must be within 0..4294967295 (2**32 - 1)"), "eval_prompts": (self.eval_prompts >= 1, "must be >= 1"),
            "parallel_teachers": (self.parallel_teachers >= 1, "must be >= 1"),
        })

    @property
    def sampling(self) -> dict:
        """How every writer in the run samples, teachers and students alike: [generation]'s
        temperature and top_p, which no teacher may set for itself (_teacher_run)."""
        g = self.teachers[0].generation
        return {"temperature": g.temperature, "top_p": g.top_p}

    def judge_served_here(self) -> bool:
        """The judge is the embedded model served by this run (no judge.base_url, no OPENAI_BASE_URL)."""
        return self.judge.enabled and not (self.judge.base_url or os.environ.get("OPENAI_BASE_URL"))

    def embedded_models(self) -> list[str]:
        """The embedded models (built by `make models`) this run loads: teachers, checkpoint
        students and a judge served here. A config of hub teachers needs none of them."""
        from teacher.registry import EMBEDDED

        wanted = [tr.model.id for tr in self.teachers if tr.model.embedded]
        wanted += [tr.train.student_checkpoint for tr in self.teachers
                   if tr.distil and tr.train.student_kind == "checkpoint"]
        if self.judge_served_here():
            wanted.append(self.judge.model)
        return [m for m in EMBEDDED if m in wanted]

    def objectives(self, tr: TeacherRun) -> list[str]:
        """The students trained for one teacher, by objective: the configured one first."""
        if not tr.distil:
            return []
        main = tr.train.objective
        return [main] + (["sft"] if self.sft_baseline and main != "sft" else [])


# Per-teacher settings besides [teacher.<id>.generation], [teacher.<id>.train] and the model keys:
# name -> (type, default), as TeacherRun declares them.
TEACHER_COUNTS = {f.name: (typing.get_type_hints(TeacherRun)[f.name], f.default)
                  for f in dataclasses.fields(TeacherRun) if f.name in ("n_train", "n_heldout", "distil")}


def _table(raw: dict, key: str, where: str = "") -> dict:
    value = raw.pop(key, {})
    if not isinstance(value, dict):
        raise SettingError(f"{where}{key}", f"expected a table of settings, got {show(value)}")
    return value


def parse(raw: dict) -> RunConfig:
    """A RunConfig from a config file's tables, or SettingError naming the first bad setting."""
    raw = dict(raw)
    gen, train, ev = _table(raw, "generation"), _table(raw, "train"), _table(raw, "eval")
    judge = build(JudgeConfig, _table(raw, "judge"), "judge")
    comp = build(CompareConfig, _table(raw, "compare"), "compare")
    clus = build(ClusterConfig, _table(raw, "cluster"), "cluster")
    per_teacher = {tid: _table({tid: t}, tid, "teacher.") for tid, t in _table(raw, "teacher").items()}
    ids = raw.pop("teachers", [])
    if not isinstance(ids, list) or not all(isinstance(t, str) and t for t in ids):
        raise SettingError("teachers", f"expected a list of teacher ids, got {show(ids)}")
    if not ids:
        raise SettingError("teachers", "is empty: name at least one teacher")
    if len(set(ids)) != len(ids):
        raise SettingError("teachers", f"lists a teacher twice: {ids}")
    # Check the shared sections on their own first, so an error names the section the user wrote.
    build(GenerationConfig, gen, "generation")
    build(TrainConfig, train, "train")
    defaults = {k: raw.pop(k, default) for k, (_, default) in TEACHER_COUNTS.items() if k != "distil"}
    for k, v in defaults.items():
        why = type_problem(int, v) or (f"{v} must be >= 0" if v < 0 else None)
        if why:
            raise SettingError(k, why)
    pinned = raw.get("pin_revisions", False)
    if (why := type_problem(bool, pinned)) is not None:
        raise SettingError("pin_revisions", why)
    runs = [_teacher_run(tid, dict(per_teacher.get(tid, {})), gen, train, defaults, pinned) for tid in ids]
    for tid, table in per_teacher.items():
        # A table that declares a model (path or hub_id) is a registry entry, usable by a
        # --set teachers=[...] that lists it; any other table for an unlisted id is a typo.
        if tid not in ids and not {"path", "hub_id"} & set(table):
            raise SettingError(f"teacher.{tid}", "configures a teacher not listed in teachers")
    cfg = build(RunConfig, {**raw, "teachers": runs, "eval": build(EvalConfig, ev, "eval"), "judge": judge,
                            "compare": comp, "cluster": clus}, "")
    check_mix(cfg)
    for r in runs:
        if r.n_train < int(r.distil):
            raise SettingError(f"teacher.{r.teacher}.n_train", f"{r.n_train} must be >= 1 (>= 0 with distil = false)")
        if not 1 <= r.n_heldout <= cfg.eval_prompts:
            raise SettingError(f"teacher.{r.teacher}.n_heldout", f"{r.n_heldout} must be within 1..{cfg.eval_prompts} "
                                                                 "(eval_prompts)")
    return cfg


def check_mix(cfg: RunConfig) -> None:
    """The mix names listed teachers, each with a weight > 0, at least two, and a student
    that belongs to none of them (a checkpoint)."""
    if not cfg.mix:
        return
    ids = [r.teacher for r in cfg.teachers]
    for tid, w in cfg.mix.items():
        if tid not in ids:
            raise SettingError(f"mix.{tid}", f"is not a teacher of this run (teachers: {', '.join(ids)})")
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < float("inf"):
            raise SettingError(f"mix.{tid}", f"weight {show(w)} must be a number > 0")
    if len(cfg.mix) < 2:
        raise SettingError("mix", "names one teacher: a student of one teacher is its own (distil = true)")
    first = next(r for r in cfg.teachers if r.teacher in cfg.mix)
    if first.train.student_kind != "checkpoint":
        raise SettingError("mix", f"trains with teacher.{first.teacher}'s [train] settings, whose student_kind is "
                                  f"{first.train.student_kind!r}: a student of several teachers is a checkpoint "
                                  "(train.student_kind = \"checkpoint\"), not one teacher pruned")
    if first.train.on_policy:
        raise SettingError("mix", "with train.on_policy > 0: on-policy steps score with one served teacher")
    for r in cfg.teachers:
        if r.teacher in cfg.mix and r.n_train < 1:
            raise SettingError(f"teacher.{r.teacher}.n_train", f"is {r.n_train}, and mix trains on its fables")


def _set(raw: dict, dotted: str) -> None:
    """Apply one `--set a.b=value` override; the value is parsed as TOML (so 5, 1e-3, "x", [..]),
    and anything that is not TOML is taken as a string (the type check then refuses it
    where a string is not a setting's type)."""
    key, sep, value = dotted.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise SettingError(key or dotted, "--set expects key=value, e.g. --set train.steps=10")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    except ValueError as e:  # valid TOML Python will not hold: an integer of thousands of digits
        raise SettingError(key, f"value cannot be read: {e}") from None
    node = raw
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SettingError(".".join(parts[: i + 1]), f"is a value ({show(node)}), not a table of settings")
    node[parts[-1]] = parsed


# Where the package is installed (the checkout, or site-packages): configs/ ships beside it.
INSTALL_ROOT = Path(__file__).resolve().parent.parent


def config_path(path: str | Path) -> Path:
    """A config file as given, or, for a relative path that is not there, the shipped one of
    that name (configs/default.toml from an installed package, run outside a checkout)."""
    path = Path(path)
    if path.is_absolute() or path.exists() or not (INSTALL_ROOT / path).is_file():
        return path
    return INSTALL_ROOT / path


def load(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = config_path(path)
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise SettingError("", f"config file {path} cannot be read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, ValueError) as e:  # ValueError: an integer Python will not hold
        raise SettingError("", f"config file {path} is not valid TOML: {str(e)[:200]}") from None
    for o in overrides:
        _set(raw, o)
    return parse(raw)


# [generation] settings no teacher table may override: the sampling every writer shares.
SHARED_SAMPLING = {"temperature", "top_p"}


def _teacher_run(tid: str, over: dict, gen: dict, train: dict, defaults: dict, pinned: bool) -> TeacherRun:
    """One listed teacher: its model (built in, or declared by its table) and its settings,
    the table's own over the shared [generation] and [train] and the top-level counts."""
    where = f"teacher.{tid}"
    g, t = _table(over, "generation", f"{where}."), _table(over, "train", f"{where}.")
    for k in SHARED_SAMPLING & set(g):
        raise SettingError(f"{where}.generation.{k}", "every writer in a run samples alike (teachers and students): "
                                                      f"set it once, as generation.{k}")
    declared = {k: over.pop(k) for k in MODEL_KEYS if k in over}
    if tid not in TEACHERS and not {"path", "hub_id"} & set(declared):
        raise SettingError("teachers", f"unknown teacher '{tid}': known teachers are {', '.join(TEACHERS)}; "
                                       f"declare a new one with {where}.path (a local HF folder) or {where}.hub_id")
    try:
        model = declare(tid, declared, pinned) if declared or pinned or tid not in TEACHERS else TEACHERS[tid]
    except SettingError as e:
        raise e.under(where) from None
    counts = {**defaults, "distil": TEACHER_COUNTS["distil"][1]}
    for k, v in over.items():
        if k not in TEACHER_COUNTS:
            raise SettingError(f"{where}.{k}", f"unknown setting (known: {', '.join(sorted(TEACHER_COUNTS))}, "
                                               f"{', '.join(MODEL_KEYS)}, generation, train)")
        if (why := type_problem(TEACHER_COUNTS[k][0], v)) is not None:
            raise SettingError(f"{where}.{k}", why)
        counts[k] = v
    return TeacherRun(teacher=tid, n_train=counts["n_train"], n_heldout=counts["n_heldout"], distil=counts["distil"],
                      model=model, generation=build(GenerationConfig, {**gen, **g}, f"{where}.generation"),
                      train=build(TrainConfig, {**train, **t}, f"{where}.train"))


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def recorded(cfg: RunConfig) -> dict:
    """The configuration as a run writes it (config.json, manifest.json): every string with
    credentials masked, such as a judge.base_url of http://user:password@host/v1?api-key=...
    A run re-judged from it needs the endpoint given again (eval/endpoint.py says so)."""
    def mask(v):
        if isinstance(v, str):
            return redact(v)
        if isinstance(v, dict):
            return {k: mask(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mask(x) for x in v]
        return v

    return mask(to_dict(cfg))


def from_dict(d: dict) -> RunConfig:
    """Inverse of to_dict: the configuration a run recorded in its config.json, type-checked
    as a config file is (an edited `"enabled": "False"` is refused, not read as true)."""
    try:
        d = dict(d)
        teachers = []
        for t in d.pop("teachers"):
            t = dict(t)
            where = f"teacher.{t.get('teacher')}"
            model = t.pop("model", None)
            gen = build(GenerationConfig, t.pop("generation"), f"{where}.generation")
            train = build(TrainConfig, t.pop("train"), f"{where}.train")
            model = build(Teacher, model, f"{where}.model") if model else None
            teachers.append(build(TeacherRun, {**t, "generation": gen, "train": train, "model": model}, where))
        # Runs recorded before every writer shared the teachers' sampling kept a temperature of
        # their own for the students; RunConfig.sampling replaces it.
        ev, judge = ({k: v for k, v in d.pop(s, {}).items() if k != "temperature"} for s in ("eval", "judge"))
        if "shuffled_control" in judge:  # runs recorded before the criterion controls: all or none
            judge["controls"] = list(CONTROL_KINDS) if judge.pop("shuffled_control") is True else []
        # {} in runs recorded before these existed
        comp = build(CompareConfig, d.pop("compare", {}), "compare")
        clus = build(ClusterConfig, d.pop("cluster", {}), "cluster")
        return build(RunConfig, {**d, "teachers": teachers, "eval": build(EvalConfig, ev, "eval"),
                                 "judge": build(JudgeConfig, judge, "judge"), "compare": comp, "cluster": clus}, "")
    except SettingError as e:
        raise SettingError(e.setting, f"{e.why} (in the run's recorded config.json)") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise SettingError("", f"the run's recorded config.json is not a run configuration ({type(e).__name__}: {e})") from None


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
    return dataclasses.replace(cfg, judge=build(JudgeConfig, {**dataclasses.asdict(cfg.judge), **raw["judge"]}, "judge"))
