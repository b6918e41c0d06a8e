"""The train stage: one student of one teacher, from the teacher's shards in the run folder
to an exported student (the pipeline's, and `fable-kd train`'s from any folder of shards).
Done when its train.json exists; a killed stage resumes from its last checkpoint."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from distill import artifacts
from distill.config import RunConfig, TeacherRun
from distill.run_folder import RunFolder, Trained
from student.initial import build_initial_student, student_tokenizer


def training_data(tr: TeacherRun, tcfg, run: RunFolder) -> tuple["TrainingShards", list[dict]]:
    """The teacher's training fables for this student, as shards to stream, and those the
    toxicity filter removed. One pass over the light columns counts and filters the rows;
    the top-k is decoded only when training reads it. A student of another tokenizer family
    reads the teacher's text re-encoded: SFT as sequence-level distillation, KD with the
    teacher's top-k carried onto its tokens (distill/align.py)."""
    from distill.schema import holds_split, read_columns, shard_files
    from distill.stream import TrainingShards

    files = [f for f in shard_files(run.teacher(tr.teacher)) if holds_split(f, "train")]
    rows, removed, fingerprint = 0, [], None
    for f in files:
        light = [r for r in read_columns(f, ["prompt_id", "sample_index", "split", "text", "tokenizer_fingerprint"])
                 if r["split"] == "train"]
        fingerprint = fingerprint or (light[0]["tokenizer_fingerprint"] if light else None)
        if tcfg.max_toxicity < 1.0 and light:
            from eval.toxicity import filter_toxic

            light, out = filter_toxic(light, tcfg.max_toxicity)
            removed += out
        rows += len(light)
    if fingerprint is None:
        raise ValueError(f"teacher.{tr.teacher}: no training fables in {run.teacher(tr.teacher)}")
    if not rows:
        raise ValueError(f"teacher.{tr.teacher}: max_toxicity={tcfg.max_toxicity} removed every training fable")
    shards = TrainingShards(files=tuple(str(f.resolve()) for f in files), rows=rows, max_len=tcfg.max_len,
                            exclude=frozenset((r["prompt_id"], r["sample_index"]) for r in removed),
                            carrier=carrier_for(tr, fingerprint, run))
    return shards, removed


def carrier_for(tr: TeacherRun, fingerprint: str, run: RunFolder):
    """None when the student reads the teacher's token map; else the Carrier that re-encodes
    the teacher's rows for it (distill/align.py), after checking the shards are this teacher's."""
    from distill.schema import tokenizer_fingerprint
    from student.initial import teacher_tokenizer

    tok = student_tokenizer(tr)
    if tokenizer_fingerprint(tok) == fingerprint:
        return None
    from distill.align import Carrier

    ttok = teacher_tokenizer(tr)
    if tokenizer_fingerprint(ttok) != fingerprint:
        raise ValueError(f"teacher.{tr.teacher}: its shards in {run.teacher(tr.teacher)} were written with another "
                         f"tokenizer (fingerprint {fingerprint}; the teacher's is {tokenizer_fingerprint(ttok)}): "
                         "they are not this teacher's")
    return Carrier(ttok, tok)


def stage_train(cfg: RunConfig, tr: TeacherRun, objective: str, run: RunFolder, ledger: artifacts.Ledger) -> None:
    # The SFT baseline trains on the teacher's text only: no on-policy steps, no divergence.
    sft = {"on_policy": 0.0, "divergence": "forward_kl", "jsd_beta": 0.5}
    tcfg = dataclasses.replace(tr.train, objective=objective, **(sft if objective == "sft" else {}))
    if cfg.judge.enabled and cfg.judge.checkpoints and objective == tr.train.objective:
        tcfg = dataclasses.replace(tcfg, keep_checkpoints=0)  # every checkpoint is a score-against-loss point
    out = run.student(tr.teacher, objective)
    with ledger.stage(f"train-{objective}", tr.teacher) as st:
        if out.trained.exists():
            st["status"] = "skipped"
            return
        shards, removed = training_data(tr, tcfg, run)
        trained = _fit(tr, tcfg, shards, removed, out, run)
        st.update(steps=trained.steps, final_loss=trained.final_loss)


MIX = "mix"  # the run folder's name for the student of several teachers: students/mix-kd


def mix_teacher(cfg: RunConfig) -> TeacherRun:
    """The first listed teacher of the mix: its [train] settings (a checkpoint student) train
    the student of several teachers."""
    return next(tr for tr in cfg.teachers if tr.teacher in cfg.mix)


def mix_data(cfg: RunConfig, run: RunFolder) -> tuple["TrainingShards", list[dict]]:
    """Every mixed teacher's training shards as one stream: each file tagged with its teacher,
    whose weight scales its rows' loss and whose top-k is carried onto the student's tokens
    where their token maps differ (distill/stream.py Source)."""
    from distill.stream import Source, TrainingShards

    first = mix_teacher(cfg)
    files, file_source, sources, exclude, removed, rows = [], [], [], set(), [], 0
    for i, (tid, weight) in enumerate(cfg.mix.items()):
        tr = dataclasses.replace(next(t for t in cfg.teachers if t.teacher == tid), train=first.train)
        part, out = training_data(tr, first.train, run)
        files += part.files
        file_source += [i] * len(part.files)
        sources.append(Source(tid, float(weight), part.carrier))
        exclude |= {(i, *key) for key in part.exclude}
        removed += [{**r, "teacher": tid} for r in out]
        rows += part.rows
    return TrainingShards(files=tuple(files), rows=rows, max_len=first.train.max_len, exclude=frozenset(exclude),
                          file_source=tuple(file_source), sources=tuple(sources)), removed


def stage_train_mix(cfg: RunConfig, run: RunFolder, ledger: artifacts.Ledger) -> None:
    """One student from several teachers' shards at once (`mix` in the config): KD from each
    teacher's top-k, weighted per teacher, with the loss logged per teacher."""
    if not cfg.mix:
        return
    tr = mix_teacher(cfg)
    tcfg = dataclasses.replace(tr.train, objective="kd", on_policy=0.0)
    out = run.student(MIX, "kd")
    with ledger.stage("train-kd", MIX) as st:
        if out.trained.exists():
            st["status"] = "skipped"
            return
        shards, removed = mix_data(cfg, run)
        trained = _fit(tr, tcfg, shards, removed, out, run)
        st.update(steps=trained.steps, final_loss=trained.final_loss, teachers=list(cfg.mix))


def _fit(tr: TeacherRun, tcfg, shards, removed: list, out, run: RunFolder) -> Trained:
    """Build, train, export and record one student (resuming from its last checkpoint)."""
    from distill.train import train
    from student.build import apply_lora, export, quantize_nf4

    scratch = run.root.resolve()  # here: a Ray Train worker runs build() in a folder of its own

    def build():  # seeded (build_initial_student): every Ray Train worker builds the same student
        model, tok = build_initial_student(tr)
        if tcfg.quantization == "nf4":
            with tempfile.TemporaryDirectory(dir=scratch) as d:
                model = quantize_nf4(model, Path(d), tr.generation.trust_remote_code, tcfg.precision)
        if tcfg.lora_r:
            model = apply_lora(model, tcfg.lora_r, tcfg.lora_alpha, tcfg.lora_dropout)
        return model, tok

    def finish(model, tok, result, folder=out.path):
        paths = export(model, tok, folder, full_precision_base=lambda: build_initial_student(tr)[0])
        result.update({"student_layers": model.config.num_hidden_layers,
                       "params": sum(p.numel() for p in model.parameters()),
                       "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                       **{k: str(v) for k, v in paths.items()}})

    if tcfg.workers > 1:
        from distill.train_ray import train_on_ray

        result = train_on_ray(build, shards, out.path, tcfg, finish)
    else:
        scorer = None
        if tcfg.on_policy:
            from distill.onpolicy import endpoint_scorer

            scorer = endpoint_scorer(tr.teacher, tr.generation.top_k)
        model, tok = build()
        result = train(model, tok, shards, out.path, tcfg, scorer=scorer)
        finish(model, tok, result)
    trained = Trained(**result, objective=tcfg.objective, student_kind=tcfg.student_kind,
                      quantization=tcfg.quantization, rows=shards.rows, removed_as_toxic=removed)
    trained.write(out.trained)
    return trained
