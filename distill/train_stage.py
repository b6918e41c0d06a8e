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
    the top-k is decoded only when training reads it. KD needs the student to share the
    teacher's token map; SFT into another tokenizer family re-encodes the teacher's text
    (sequence-level distillation)."""
    from distill.schema import holds_split, read_columns, shard_files, tokenizer_fingerprint
    from distill.stream import TrainingShards
    from student.build import check_same_vocab

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
    tok, retokenize_with = student_tokenizer(tr), None
    if tcfg.objective == "kd":
        check_same_vocab(tok, fingerprint, tr.teacher)
    elif tokenizer_fingerprint(tok) != fingerprint:
        retokenize_with = tok
    shards = TrainingShards(files=tuple(str(f.resolve()) for f in files), rows=rows, max_len=tcfg.max_len,
                            exclude=frozenset((r["prompt_id"], r["sample_index"]) for r in removed),
                            tokenizer=retokenize_with)
    return shards, removed


def stage_train(cfg: RunConfig, tr: TeacherRun, objective: str, run: RunFolder, ledger: artifacts.Ledger) -> None:
    from distill.train import train
    from student.build import apply_lora, export, quantize_nf4

    # The SFT baseline trains on the teacher's text only: no on-policy steps.
    tcfg = dataclasses.replace(tr.train, objective=objective, **({"on_policy": 0.0} if objective == "sft" else {}))
    if cfg.judge.enabled and cfg.judge.checkpoints and objective == tr.train.objective:
        tcfg = dataclasses.replace(tcfg, keep_checkpoints=0)  # every checkpoint is a score-against-loss point
    out = run.student(tr.teacher, objective)
    with ledger.stage(f"train-{objective}", tr.teacher) as st:
        if out.trained.exists():
            st["status"] = "skipped"
            return
        shards, removed = training_data(tr, tcfg, run)
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
        trained = Trained(**result, objective=objective, student_kind=tcfg.student_kind,
                          quantization=tcfg.quantization, rows=shards.rows, removed_as_toxic=removed)
        trained.write(out.trained)
        st.update(steps=trained.steps, final_loss=trained.final_loss)
