"""Who writes which student fables in a run, all sampled as the teachers sample
(RunConfig.sampling) and written in one engine start per base student
(ray_cluster/write_fables.py):

- the report's side-by-side: the first `eval.student_samples` held-out prompts, written by
  the student before training (`<teacher>-initial`) and by each trained student;
- the judge's: `judge.samples` completions of the first `judge.prompts` judged prompts by
  each trained student and, for score against loss, each saved checkpoint of the first
  distilled teacher's main student but the last (which is the finished student).

vLLM serves LoRA adapters only on architectures that declare it (Qwen2, Llama, Mistral,
Gemma: yes; Falcon: no). A student on any other base is served merged instead, one engine
per writer: the finished students from their exported merge, each checkpoint from a merge
made for the stage and removed once its fables are written.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from distill import artifacts
from distill.run_folder import RunFolder, StudentFables, Trained
from ray_cluster.write_fables import Writer, written


def prompt_ids(rows: list[dict], tokenizer, fingerprint: str) -> list[list[int]]:
    """The exact token ids the teacher saw; re-encoded from its prompt text for a student of
    another tokenizer family (sequence-level distillation)."""
    if rows and rows[0]["tokenizer_fingerprint"] == fingerprint:
        return [list(r["prompt_token_ids"]) for r in rows]
    return [tokenizer(r["prompt_text"], add_special_tokens=False).input_ids for r in rows]


def initial_model(tr, run: RunFolder) -> str:
    """A folder holding the student as training starts from it: the LoRA students' shared
    base (the same seeded build for every objective), the checkpoint it starts from, or,
    for a full fine-tune of a built student, that build saved once beside the students."""
    from student.initial import build_initial_student, student_checkpoint

    if tr.train.lora_r:
        return str(run.student(tr.teacher, tr.train.objective).base)
    if tr.train.student_kind == "checkpoint":
        return student_checkpoint(tr)
    folder = run.initial_model(tr.teacher)
    if not folder.exists():
        with artifacts.staged_folders(folder.parent) as stage:
            model, tok = build_initial_student(tr)
            model.save_pretrained(stage / folder.name, safe_serialization=True)
            tok.save_pretrained(stage / folder.name)
    return str(folder)


def writers(cfg, tr, run: RunFolder, report: bool = True, judge: bool = True) -> list[Writer]:
    """The writers of one distilled teacher's students: the report's (`report`) and the
    judge's (`judge`, when the judge is on); none for a teacher that is not distilled."""
    from distill.schema import read_rows, tokenizer_fingerprint
    from student.initial import student_tokenizer
    from teacher.prompts import heldout_prompts

    report, judge = report and cfg.eval.student_samples > 0, judge and cfg.judge.enabled
    if not cfg.objectives(tr) or not (report or judge):
        return []
    tok = student_tokenizer(tr)
    rows = read_rows(run.teacher(tr.teacher), split="eval")
    base = initial_model(tr, run)
    # Asked only for fables still missing: the answer imports vLLM (~16 s on 2 cores), and a
    # rerun or the judge stage's check usually finds every file written.
    lora = functools.cache(lambda: bool(tr.train.lora_r) and lora_served(base))
    out = []

    def each_student(ids, out_path, samples: int, max_new: int) -> None:
        for objective in cfg.objectives(tr):
            label = f"{tr.teacher}-{objective}"
            model, adapter = _served(tr, objective, run, base, written(out_path(label), len(ids), samples) or lora())
            out.append(Writer(label, out_path(label), model, adapter, ids, samples, max_new))

    if report:
        ids = prompt_ids([r for r in rows if r["sample_index"] == 0][: cfg.eval.student_samples], tok,
                         tokenizer_fingerprint(tok))
        label = f"{tr.teacher}-initial"
        out.append(Writer(label, run.samples(label), base, None, ids, 1, cfg.eval.max_new_tokens))
        each_student(ids, run.samples, 1, cfg.eval.max_new_tokens)
    if judge:
        ids = prompt_ids(heldout_prompts(rows)[: cfg.judge.prompts], tok, tokenizer_fingerprint(tok))
        each_student(ids, run.judge.fables, cfg.judge.samples, cfg.judge.max_new_tokens)
        distilled = [t for t in cfg.teachers if cfg.objectives(t)]
        if cfg.judge.checkpoints and distilled[0] is tr:
            out += checkpoint_writers(tr, run, base, ids, cfg.judge.samples, cfg.judge.max_new_tokens, lora)
    return out


def mix_writers(cfg, run: RunFolder, judge: bool = True) -> list[Writer]:
    """The judge's fables of the student of several teachers (`mix`): the judged prompts, as
    the first mixed teacher's students write them, from its adapter on its base."""
    from distill.schema import read_rows, tokenizer_fingerprint
    from distill.train_stage import MIX, mix_teacher
    from student.initial import student_tokenizer
    from teacher.prompts import heldout_prompts

    if not (cfg.mix and judge and cfg.judge.enabled):
        return []
    tr = mix_teacher(cfg)
    student, label = run.student(MIX, "kd"), f"{MIX}-kd"
    tok = student_tokenizer(tr)
    rows = read_rows(run.teacher(tr.teacher), split="eval")
    ids = prompt_ids(heldout_prompts(rows)[: cfg.judge.prompts], tok, tokenizer_fingerprint(tok))
    base = str(student.base)
    if tr.train.lora_r and (written(run.judge.fables(label), len(ids), cfg.judge.samples) or lora_served(base)):
        model, adapter = base, str(student.adapter)
    else:
        model, adapter = str(student.merged), None
    return [Writer(label, run.judge.fables(label), model, adapter, ids, cfg.judge.samples, cfg.judge.max_new_tokens)]


def checkpoint_writers(tr, run: RunFolder, base: str, ids, samples: int, max_new: int,
                       lora=lambda: True) -> list[Writer]:
    """Each saved checkpoint of the main student but the last, which is the finished student.
    A LoRA checkpoint on a base vLLM serves no adapters on (`lora()` False) is merged first,
    into run.judge.merged_checkpoints, only while its fables are still missing."""
    student = run.student(tr.teacher, tr.train.objective)
    last = Trained.read(student.trained).steps
    out = []
    for ck in artifacts.checkpoints(student.checkpoints):
        step = int(ck.name.split("-")[1])
        if step != last:
            label = f"{tr.teacher}-{tr.train.objective}@{step}"
            if not tr.train.lora_r:
                model, adapter = str(ck), None
            elif written(run.judge.fables(label), len(ids), samples) or lora():
                model, adapter = base, str(ck)
            else:
                model, adapter = str(run.judge.merged_checkpoints / label), None
                merge_checkpoint(base, ck, Path(model))
            out.append(Writer(label, run.judge.fables(label), model, adapter, ids, samples, max_new))
    return out


def _served(tr, objective: str, run: RunFolder, base: str, lora: bool = True) -> tuple[str, str | None]:
    """(engine model, adapter) of a trained student: its adapter on the shared base, or its
    merged weights when it has no adapter (a full fine-tune) or vLLM serves none on its base."""
    student = run.student(tr.teacher, objective)
    if tr.train.lora_r and lora:
        return base, str(student.adapter)
    return str(student.merged), None


@functools.lru_cache(maxsize=None)
def _arch_serves_lora(arch: str) -> bool:
    # The model class declares it (SupportsLoRA); importing the class loads no weights. An
    # architecture vLLM does not know gets False.
    from vllm.model_executor.models.interfaces import supports_lora
    from vllm.model_executor.models.registry import ModelRegistry

    cls = ModelRegistry._try_load_model_cls(arch)
    return cls is not None and supports_lora(cls)


def lora_served(model_dir: str) -> bool:
    """Whether vLLM can serve LoRA adapters on the model in `model_dir`."""
    archs = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or []
    return bool(archs) and _arch_serves_lora(archs[0])


def merge_checkpoint(base: str, checkpoint: Path, out: Path) -> None:
    """The base with a LoRA checkpoint merged in, saved as safetensors (atomically) with
    the base's tokenizer, for an engine that cannot serve the adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from student.build import merge_adapter

    if (out / "config.json").exists():
        return
    with artifacts.staged_folders(out.parent) as stage:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
        merge_adapter(model, checkpoint).save_pretrained(stage / out.name, safe_serialization=True)
        AutoTokenizer.from_pretrained(base).save_pretrained(stage / out.name)


def write_all(cfg, run: RunFolder, report: bool = True, judge: bool = True, starts=None) -> list[str]:
    """Every missing fables file of the run, one engine start per base student (counted in
    `starts`, a ray_cluster.cluster.EngineStarts). Returns the labels written."""
    from ray_cluster.write_fables import write

    labels = []
    for tr in cfg.teachers:
        ws = writers(cfg, tr, run, report, judge)
        if ws:
            labels += write(ws, cfg.sampling, tr.generation, tr.model, tr.train.lora_r, starts=starts)
    ws = mix_writers(cfg, run, judge)
    if ws:
        from distill.train_stage import mix_teacher

        tr = mix_teacher(cfg)
        labels += write(ws, cfg.sampling, tr.generation, tr.model, tr.train.lora_r, starts=starts)
    shutil.rmtree(run.judge.merged_checkpoints, ignore_errors=True)  # their fables are written
    return labels


def read_samples(run: RunFolder, label: str) -> list[str]:
    """The report's fables of one writer, as the write stage left them."""
    path: Path = run.samples(label)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {label} has not written its fables; rerun the pipeline to write them")
    return StudentFables.read(path).samples[0]
