"""The run report: runs/<name>/report.md, written from the files the stages left."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from distill.artifacts import read_json, write_text_atomic
from distill.run_folder import Evaluated, Generated, HeldOut, JudgeSummary, RunFolder, Trained
from eval.judge_report import inert, sampling_words


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}"


OBJECTIVE_NAMES = {"kd": "KD: top-k KL + CE", "sft": "SFT: CE on the teacher's text"}


def num(x) -> str:
    return "n/a (other tokenizer)" if x is None else f"{x:.3f}"


def adapter(t) -> str:
    if not t.lora_r:
        return "full fine-tuning"
    return f"QLoRA r={t.lora_r} on an nf4 base" if t.quantization == "nf4" else f"LoRA r={t.lora_r}"


def comparison(tr, evals: dict[str, Evaluated]) -> list[str]:
    """The students of one teacher side by side: same start, same data, same steps."""
    if len(evals) < 2:
        return []
    lines = [f"### Distillation against plain fine-tuning ({tr.train.steps} steps each, same student and data)", "",
             "| objective | held-out KL before | KL after | held-out CE before | CE after |",
             "| --- | --- | --- | --- | --- |"]
    after = {}
    for o, ev in evals.items():
        b, a = ev.before, ev.after
        after[o] = a
        lines.append(f"| {OBJECTIVE_NAMES.get(o, o)} | {num(b.kl)} | {num(a.kl)} | {b.ce:.3f} | {a.ce:.3f} |")
    if {"kd", "sft"} <= set(after) and after["sft"].kl is None and after["kd"].ce_per_byte is not None:
        lines += kd_against_sft_per_byte(after["kd"], after["sft"])
    if {"kd", "sft"} <= set(after) and after["sft"].kl is not None:
        kd, sft = after["kd"], after["sft"]
        lines += ["", f"KD ends {'below' if kd.kl < sft.kl else 'ABOVE'} SFT on KL to the teacher "
                      f"({kd.kl:.3f} vs {sft.kl:.3f}) and {'below' if kd.ce < sft.ce else 'above'} it on "
                      f"cross-entropy of the teacher's held-out text ({kd.ce:.3f} vs {sft.ce:.3f})."]
        lines += kd_against_sft(kd, sft)
    return lines + [""]


MIN_PAIRS = 10  # held-out fables below which a bootstrap interval is not read as a verdict


def before_after(before: HeldOut, after: HeldOut) -> str:
    """The student's KL per held-out fable, after − before, with its paired bootstrap interval."""
    from eval.stats import paired_bootstrap

    d = paired_bootstrap([f["kl"] for f in after.per_fable], [f["kl"] for f in before.per_fable])
    if d["n"] < MIN_PAIRS:
        call = f"with {d['n']} fables (fewer than {MIN_PAIRS}) the interval is too rough to call either way"
    elif d["high"] < 0:
        call = "the interval excludes zero: the student moved toward its teacher"
    else:
        call = "the interval does NOT exclude zero: no change shown"
    return (f"Per fable, after − before: {d['mean']:+.4f} nats/token, paired bootstrap 95% interval "
            f"[{d['low']:+.4f}, {d['high']:+.4f}], lower on {d['a_lower']}/{d['n']} fables; {call}.")


def kd_against_sft_per_byte(kd: HeldOut, sft: HeldOut) -> list[str]:
    """Across tokenizers: KD - SFT per held-out fable in nats per byte of the teacher's text."""
    from eval.stats import paired_bootstrap

    d = paired_bootstrap([f["nats_per_byte"] for f in kd.per_fable if f.get("nats_per_byte") is not None],
                         [f["nats_per_byte"] for f in sft.per_fable if f.get("nats_per_byte") is not None])
    if d["n"] < MIN_PAIRS:
        call = f"with {d['n']} fables (fewer than {MIN_PAIRS}) the interval is too rough to call either way"
    elif d["high"] < 0:
        call = "the interval excludes zero: the carried top-k taught more than the text alone"
    elif d["low"] > 0:
        call = "the interval excludes zero the wrong way: KD did worse than the text alone"
    else:
        call = "the interval does NOT exclude zero: no difference shown"
    return ["", f"Across tokenizers, held-out loss on the teacher's text: KD {kd.ce_per_byte:.4f} vs SFT "
                f"{sft.ce_per_byte:.4f} nats/byte. Per fable, KD − SFT: {d['mean']:+.4f} nats/byte, paired bootstrap "
                f"95% interval [{d['low']:+.4f}, {d['high']:+.4f}], KD lower on {d['a_lower']}/{d['n']} fables; {call}."]


def kd_against_sft(kd: HeldOut, sft: HeldOut) -> list[str]:
    """The per-fable difference KD - SFT with its paired bootstrap interval, read plainly."""
    from eval.stats import paired_bootstrap

    lines = ["", "| per held-out fable, KD − SFT | mean difference | 95% paired bootstrap interval | KD lower in |",
             "| --- | --- | --- | --- |"]
    for key, name in (("kl", "top-k KL to the teacher"), ("ce", "CE on the teacher's text")):
        d = paired_bootstrap([f[key] for f in kd.per_fable], [f[key] for f in sft.per_fable])
        lines.append(f"| {name}, nats/token | {d['mean']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] | "
                     f"{d['a_lower']}/{d['n']} fables |")
        if key == "kl" and d["n"] < MIN_PAIRS:
            verdict = f"with {d['n']} fables (fewer than {MIN_PAIRS}) the interval is too rough to call either way"
        elif key == "kl":
            verdict = ("KD is lower and the interval excludes zero: the teacher's logits add something here"
                       if d["high"] < 0 else
                       "KD is higher and the interval excludes zero: here SFT matched the teacher better"
                       if d["low"] > 0 else "the interval includes zero: this run cannot tell KD from SFT")
    return lines + ["", f"On held-out KL, {verdict}."]


def generation_line(tr, gen: Generated) -> str:
    tps = gen.generated_tokens / gen.wall_s if gen.wall_s else float("nan")
    return (f"- Teacher data: {tr.n_train} training and {tr.n_heldout} held-out prompts, top-{tr.generation.top_k} "
            f"logprobs per token, up to {tr.generation.max_new_tokens} new tokens, sampled at {sampling_words(tr.generation)} "
            "(every writer in the run, students included, samples the same way). "
            + (f"This run generated {gen.rows} fables, {gen.generated_tokens} tokens in {gen.wall_s:.0f} s "
               f"({tps:.0f} tokens/s including engine start)." if gen.rows else "All shards were already generated."))


def side_by_side(evals: dict[str, Evaluated]) -> list[str]:
    """The same held-out prompts written by the teacher, the student before training and
    each trained student: what a reader judges distillation by."""
    first = next(iter(evals.values()))
    before = first.before.samples
    if not first.samples:
        return []
    cols = ["student before training"] * bool(before) + [f"{o.upper()} student" for o in evals]
    lines = ["### Fables on held-out prompts", "", "| prompt | teacher | " + " | ".join(cols) + " |",
             "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for i, s in enumerate(first.samples[:3]):
        cells = [inert(s["instruction"], 200), inert(s["teacher"], 500)]
        cells += [inert(before[i], 500)] if before else []
        cells += [inert(ev.samples[i]["student"], 500) for ev in evals.values()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines + [""]


def teacher_section(cfg, tr, run: RunFolder) -> list[str]:
    gen = Generated.read(run.generated(tr.teacher))
    if not cfg.objectives(tr):
        return [f"## Teacher `{tr.teacher}` (compared and judged; no student: distil = false)", "",
                generation_line(tr, gen), ""]
    # Each objective's record, read once; the first is the distilled student's (cfg.objectives).
    evals = {o: Evaluated.read(run.student(tr.teacher, o).evaluated) for o in cfg.objectives(tr)}
    trained, ev = Trained.read(run.student(tr.teacher, tr.train.objective).trained), evals[tr.train.objective]
    b, a = ev.before, ev.after
    if a.kl is None:
        per_byte = (f"{b.ce_per_byte:.4f} → {a.ce_per_byte:.4f} nats/byte, "
                    if a.ce_per_byte is not None and b.ce_per_byte is not None else "")
        carried = (f"; {trained.aligned_share:.0%} of its positions carried the teacher's top-k, the rest trained on CE"
                   if trained.aligned_share is not None and tr.train.objective == "kd" else "")
        headline = (f"**Held-out loss on the teacher's text, in the student's own tokens: {per_byte}"
                    f"{b.ce:.3f} → {a.ce:.3f} nats/token** (another tokenizer family: the teacher's top-k carried "
                    f"onto the student's tokens for KD, distill/align.py{carried}; KL is not comparable across "
                    "token maps)")
    else:
        verdict = "fell" if a.kl < b.kl else "did NOT fall"
        headline = (f"**Held-out KL to the teacher {verdict}: {b.kl:.3f} → {a.kl:.3f} nats/token "
                    f"({(a.kl - b.kl) / b.kl:+.0%})** "
                    f"(over {a.tokens} teacher tokens of {ev.heldout_rows} held-out fables). "
                    + before_after(b, a))
    div = {"forward_kl": "top-k KL", "reverse_kl": "top-k reverse KL",
           "jsd": f"top-k JSD(β={tr.train.jsd_beta})"}[tr.train.divergence]
    loss = (f"{tr.train.kd_weight} × {div} + {1 - tr.train.kd_weight:.1f} × CE" if tr.train.objective == "kd"
            else "cross-entropy on the teacher's text")
    lines = [
        f"## Teacher `{tr.teacher}` → student ({trained.student_kind}, {trained.student_layers} layers)",
        "",
        generation_line(tr, gen),
        f"- Student: {trained.params / 1e6:.1f}M parameters, {trained.trainable_params / 1e6:.2f}M trainable "
        f"({adapter(tr.train)}); objective `{tr.train.objective}` "
        f"(loss = {loss}), {trained.steps} steps"
        + (f"; {tr.train.on_policy:.0%} of steps on the student's own samples, scored by the served teacher."
           if tr.train.on_policy else "."),
        "",
        headline,
        "",
        "| metric (held-out teacher fables, per token) | before training | after training |",
        "| --- | --- | --- |",
        f"| top-{tr.generation.top_k} forward KL(teacher ‖ student), nats | {num(b.kl)} | {num(a.kl)} |",
        f"| cross-entropy on the teacher's tokens, nats | {b.ce:.3f} | {a.ce:.3f} |",
        "",
        *comparison(tr, evals),
        *([f"Toxicity filter (max_toxicity={tr.train.max_toxicity}): {len(trained.removed_as_toxic)} training "
           f"fables removed ({', '.join(r['prompt_id'] for r in trained.removed_as_toxic[:5]) or 'none'}).", ""]
          if tr.train.max_toxicity < 1.0 else []),
        "Training loss (logged every few steps): "
        + ", ".join(f"step {h['step']}: {h['loss']:.3f}" + (f" ({div} {h['train_kd']:.3f})" if "train_kd" in h else "")
                    for h in trained.history),
        "",
    ]
    return lines + side_by_side(evals)


def comparison_table(result: dict) -> list[str]:
    """The writers on the held-out prompts: does each follow its prompt, how toxic, how varied."""
    def f(x, fmt=".2f"):
        return "–" if x is None or x != x else format(x, fmt)

    lines = ["| writer | fables | prompt elements used | toxicity (mean / worst 40-word window) | distinct-2 | judge |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, w in result["writers"].items():
        tox = w["toxicity"]
        lines.append(f"| {name} | {w['fables']} | {f(w['faithfulness']['overall'], '.0%')} | "
                     f"{f(tox['mean'], '.3f')} / {f(tox['window_mean'], '.3f')} | {f(w['distinct']['distinct_2'])} | "
                     f"{f(w['judge'])} |")
    return lines + [""]


def stage_table(stages: list[dict], ray_heads: int | None = None) -> list[str]:
    """Each stage's wall time, and the engines it started with their start-up seconds."""
    lines = ["| stage | teacher | status | wall s | engine starts | engine start s |", "| --- | --- | --- | --- | --- | --- |"]
    for s in stages:
        n = s.get("engine_starts", 0)
        lines.append(f"| {s['stage']} | {s['teacher']} | {s['status']} | {s['wall_s']:.1f} | {n or ''} | "
                     f"{format(s.get('engine_start_s', 0.0), '.1f') if n else ''} |")
    n = sum(s.get("engine_starts", 0) for s in stages)
    took = sum(s.get("engine_start_s", 0.0) for s in stages)
    # Stages may overlap (teachers generating side by side): the span, not the sum, where known.
    timed = [s for s in stages if "started" in s]
    span = (max(s["started"] + s["wall_s"] for s in timed) - min(s["started"] for s in timed) if len(timed) == len(stages)
            else sum(s["wall_s"] for s in stages)) if stages else 0.0
    lines += ["", f"{span:.0f} s from the first stage's start to the last one's end; {n} engine start(s) took "
              f"{took:.0f} s"
              + (f"; {ray_heads} Ray head(s) started." if ray_heads is not None else ".")
              + " An engine's start runs from its job's start to the first request it began: loading, "
              "warm-up and Ray's scheduling. The judge's service starts with the write stage and is "
              "counted in the judge's row: its start overlaps the stages before it."]
    return lines


def _gib(b) -> str:
    return "–" if not b else f"{b / 2**30:.2f} GiB"


def _params(n) -> str:
    return "–" if not n else f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"


def headline_section(cfg, run: RunFolder) -> list[str]:
    """What distillation buys: the distilled teacher and its students, served alike
    (footprint.json), with their judge scores and held-out KL, and the ratios in words."""
    from eval.footprint import headline, sentence, served_memory

    if not run.footprint.exists():
        return []
    fp = read_json(run.footprint)
    models = JudgeSummary.read(run.judge.summary).models if run.judge.summary.exists() else {}
    tr = next(t for t in cfg.teachers if cfg.objectives(t))
    rows = []
    for w in fp["writers"]:
        objective = w["label"].removeprefix(f"{tr.teacher}-") if w["label"] != tr.teacher else None
        ev = run.student(tr.teacher, objective).evaluated if objective else None
        kl = Evaluated.read(ev).after.kl if ev is not None and ev.exists() else (0.0 if objective is None else None)
        judged = (models.get(w["label"] if objective else f"{tr.teacher} (teacher)") or {}).get("overall")
        rows.append({**w, "memory": served_memory(w), "judge": judged, "kl": kl})
    h = headline(rows)
    st = fp["settings"]
    gpu = bool(st.get("gpus"))
    lines = ["## What distillation buys", "", f"**{inert(sentence(h))}**", "",
             f"Each served alone by vLLM, one after another, with the same settings: {st['prompts']} held-out prompts, "
             f"{st['new_tokens']} new tokens each (end of text ignored), {st['dtype']}, "
             + (f"{st['gpus']} GPU(s); memory is CUDA's reserved peak, vLLM's KV-cache reservation included."
                if gpu else f"{st['kv_cache_gib']} GiB KV cache, every core; memory is the serving process's "
                "peak resident set (runtime and KV cache included, so the ratio understates the weights' own).")
             + " Judge score: overall mean with its bootstrap 95% interval; held-out KL to the teacher per token.", "",
             "| writer | parameters | weights on disk | tokens/s | peak memory | judge score [95% CI] | held-out KL |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        j = r["judge"]
        judge = "–" if not j or j.get("mean") != j.get("mean") else f"{j['mean']:.2f} [{j['low']:.2f}, {j['high']:.2f}]"
        tps = "–" if not r.get("tokens_per_s") else f"{r['tokens_per_s']:.1f}"
        kl = "–" if r["kl"] is None else f"{r['kl']:.3f}"
        lines.append(f"| {inert(r['label'])} | {_params(r.get('params'))} | {_gib(r.get('weight_bytes'))} | {tps} | "
                     f"{_gib(r['memory'])} | {judge} | {kl} |")
    return lines + [""]


def _bpb(h) -> str:
    return "–" if h is None else f"{h:.4f}"


def teachers_as_students(cfg, run: RunFolder) -> list[str]:
    """Which teacher makes the best student: one row per distilled teacher (its KD student's
    judge score, held-out loss on that teacher's text in nats per byte, which compares across
    token maps, and what its data cost to generate), and the student of all of them (mix)."""
    from distill.train_stage import MIX

    distilled = [tr for tr in cfg.teachers if cfg.objectives(tr)]
    if len(distilled) < 2 and not cfg.mix:
        return []
    models = JudgeSummary.read(run.judge.summary).models if run.judge.summary.exists() else {}
    lines = ["## Which teacher makes the best student", "",
             "Each teacher's KD student, judged and measured on its own teacher's held-out text (nats per byte of "
             "the text: comparable across tokenizers, unlike per-token losses). Data cost: the teacher's fables, "
             "generated tokens and generation time in this run.", "",
             "| teacher | student | judge score [95% CI] | held-out loss before → after, nats/byte | data |",
             "| --- | --- | --- | --- | --- |"]
    for tr in distilled:
        objective = tr.train.objective
        ev_path, tr_path = run.student(tr.teacher, objective).evaluated, run.student(tr.teacher, objective).trained
        if not ev_path.exists() or not tr_path.exists():
            continue
        ev, trained = Evaluated.read(ev_path), Trained.read(tr_path)
        gen = Generated.read(run.generated(tr.teacher))
        j = (models.get(f"{tr.teacher}-{objective}") or {}).get("overall")
        judge = "–" if not j or j.get("mean") != j.get("mean") else f"{j['mean']:.2f} [{j['low']:.2f}, {j['high']:.2f}]"
        student = tr.train.student_checkpoint if tr.train.student_kind == "checkpoint" else tr.train.student_kind
        lines.append(f"| {inert(tr.teacher)} | {inert(student)} ({trained.student_layers} layers) | {judge} | "
                     f"{_bpb(ev.before.ce_per_byte)} → {_bpb(ev.after.ce_per_byte)} | {gen.rows} fables, "
                     f"{gen.generated_tokens:,} tokens, {gen.wall_s:.0f} s |")
    per = run.student(MIX, "kd").evaluated_per_teacher
    if cfg.mix and per.exists():
        mixed = read_json(per)
        trained = Trained.read(run.student(MIX, "kd").trained)
        cells = "; ".join(f"{inert(t)} (weight {v['weight']:g}) {_bpb(v['before']['ce_per_byte'])} → "
                          f"{_bpb(v['after']['ce_per_byte'])}" for t, v in mixed.items())
        def kd_mean(t: str) -> str:  # a step logs only the teachers whose rows it drew
            v = [h[f"train_kd_{t}"] for h in trained.history if f"train_kd_{t}" in h]
            return f"{t} {sum(v) / len(v):.3f} ({len(v)} steps)" if v else f"{t} –"

        logged = ", ".join(kd_mean(t) for t in mixed)
        j = (models.get(f"{MIX}-kd") or {}).get("overall")
        judged = ("not judged" if not j or j.get("mean") != j.get("mean")
                  else f"judge score {j['mean']:.2f} [{j['low']:.2f}, {j['high']:.2f}]")
        lines += ["", f"**All of them at once** (`mix`, students/{MIX}-kd, {trained.rows} fables, {trained.steps} steps, "
                      f"{judged}): held-out loss on each teacher's text, nats/byte: " + cells + "."
                  + f" KD loss per teacher, mean of the logged steps that drew its rows: {logged}."]
    return lines + [""]


def write_report(cfg, run: RunFolder, stages: list[dict], ray_heads: int | None = None) -> Path:
    lines = [
        f"# Distillation run `{cfg.name}`",
        "",
        f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}.",
        f"Teachers: {', '.join(t.teacher for t in cfg.teachers)}. Evaluation split: {cfg.eval_prompts} prompts "
        "disjoint from training. Configuration: `config.json`; every file and version: `manifest.json`.",
        "",
    ]
    lines += headline_section(cfg, run)
    for tr in cfg.teachers:
        lines += teacher_section(cfg, tr, run)
    lines += teachers_as_students(cfg, run)
    if run.judge.summary.exists():
        from eval.judge_report import judge_table

        lines += ["## The judge", "", *judge_table(JudgeSummary.read(run.judge.summary)), "",
                  "Plots, age groups, per-element breakdown, failures and fables side by side: "
                  "[judge/report.md](judge/report.md) ([HTML](judge/report.html)).", ""]
    if run.comparison.exists():
        lines += ["## Teacher comparison", "", *comparison_table(read_json(run.comparison)),
                  "Similarity between writers, per-element use, the most toxic windows and plots: "
                  "[compare/report.md](compare/report.md) ([HTML](compare/report.html)).", ""]
    lines += ["## Stage times", "", *stage_table(stages, ray_heads)]
    write_text_atomic(run.report, "\n".join(lines) + "\n")
    return run.report
