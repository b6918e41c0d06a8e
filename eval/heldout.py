"""Held-out evaluation of a trained student: top-k KL to its teacher and cross-entropy on the
teacher's held-out text, before and after training, with fables for the report.

Called by the pipeline's evaluate stage; reads the teacher's held-out rows, the exported
student and the fables the write stage left (eval/writers.py) from the run folder
(distill/run_folder.py) and returns the Evaluated record.
"""

from __future__ import annotations

import dataclasses

from distill.run_folder import Evaluated, HeldOut, RunFolder
from eval.writers import read_samples
from student.initial import build_initial_student


def evaluate_student(cfg, tr, objective: str, run: RunFolder) -> Evaluated:
    """The student `objective` of teacher `tr` against its starting point on held-out fables.

    A student of another tokenizer family is measured on the teacher's text in its own tokens
    (distill/align.py): KL to the teacher is not comparable across token maps, so it is left
    out; nats per byte of the text is the figure that compares. Every
    objective starts from the same student, so the starting point (and its fables, for the
    report's side by side) is measured once per teacher and kept in the run folder; a QLoRA
    run's starting point is measured in full precision (the 4-bit base differs slightly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.data import encode_row, pad_id
    from distill.schema import read_rows, tokenizer_fingerprint
    from distill.train_stage import carrier_for
    from teacher.hardware import on_accelerator

    student = run.student(tr.teacher, objective)
    heldout = read_rows(run.teacher(tr.teacher), split="eval")
    tok = AutoTokenizer.from_pretrained(student.merged)
    cross = tokenizer_fingerprint(tok) != heldout[0]["tokenizer_fingerprint"]
    encode = carrier_for(tr, heldout[0]["tokenizer_fingerprint"], run).encode if cross else encode_row
    picks = [r for r in heldout if r["sample_index"] == 0][: cfg.eval.student_samples]

    def measure(model, tok, label: str) -> HeldOut:
        from eval.logit_metrics import heldout_metrics

        m = heldout_metrics(model, pad_id(tok), heldout, tr.train.max_len, encode=encode)
        wrote = read_samples(run, label) if picks else []
        return HeldOut(**{**m, "kl": None if cross else m["kl"]}, samples=wrote)

    initial = run.initial(tr.teacher, own_tokens=cross)
    if initial.exists():
        before = HeldOut.read(initial)
    else:
        base, btok = build_initial_student(tr)
        before = measure(on_accelerator(base), btok, f"{tr.teacher}-initial")
        del base
        before.write(initial)
    merged = on_accelerator(AutoModelForCausalLM.from_pretrained(student.merged, dtype=torch.float32,
                                                                 use_safetensors=True))
    after = measure(merged, tok, f"{tr.teacher}-{objective}")
    samples = [{"prompt_id": r["prompt_id"], "instruction": r["instruction"], "teacher": r["text"], "student": s}
               for r, s in zip(picks, after.samples)]
    return Evaluated(heldout_rows=len(heldout), before=before, after=dataclasses.replace(after, samples=[]),
                     samples=samples)


def evaluate_mix(cfg, run: RunFolder) -> dict:
    """The student of several teachers (`mix`) against its starting point on each teacher's
    held-out text, in nats per byte (the figure that compares across token maps): one entry
    per teacher, with its weight, before and after (per fable too, for paired intervals)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.data import encode_row, pad_id
    from distill.schema import read_rows
    from distill.train_stage import MIX, carrier_for, mix_teacher
    from eval.logit_metrics import heldout_metrics
    from teacher.hardware import on_accelerator

    first = mix_teacher(cfg)
    student = run.student(MIX, "kd")
    tok = AutoTokenizer.from_pretrained(student.merged)
    base = on_accelerator(build_initial_student(first)[0])
    merged = on_accelerator(AutoModelForCausalLM.from_pretrained(student.merged, dtype=torch.float32,
                                                                 use_safetensors=True))
    out = {}
    for tid, weight in cfg.mix.items():
        tr = dataclasses.replace(next(t for t in cfg.teachers if t.teacher == tid), train=first.train)
        rows = read_rows(run.teacher(tid), split="eval")
        carrier = carrier_for(tr, rows[0]["tokenizer_fingerprint"], run)
        encode = carrier.encode if carrier else encode_row
        keep = ("ce", "ce_per_byte", "tokens", "per_fable")
        before, after = (heldout_metrics(m, pad_id(tok), rows, first.train.max_len, encode=encode) for m in (base, merged))
        out[tid] = {"weight": weight, "rows": len(rows), "own_tokens": carrier is None,
                    "before": {k: before[k] for k in keep}, "after": {k: after[k] for k in keep}}
    return out
