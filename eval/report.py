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


def teacher_section(cfg, tr, run_dir: Path) -> list[str]:
    gen = read_json(run_dir / "teachers" / tr.teacher / "DONE")
    sdir = run_dir / "students" / f"{tr.teacher}-{tr.train.objective}"
    tr_json, ev = read_json(sdir / "train.json"), read_json(sdir / "eval.json")
    b, a = ev["before"], ev["after"]
    verdict = "fell" if a["kl"] < b["kl"] else "did NOT fall"
    tps = gen["generated_tokens"] / gen["wall_s"] if gen.get("wall_s") else float("nan")
    lines = [
        f"## Teacher `{tr.teacher}` → student ({tr_json['student_kind']}, {tr_json['student_layers']} layers)",
        "",
        f"- Teacher data: {tr.n_train} training and {tr.n_heldout} held-out prompts, top-{tr.generation.top_k} "
        f"logprobs per token, T={tr.generation.temperature}, up to {tr.generation.max_new_tokens} new tokens. "
        + (f"This run generated {gen['rows']} fables, {gen['generated_tokens']} tokens in {gen['wall_s']:.0f} s "
           f"({tps:.0f} tokens/s including engine start)." if gen["rows"] else "All shards were already generated."),
        f"- Student: {tr_json['params'] / 1e6:.1f}M parameters, {tr_json['trainable_params'] / 1e6:.2f}M trainable "
        f"({f'LoRA r={tr.train.lora_r}' if tr.train.lora_r else 'full fine-tuning'}); objective `{tr.train.objective}` "
        f"(loss = {tr.train.kd_weight} × top-k KL + {1 - tr.train.kd_weight:.1f} × CE), {tr_json['steps']} steps.",
        "",
        f"**Held-out KL to the teacher {verdict}: {b['kl']:.3f} → {a['kl']:.3f} nats/token** "
        f"(over {a['tokens']} teacher tokens of {ev['heldout_rows']} held-out fables).",
        "",
        "| metric (held-out teacher fables, per token) | before training | after training |",
        "| --- | --- | --- |",
        f"| top-{tr.generation.top_k} forward KL(teacher ‖ student), nats | {b['kl']:.3f} | {a['kl']:.3f} |",
        f"| cross-entropy on the teacher's tokens, nats | {b['ce']:.3f} | {a['ce']:.3f} |",
        "",
        "Training loss (logged every few steps): "
        + ", ".join(f"step {h['step']}: {h['loss']:.3f} (KL {h.get('train_kd', float('nan')):.3f})" for h in tr_json["history"]),
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
    lines += ["## Stage times", "", "| stage | teacher | status | wall s |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['stage']} | {s['teacher']} | {s['status']} | {s['wall_s']:.1f} |" for s in stages]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
