"""The run report: runs/<name>/report.md, written from the files the stages left."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from distill.artifacts import read_json, write_text_atomic


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}"


def _clip(text: str, n: int = 700) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + " …"


OBJECTIVE_NAMES = {"kd": "KD: top-k KL + CE", "sft": "SFT: CE on the teacher's text"}


def num(x) -> str:
    return "n/a (other tokenizer)" if x is None else f"{x:.3f}"


def adapter(t) -> str:
    if not t.lora_r:
        return "full fine-tuning"
    return f"QLoRA r={t.lora_r} on an nf4 base" if t.quantization == "nf4" else f"LoRA r={t.lora_r}"


def comparison(cfg, tr, run_dir: Path) -> list[str]:
    """The students of one teacher side by side: same start, same data, same steps."""
    objectives = cfg.objectives(tr)
    if len(objectives) < 2:
        return []
    lines = [f"### Distillation against plain fine-tuning ({tr.train.steps} steps each, same student and data)", "",
             "| objective | held-out KL before | KL after | held-out CE before | CE after |",
             "| --- | --- | --- | --- | --- |"]
    after = {}
    for o in objectives:
        ev = read_json(run_dir / "students" / f"{tr.teacher}-{o}" / "eval.json")
        b, a = ev["before"], ev["after"]
        after[o] = a
        lines.append(f"| {OBJECTIVE_NAMES.get(o, o)} | {num(b['kl'])} | {num(a['kl'])} | {b['ce']:.3f} | {a['ce']:.3f} |")
    if {"kd", "sft"} <= set(after) and after["sft"]["kl"] is not None:
        kd, sft = after["kd"], after["sft"]
        lines += ["", f"KD ends {'below' if kd['kl'] < sft['kl'] else 'ABOVE'} SFT on KL to the teacher "
                      f"({kd['kl']:.3f} vs {sft['kl']:.3f}) and {'below' if kd['ce'] < sft['ce'] else 'above'} it on "
                      f"cross-entropy of the teacher's held-out text ({kd['ce']:.3f} vs {sft['ce']:.3f})."]
    return lines + [""]


def teacher_section(cfg, tr, run_dir: Path) -> list[str]:
    gen = read_json(run_dir / "teachers" / tr.teacher / "DONE")
    sdir = run_dir / "students" / f"{tr.teacher}-{tr.train.objective}"
    tr_json, ev = read_json(sdir / "train.json"), read_json(sdir / "eval.json")
    b, a = ev["before"], ev["after"]
    if a["kl"] is None:
        headline = (f"**Held-out cross-entropy on the teacher's text, in the student's own tokens: {b['ce']:.3f} → "
                    f"{a['ce']:.3f} nats/token** (another tokenizer family: sequence-level distillation, no KL)")
    else:
        verdict = "fell" if a["kl"] < b["kl"] else "did NOT fall"
        headline = (f"**Held-out KL to the teacher {verdict}: {b['kl']:.3f} → {a['kl']:.3f} nats/token** "
                    f"(over {a['tokens']} teacher tokens of {ev['heldout_rows']} held-out fables).")
    loss = (f"{tr.train.kd_weight} × top-k KL + {1 - tr.train.kd_weight:.1f} × CE" if tr.train.objective == "kd"
            else "cross-entropy on the teacher's text")
    tps = gen["generated_tokens"] / gen["wall_s"] if gen.get("wall_s") else float("nan")
    lines = [
        f"## Teacher `{tr.teacher}` → student ({tr_json['student_kind']}, {tr_json['student_layers']} layers)",
        "",
        f"- Teacher data: {tr.n_train} training and {tr.n_heldout} held-out prompts, top-{tr.generation.top_k} "
        f"logprobs per token, T={tr.generation.temperature}, up to {tr.generation.max_new_tokens} new tokens. "
        + (f"This run generated {gen['rows']} fables, {gen['generated_tokens']} tokens in {gen['wall_s']:.0f} s "
           f"({tps:.0f} tokens/s including engine start)." if gen["rows"] else "All shards were already generated."),
        f"- Student: {tr_json['params'] / 1e6:.1f}M parameters, {tr_json['trainable_params'] / 1e6:.2f}M trainable "
        f"({adapter(tr.train)}); objective `{tr.train.objective}` "
        f"(loss = {loss}), {tr_json['steps']} steps"
        + (f"; {tr.train.on_policy:.0%} of steps on the student's own samples, scored by the served teacher."
           if tr.train.on_policy else "."),
        "",
        headline,
        "",
        "| metric (held-out teacher fables, per token) | before training | after training |",
        "| --- | --- | --- |",
        f"| top-{tr.generation.top_k} forward KL(teacher ‖ student), nats | {num(b['kl'])} | {num(a['kl'])} |",
        f"| cross-entropy on the teacher's tokens, nats | {b['ce']:.3f} | {a['ce']:.3f} |",
        "",
        *comparison(cfg, tr, run_dir),
        *([f"Toxicity filter (max_toxicity={tr.train.max_toxicity}): {len(tr_json.get('removed_as_toxic', []))} training "
           f"fables removed ({', '.join(r['prompt_id'] for r in tr_json.get('removed_as_toxic', [])[:5]) or 'none'}).", ""]
          if tr.train.max_toxicity < 1.0 else []),
        "Training loss (logged every few steps): "
        + ", ".join(f"step {h['step']}: {h['loss']:.3f}" + (f" (KL {h['train_kd']:.3f})" if "train_kd" in h else "")
                    for h in tr_json["history"]),
        "",
    ]
    if ev["samples"]:
        lines += ["### Fables on held-out prompts", "", "| prompt | teacher | student |", "| --- | --- | --- |"]
        for s in ev["samples"][:3]:
            cells = [_clip(s["instruction"], 200), _clip(s["teacher"]), _clip(s["student"])]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return lines


def write_report(cfg, run_dir: Path, stages: list[dict]) -> Path:
    lines = [
        f"# Distillation run `{cfg.name}`",
        "",
        f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}.",
        f"Teachers: {', '.join(t.teacher for t in cfg.teachers)}. Evaluation split: {cfg.eval_prompts} prompts "
        "disjoint from training. Configuration: `config.json`; every file and version: `manifest.json`.",
        "",
    ]
    for tr in cfg.teachers:
        lines += teacher_section(cfg, tr, run_dir)
    summary = run_dir / "judge" / "summary.json"
    if summary.exists():
        from eval.judge_report import judge_table

        lines += ["## The judge", "", *judge_table(read_json(summary)), "",
                  "Plots, age groups, per-element breakdown, failures and fables side by side: "
                  "[judge/report.md](judge/report.md) ([HTML](judge/report.html)).", ""]
    if (run_dir / "compare" / "report.md").exists():
        lines += ["## Teacher comparison", "",
                  "Toxicity, diversity, similarity between writers and use of the prompt's elements, for the teachers "
                  "and their students: [compare/report.md](compare/report.md) ([HTML](compare/report.html)).", ""]
    lines += ["## Stage times", "", "| stage | teacher | status | wall s |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['stage']} | {s['teacher']} | {s['status']} | {s['wall_s']:.1f} |" for s in stages]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
