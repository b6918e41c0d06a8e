"""BENCHMARKS.md from the measured figures (BENCHMARKS.json): one section per measurement,
each with what it is compared with and the machine it ran on."""

from __future__ import annotations

import json

from benchmarks import ROOT
from benchmarks.machine import machine
from eval.controls import KINDS


BUDGET_S = 20 * 60  # the default run's target on 2 cores


def _rho(rho: float, low: float, high: float) -> str:
    """A correlation with its interval."""
    return f"{rho:.2f} [{low:.2f}, {high:.2f}]"


def _ci(d: dict) -> str:
    return _rho(d["rho"], d["low"], d["high"])


def _control_kinds(rows) -> list[str]:
    """Every control kind any row measured, in order of first appearance."""
    return list(dict.fromkeys(kind for r in rows for kind in (r.get("controls") or {})))


def _control_cells(controls: dict | None, kinds: list[str]) -> list[str]:
    """A row's cell per control kind: its accuracy of its pairs, – where it has none."""
    return [f"{c['accuracy']:.0%} of {c['pairs']}" if (c := (controls or {}).get(k)) and c["pairs"] else "–"
            for k in kinds]


def _control_header(kinds: list[str]) -> str:
    return " | ".join(f"{k} ({KINDS[k].criterion})" for k in kinds)


def render_judge(j: dict) -> list[str]:
    """Method x judge model: control accuracies, agreement with the reference per fable and
    over writers (with intervals), age-group kappa, seconds per verdict."""
    rows = {k: v for k, v in j.items() if " / " in k}
    kinds = _control_kinds(rows.values())
    lines = ["## Judge methods and models (`python -m eval.protocol score` / `agree`)", "",
             f"Each method with each embedded judge on {j['fables_per_writer']} TinyFabulist fables per teacher "
             "(Mistral-7B, Llama-3.1-8B, Falcon3-7B) and their control copies, against the reference verdicts "
             "(gpt-4o for Mistral and Llama, o3-mini for Falcon), joined on (writer, hash). A control's cell is the "
             "share of pairs in which the judge scored the named criterion of the real fable above the copy's "
             "(goal ≥ 90%). Per-fable and writer-level correlations carry bootstrap 95% intervals; with three "
             "writers, the writer-level figures can only be read as a direction.", "",
             "| method / judge | " + _control_header(kinds)
             + " | Spearman per fable, overall | per criterion | writers: Spearman | writers: Kendall | age κ | s / verdict |",
             "| --- | " + " | ".join("---" for _ in kinds) + " | --- | --- | --- | --- | --- | --- |"]
    for key, r in rows.items():
        crit = ", ".join(f"{name} {_ci(v)}" for name, v in r["spearman"].items() if name != "overall")
        w = r["writers"]
        kappa = r.get("age_group_kappa")
        lines.append(f"| {key} | " + " | ".join(_control_cells(r.get("controls"), kinds))
                     + f" | {_ci(r['spearman']['overall'])} | {crit} | "
                     f"{_ci(w['spearman'])} | {_ci(w['kendall'])} | {'–' if kappa is None or kappa != kappa else f'{kappa:.2f}'} | "
                     f"{r['s_per_verdict']:.1f} |")
    return lines + ([""] + [j["note"]] if j.get("note") else []) + [""]


def render_judge_run(jr: dict) -> list[str]:
    """The default run re-judged per judge set-up: does each criterion move the right way on
    its control, and at what cost."""
    setups = jr["setups"]
    kinds = _control_kinds(setups.values())
    runs = list(dict.fromkeys(r.get("run") or jr["run"] for r in setups.values()))
    lines = ["## Judge set-ups on the default run's controls (`python -m eval.protocol run`)", "",
             (f"The default run ({jr['run']}) re-judged with each set-up" if len(runs) == 1 else
              "Default runs (" + "; ".join(f"run {i + 1}: {r}" for i, r in enumerate(runs)) + ", each with the same "
              "configuration and seed) re-judged with each set-up")
             + ", every verdict fresh: real teacher fables "
             "against copies changed to lower one criterion each (eval/controls.py). A cell is the share of pairs in "
             "which the named criterion of the real fable scored above the copy's (ties half; goal ≥ 90%). Age: "
             "Spearman of the guessed age group with the fables' Flesch-Kincaid grade. Judge s: the whole re-judge, "
             "engine start included. The Qwen judges share a family (and a tokenizer) with the Qwen teacher and "
             "both students. A likelihood row names how it read the criteria (eval/likelihood.py METHOD); one that "
             "names none read the plot from p alone (before 900c890) and judged no training fables.", "",
             "| judge set-up | " + _control_header(kinds)
             + " | age vs grade | score vs loss | fables | judge s |",
             "| --- | " + " | ".join("---" for _ in kinds) + " | --- | --- | --- | --- |"]
    nan = float("nan")
    for name, r in setups.items():
        a = r["age_check"] or {}
        age = "one group" if a.get("distinct_groups", 0) < 2 and not a.get("expected") else _ci(a)
        v = r["score_vs_loss"] or {}
        svl = _rho(v.get("spearman", nan), v.get("spearman_low", nan), v.get("spearman_high", nan))
        which = f" (run {runs.index(r.get('run') or jr['run']) + 1})" if len(runs) > 1 else ""
        if r.get("method") and name.startswith("likelihood"):
            which += f" [{r['method']}]"
        lines.append(f"| {name}{which} | " + " | ".join(_control_cells(r["controls"], kinds))
                     + f" | {age} | {svl} | {r['fables']} | {r['wall_s']:.0f} |")
    lines += ["", "Writers' overall means per set-up:", "",
              "| judge set-up | " + " | ".join(next(iter(setups.values()))["writers"]) + " |",
              "| --- | " + " | ".join("---" for _ in next(iter(setups.values()))["writers"]) + " |"]
    for name, r in setups.items():
        which = f" (run {runs.index(r.get('run') or jr['run']) + 1})" if len(runs) > 1 else ""
        lines.append(f"| {name}{which} | " + " | ".join(f"{o['mean']:.2f} [{o['low']:.2f}, {o['high']:.2f}]"
                                                         for o in r["writers"].values()) + " |")
    return lines + ([""] + [jr["note"]] if jr.get("note") else []) + [""]


def render_sweep(sw: dict) -> list[str]:
    from eval.stats import paired_bootstrap

    b = sw["before"]
    base = next((v for v in sw["variants"] if v["variant"] == "run"), None)
    lines = ["## Why KD wins or loses: a sweep over the default's training settings (`benchmarks/kd_sweep.py`)", "",
             f"The default run's {sw['teacher']} data, the pretrained student trained again per variant (each changes "
             "[train] settings of configs/default.toml; `run` is the default itself), then held-out top-20 KL and CE "
             f"on the teacher's text. Before training: KL {b['kl']:.3f}, CE {b['ce']:.3f} nats/token. The last column "
             "pairs each variant's per-fable KL with the default's (bootstrap 95% interval).", "",
             "| variant | KL after | KL change | CE after | last logged training loss (its own objective) | train s | KL − default's, per fable |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for v in sw["variants"]:
        diff = ""
        if base is not None and v is not base:
            d = paired_bootstrap([f["kl"] for f in v["per_fable"]], [f["kl"] for f in base["per_fable"]])
            diff = f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        lines.append(f"| {v['variant']} | {v['kl']:.3f} | {v['kl'] / b['kl'] - 1:+.0%} | {v['ce']:.3f} | "
                     f"{v['final_loss']:.3f} | {v['train_s']:.0f} | {diff} |")
    return lines + ([""] + [sw["note"]] if sw.get("note") else []) + [""]


def render_train_steps(steps: dict) -> list[str]:
    sft = steps["sft"]
    gib = 2**30
    lines = ["## Training step: distillation against plain cross-entropy", "",
             f"Pruned SmolLM2 student (15 layers) with LoRA r=16, one batch of 4 × 256 tokens "
             f"({sft['teacher_tokens']} teacher tokens), AdamW, through `KDTrainer.training_step`; each variant in its "
             f"own process, median of {sft['steps']} steps after a warm-up, {sft['threads']} threads. Peak memory is the "
             "process's peak resident set; 'step memory' is what a step adds on top of the resident model and optimizer.", "",
             "| step | s/step | time ratio | peak RSS GiB | memory ratio | step memory GiB | step memory ratio |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    names = {"sft": "plain cross-entropy (SFT)", "kd-topk": "KD, teacher top-20 (default)",
             "kd-dense": "KD, dense teacher logits (49,152 per token)"}
    for k, v in steps.items():
        lines.append(f"| {names[k]} | {v['step_s']:.2f} | {v['step_s'] / sft['step_s']:.2f} | {v['peak_rss'] / gib:.2f} | "
                     f"{v['peak_rss'] / sft['peak_rss']:.3f} | {v['step_extra_bytes'] / gib:.2f} | "
                     f"{v['step_extra_bytes'] / max(sft['step_extra_bytes'], 1):.2f} |")
    t = steps["kd-topk"]
    lines += ["", f"KD with top-k logits: **{t['step_s'] / sft['step_s']:.2f}x** the time and "
                  f"**{t['peak_rss'] / sft['peak_rss']:.3f}x** the peak memory of the cross-entropy step "
                  "(targets: at most 1.1x and 1.05x). The dense teacher's logits for this one batch alone are "
                  f"{steps['kd-dense']['teacher_tokens'] * 49152 * 4 / 2**20:.0f} MiB in float32; its top-20 in the "
                  "stored form is about 38 bytes per token.", ""]
    return lines


def render_scale(sc: dict) -> list[str]:
    from benchmarks.scale import BATCH, BUFFER, GENERATED, PROMPT, TOP_K, VOCAB
    from distill.stream import ROWS_PER_BLOCK

    mib = 2**20
    lines = ["## Training data at scale: memory and rows/s against the number of rows", "",
             f"Synthetic rows of production's shape ({PROMPT}-token prompt, {GENERATED} generated tokens, top-{TOP_K} "
             f"of a {VOCAB:,}-token vocabulary), 2,000 written by the schema's writer and linked under more names for "
             f"larger datasets; a full pass batched ({BATCH} rows a batch, shuffle buffer {BUFFER}) without the model, "
             "each measurement in a fresh process (`benchmarks/scale.py`). Memory: peak resident above the start, "
             "anonymous plus, for Ray, the object store's shared pages a worker reads its rows from. Ray Data reads "
             f"whole shards in blocks of about {ROWS_PER_BLOCK} rows, one Ray task a block (`distill/stream.py`).", "",
             "rows/s counts from the first row; what comes before it (Ray Data's executor and Ray Train's workers "
             "starting) is its own column.", "",
             "| path | rows | driver MiB | training worker MiB | rows/s | s to the first row |",
             "| --- | --- | --- | --- | --- | --- |"]
    for way, name in (("one", "one process (`train.workers = 1`)"), ("ray", "Ray Data into 2 Ray Train workers")):
        runs = sorted((r for r in sc["runs"] if r["way"] == way), key=lambda r: r["rows"])
        for r in runs:
            wp = f"{r['worker_peak'] / mib:.0f}" if r["worker_peak"] is not None else "(the driver)"
            lines.append(f"| {name} | {r['rows']:,} | {r['driver_peak'] / mib:.0f} | {wp} | {r['rows_per_s']:.0f} | "
                         f"{r['first_row_s']:.1f} |")
    lines.append("")
    for way, name in (("one", "One process"), ("ray", "Ray")):
        runs = sorted((r for r in sc["runs"] if r["way"] == way), key=lambda r: r["rows"])
        if len(runs) < 2:
            continue
        lo, hi = runs[0], runs[-1]
        peak = lambda r: max(r["driver_peak"], r["worker_peak"] or 0)  # noqa: E731
        mem, speed = peak(hi) / peak(lo), hi["rows_per_s"] / lo["rows_per_s"]
        # the change in percent to two places: 0.8997x, a miss, prints as 0.90x at two
        lines.append(f"- {name}: peak memory at {hi['rows']:,} rows is **{mem:.2f}x** that at {lo['rows']:,} "
                     f"(goal at most 1.2x, {'met' if mem <= 1.2 else 'missed'}); rows/s **{(speed - 1) * 100:+.2f}%** "
                     f"(goal: at most 10% slower, {'met' if speed >= 0.9 else 'missed'}).")
    return lines + [""]


def render_gpu_train(runs: list[dict]) -> list[str]:
    """benchmarks/gpu_check.sh's train-<objective>.json: distill.train on the GPU."""
    gib = 2**30
    return ["## The train entry on a GPU (`benchmarks/gpu_check.sh`)", "",
            "`distill.train.train`, as the pipeline calls it, on a random model of the default student's shape "
            "(Qwen2.5-0.5B) with LoRA r=16 in bf16: 8 steps of 4 x 2 rows (unequal lengths, top-20), killed after "
            "step 5 and resumed from its step-4 checkpoint to the uninterrupted run's adapter.", "",
            "| device | objective | data | loss, step 1 -> 8 | s for 8 steps | peak GPU GiB | resumed from |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *[f"| {r['device']} | {r['objective']} | {r['data']} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} | "
              f"{r['train_runtime_s']:.1f} | {r['peak_gpu_bytes'] / gib:.2f} | {r['resumed_from']} |" for r in runs], ""]


def render_prune(p: dict) -> list[str]:
    from benchmarks.prune import KEEP, LAYERS

    gib, w = 2**30, p["weights_bytes"]
    whole, kept = p["ways"]["whole"], p["ways"]["kept"]
    return ["## Building a pruned student: peak memory", "",
            f"A random Llama of {LAYERS} layers ({p['params'] / 1e6:.0f}M parameters, {w / gib:.2f} GiB of bf16 "
            f"safetensors) pruned to {KEEP} layers, as production prunes 32 to 8, each way in a fresh process: the "
            "peak anonymous memory above the process's start, and the peak resident set, which also counts the "
            "safetensors pages read through mmap (`benchmarks/prune.py`).", "",
            "| way | CPU memory GiB | resident set GiB | x the teacher's weights | x the student it builds |",
            "| --- | --- | --- | --- | --- |",
            *[f"| {name} | {v['peak_above_start'] / gib:.2f} | {v['peak_rss_above_start'] / gib:.2f} | "
              f"{v['peak_above_start'] / w:.2f} | {v['peak_above_start'] / v['student_bytes']:.2f} |"
              for name, v in (("whole teacher in float32, then pruned (before)", whole),
                              ("kept layers only, from safetensors (`load_pruned`)", kept))],
            "", f"`load_pruned` needs **{kept['peak_above_start'] / whole['peak_above_start']:.2f}x** the memory of "
                "loading the whole teacher in float32 (goal: no float32 copy of the teacher).", ""]


def render_prune_gpu(runs: list[tuple[str, dict]]) -> list[str]:
    """benchmarks/gpu_check.sh's prune-7b.json: a Mistral-7B-shaped random checkpoint pruned to 8
    layers, the former way (the whole teacher in float32 on the CPU) against load_pruned (bf16,
    straight onto the GPU), each in a fresh process on the lent GPU machine."""
    gib = 2**30
    lines = ["### On the GPU: a Mistral-7B-shaped teacher pruned to 8 of 32 layers", "",
             "Random weights in Mistral-7B's shape (bf16 safetensors shards), from `benchmarks/gpu_check.sh` "
             "(`tests/student/test_gpu.py`); CPU memory is the peak anonymous memory above the process's start "
             "(the mmap'd safetensors pages, which the kernel can drop, in the resident-set column).", "",
             "| run | way | CPU memory GiB | resident set GiB | student GiB | CPU memory ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for when, r in runs:
        whole, kept = r["ways"]["whole"], r["ways"]["kept"]
        for name, v in (("whole teacher, float32, CPU (before)", whole), ("`load_pruned`, bf16, GPU", kept)):
            lines.append(f"| {when} | {name} | {v['peak_above_start'] / gib:.2f} | {v['peak_rss_above_start'] / gib:.2f} | "
                         f"{v['student_bytes'] / gib:.2f} | {v['peak_above_start'] / whole['peak_above_start']:.3f} |")
    return lines + [""]


def _gpu_spread(runs: list[tuple[str, dict]]) -> str:
    if len(runs) < 2:
        return ""
    kd = [r["variants"]["kd-topk"] for _, r in runs]
    spread = {f: max(v[f] for v in kd) - min(v[f] for v in kd) for f in ("time_vs_sft", "memory_vs_sft")}
    return (f" Across the {len(runs)} runs KD top-20's time ratio spans {spread['time_vs_sft']:.2f} and its memory "
            f"ratio {spread['memory_vs_sft']:.2f}: step-time differences that small are noise between runs.")


GPU_SHAPES = {
    "qwen2.5-0.5b": "the default student's architecture (Qwen2.5-0.5B, 151,936-token vocabulary), LoRA r=16 on "
                    "every linear layer in every variant",
    "llama2-7b": "Llama-2-7B's shape (6.7B parameters, 32,000-token vocabulary), gradients for every weight, then "
                 "LoRA r=16 on every linear layer (the lora- rows)",
}


GPU_STEPS = {"sft": "plain cross-entropy (SFT)", "kd-topk": "KD, teacher top-20 (default)",
             "kd-dense": "KD, dense teacher logits", "lora-sft": "LoRA, plain cross-entropy",
             "lora-kd-topk": "LoRA, KD, teacher top-20", "sft-adamw": "plain cross-entropy + AdamW step",
             "lora-sft-adamw": "LoRA, plain cross-entropy + AdamW step"}


def render_gpu(runs: list[tuple[str, dict]]) -> list[str]:
    """One table per model shape over every kept run of the GPU check, so run-to-run noise
    is visible. Runs from before shapes were recorded measured the Qwen2.5-0.5B shape."""
    lines = ["## Training step on a GPU (`bash benchmarks/gpu_check.sh`, lent machine)", "",
             "Built from a config with random weights, bf16, forward + backward through `distill.losses`, median of "
             "the steps after a warm-up, all variants in one process. Not part of `make bench` (CI and this laptop "
             "have no GPU); the check's output is kept in benchmarks/results/, one file per run. Ratios compare "
             "variants within one run, against its first (cross-entropy) step. Rows without AdamW take no "
             "optimizer step: there a full-weight backward frees activations as it fills gradients, so its peak is "
             "the activations' and LoRA saves nothing. The AdamW rows (runs since 2026-11-27c) add the step, whose "
             "state for every weight is what LoRA avoids.", ""]
    for shape, text in GPU_SHAPES.items():
        mine = [(n, r) for n, r in runs if r.get("shape", "qwen2.5-0.5b") == shape]
        if not mine:
            lines += [f"{text[0].upper() + text[1:]}: not measured yet (no GPU machine since it was added).", ""]
            continue
        g = mine[0][1]
        lines += [f"{text[0].upper() + text[1:]}; {g['device']}, torch {g['torch']}, {g['rows']} × {g['seq']} tokens."
                  + _gpu_spread(mine), "",
                  "| run | step | s/step | time ratio | peak GiB | memory ratio |", "| --- | --- | --- | --- | --- | --- |"]
        for name, run in mine:
            for k, v in run["variants"].items():
                figures = ("out of memory | – | – | –" if v.get("out_of_memory") else
                           f"{v['median_s']:.3f} | {v['time_vs_sft']:.2f} | {v['peak_gib']:.1f} | {v['memory_vs_sft']:.2f}")
                lines.append(f"| {name.removesuffix('-' + shape)} | {GPU_STEPS[k]} | {figures} |")
        lines.append("")
    return lines


def render_default(default: dict) -> list[str]:
    """The default run: stage times, held-out KL, KD against SFT, the goals, generation against its bounds."""
    s = default["process_s"]
    lines = ["## The default run (`make distill`, configs/default.toml, models already built)", "",
             f"Total: **{s / 60:.1f} min** against the 20-minute budget: {s / BUDGET_S:.2f} of it (wall clock; "
             "stages that ran side by side, as the teachers' generate stages under parallel_teachers, overlap).", "",
             "| stage | teacher | wall s | share of run | engine starts | engine start s |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {st['stage']} | {st['teacher']} | {st['wall_s']:.1f} | {st['wall_s'] / s:.0%} | "
              f"{st.get('engine_starts') or ''} | {format(st['engine_start_s'], '.1f') if st.get('engine_starts') else ''} |"
              for st in default["stages"]]
    n = sum(st.get("engine_starts", 0) for st in default["stages"])
    if n:
        heads = default.get("ray_heads_started")
        lines += ["", f"{n} engine start(s) took {sum(st.get('engine_start_s', 0) for st in default['stages']):.0f} s"
                  + (f"; {heads} Ray head(s) started for the whole run" if heads is not None else "")
                  + " (an engine's start: from its job's start to the first request it began)."]
    lines += ["", "Held-out top-20 KL to the teacher (nats/token), before → after training:", ""]
    lines += [f"- {t}: {v['before']:.3f} → {v['after']:.3f} ({v['after'] / v['before']:.2f}×)" for t, v in default["kl"].items()]
    lines += ["", "KD against SFT (same student, data and steps; held-out, nats/token):", "",
              "| teacher | student | KL before | KL after | CE before | CE after |", "| --- | --- | --- | --- | --- | --- |"]
    for t in default["kl"]:
        for name, v in (("KD", default["kl"][t]), ("SFT", default["sft"][t])):
            lines.append(f"| {t} | {name} | {v['before']:.3f} | {v['after']:.3f} | {v['ce_before']:.3f} | {v['ce_after']:.3f} |")
    for t, d in default["kd_minus_sft"].items():
        lines.append(f"\nKD − SFT held-out KL per fable ({t}): {d['mean']:+.4f} nats/token, paired bootstrap 95% "
                     f"interval [{d['low']:+.4f}, {d['high']:+.4f}], KD lower on {d['a_lower']}/{d['n']} fables "
                     "(goal: below zero, interval excluding it).")
    drop = {t: 1 - v["after"] / v["before"] for t, v in default["kl"].items()}
    moved = default.get("after_minus_before", {})
    lines += ["", "Goals of the default run:", "",
              *[f"- held-out KL of the {t} student falls by **{d:.0%}**"
                + (f", per fable after − before {moved[t]['mean']:+.4f} [{moved[t]['low']:+.4f}, {moved[t]['high']:+.4f}] "
                   "(goal: interval excluding zero; the ≥ 30% fall belongs to the production plan, issue 21)"
                   if t in moved else "") for t, d in drop.items()],
              *[f"- {w} uses **{u:.0%}** of its prompts' elements"
                + (" (goal ≥ 60% for the distillation teacher)" if w in default["kl"] else "")
                for w, u in default["elements_used"].items() if u is not None]]
    c = default.get("shuffled_control")
    if c and c["pairs"]:
        who = default.get("judge_setup") or {}
        judge = f" ({who['model']}, {who['mode']})" if who.get("model") else ""
        lines.append(f"- the judge{judge} scores the real fable above its word-shuffled copy in **{c['accuracy']:.0%}** "
                     f"of {c['pairs']} pairs (goal ≥ 90%)")
    for kind, k in (default.get("controls") or {}).items():
        if kind != "shuffled words" and k["pairs"]:
            lines.append(f"- {k['criterion']} scored lower on the {kind} control than on the real fable in "
                         f"**{k['accuracy']:.0%}** of {k['pairs']} pairs (goal ≥ 90%)")
    curve = default.get("score_vs_loss") or {}
    if curve.get("points"):
        lines.append(f"- judge score against training loss over {len(curve['points'])} checkpoints: Spearman "
                     + _rho(curve["spearman"], curve.get("spearman_low", float("nan")),
                            curve.get("spearman_high", float("nan"))))
    fp = default.get("footprint")
    if fp:
        from eval.footprint import served_memory

        st, w = fp["settings"], fp["writers"]
        lines += ["", f"### What distillation buys: each writer served alone by vLLM ({st['prompts']} prompts × "
                      f"{st['new_tokens']} tokens, {st['dtype']}, {st['kv_cache_gib']} GiB KV cache; memory: the serving "
                      "process's peak resident set)", "",
                  "| writer | parameters | weights on disk | tokens/s | × teacher's | peak memory GiB | teacher's ÷ this |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for x in w:
            lines.append(f"| {x['label']} | {x['params'] / 1e9:.2f}B | {x['weight_bytes'] / 2**30:.2f} GiB | "
                         f"{x['tokens_per_s']:.1f} | {x['tokens_per_s'] / w[0]['tokens_per_s']:.2f} | "
                         f"{served_memory(x) / 2**30:.2f} | {served_memory(w[0]) / served_memory(x):.2f} |")
    lines += ["", f"### Generation against its bounds (copy bandwidth {default['bandwidth_gbs']:.1f} GB/s, float32 "
                  f"matrix products {default.get('gflops', float('nan')):.0f} GFLOP/s)", "",
              "| teacher | weights | rows | tokens/s measured (engine start included) | decoding steps/s bound | "
              "tokens/s bound by bandwidth, every row in flight | tokens/s bound by compute |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for t, g in default["generation"].items():
        tps = g["generated_tokens"] / g["wall_s"] if g.get("wall_s") else float("nan")
        lines.append(f"| {t} | {g['params'] / 1e9:.2f}B × {g['dtype']} = {g['weight_bytes'] / 1e9:.1f} GB | {g['rows']} | "
                     f"{tps:.1f} | {g['steps_per_s_bound']:.2f} | {g['steps_per_s_bound'] * g['rows']:.0f} | "
                     f"{g.get('tokens_per_s_compute_bound', float('nan')):.0f} |")
    lines.append("")
    return lines


def render_decoding(d: dict) -> list[str]:
    """The distillation teacher's decoding against its bounds, nucleus by sort and sort-free.
    The compute bound is per token through the model: a prompt token costs what a generated
    one does, so the share of the bound counts both (generated tokens alone are shown too)."""
    bound = d["tokens_per_s_compute_bound"]
    lines = [f"## Teacher decoding against its bounds ({d['teacher']}, {d['dtype']})", "",
             f"{d['prompts']} fables × up to {d['max_new_tokens']} new tokens at T=1, top-p {d['top_p']} (the default "
             f"run's sampling), top-20 logprobs; engine start excluded, prefill included. Bounds measured in the same "
             f"run: float32 matrix products {d['gflops']:.0f} GFLOP/s → **{bound:.1f} tokens/s** through the model "
             f"whatever the batch; copy bandwidth {d['bandwidth_gbs']:.1f} GB/s → {d['steps_per_s_bound']:.2f} decoding "
             "steps/s.", "",
             "| path | generated tokens | prompt tokens | s | generated tokens/s | all tokens/s | share of the compute bound | ratio to the sort |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = d["sorted"]["tokens"] / d["sorted"]["generate_s"]
    rows = [("sorted", "plain `LLM.generate`, top-p by vLLM's sort of the whole vocabulary"),
            ("prefiltered", "plain `LLM.generate`, top-p after a top-1024 prefilter (teacher/nucleus.py)"),
            ("ray", "the pipeline's Ray Data LLM job (engine in a Ray actor, prefilter; row handling included)")]
    for name, what in rows:
        if name not in d:
            continue
        r = d[name]
        tps = r["tokens"] / r["generate_s"]
        prompt = r.get("prompt_tokens")
        every = (r["tokens"] + prompt) / r["generate_s"] if prompt is not None else None
        share = f"{every / bound:.0%}" if every is not None else "–"
        lines.append(f"| {what} | {r['tokens']} | {prompt if prompt is not None else '–'} | {r['generate_s']:.1f} | "
                     f"{tps:.1f} | {format(every, '.1f') if every is not None else '–'} | {share} | {tps / base:.2f} |")
    same = d["sorted"].get("tokens_digest") == d["prefiltered"].get("tokens_digest")
    lines += ["", f"Same seeded engine, same fables: **{'yes' if same else 'no'}** (digest of every generated token id). "
                  "Target: ≥ 60% of the compute bound.", ""]
    return lines


def render_lora(d: dict) -> list[str]:
    """The student engine's decoding with LoRA adapters, per-token products against grouped."""
    lines = ["## Student decoding with LoRA adapters (Qwen2.5-Coder-0.5B, float32)", "",
             f"Plain `vllm.LLM.generate` in one process: {d['sequences']} fables × {d['max_new_tokens']} new tokens "
             f"each, spread over {d['adapters']} rank-16 adapters on every linear layer (the write stage's shape: KD "
             "and SFT students and their checkpoints on one base); engine start excluded.", "",
             "| engine | tokens | generate s | tokens/s | ratio to no LoRA |", "| --- | --- | --- | --- | --- |"]
    base = d["base"]["tokens"] / d["base"]["generate_s"]
    for name, what in (("base", "no LoRA (the base alone)"), ("per_token", "LoRA, vLLM's per-token products"),
                       ("grouped", "LoRA, one product per adapter (teacher/lora_cpu.py)")):
        r = d[name]
        tps = r["tokens"] / r["generate_s"]
        lines.append(f"| {what} | {r['tokens']} | {r['generate_s']:.1f} | {tps:.1f} | {tps / base:.2f} |")
    return lines + [""]


def render_generation(gen: dict) -> list[str]:
    """The Ray Data LLM job against plain vLLM, in one run."""
    p, r = gen["plain"], gen["ray"]
    plain_tps, ray_tps = p["tokens"] / p["process_s"], r["generated_tokens"] / r["process_s"]
    lines = ["## Generation: the Ray Data LLM job against plain `vllm.LLM.generate`", "",
             f"SmolLM2-135M, {gen['prompts']} training prompts, up to {gen['max_new_tokens']} new tokens, "
             "top-20 logprobs, T=1, same engine settings. Whole processes, engine start included.", "",
             "| path | tokens | wall s | tokens/s | ratio to plain vLLM |", "| --- | --- | --- | --- | --- |",
             f"| plain `LLM.generate` | {p['tokens']} | {p['process_s']:.1f} | {plain_tps:.0f} | 1.00 |",
             f"| Ray job (`ray_cluster.generate`, Parquet shards) | {r['generated_tokens']} | {r['process_s']:.1f} | "
             f"{ray_tps:.0f} | {ray_tps / plain_tps:.2f} |", "",
             f"Target: the Ray job at least 0.9 of plain vLLM's tokens/s; this run: **{ray_tps / plain_tps:.2f}**. "
             f"Plain vLLM alone: engine start {p['engine_start_s']:.1f} s, generation {p['generate_s']:.1f} s "
             f"({p['tokens'] / p['generate_s']:.0f} tokens/s once started).", ""]
    return lines


def render_storage(storage: dict) -> list[str]:
    """Bytes per top-k entry as stored, against float32, and the KL error it costs."""
    e = storage["entries"]
    f32, comp = storage["float32_bytes"] / e, storage["compact_bytes"] / e
    lines = ["## Storage of the teacher's top-k", "",
             f"{e} (token id, logprob) entries from the plain-vLLM run above (SmolLM2, top-20), written as the "
             f"pipeline writes them: Parquet shards of {storage['shard_rows']} fables, zstd. Bytes are the top-k "
             "columns on disk plus the codec's metadata.", "",
             "| encoding | bytes per entry | ratio |", "| --- | --- | --- |",
             f"| int32 ids + float32 logprobs (nested lists) | {f32:.2f} | 1.00 |",
             f"| renumbered ids in byte planes + uint16 levels of 1/64 nat (stored form) | {comp:.2f} | "
             f"{comp / f32:.2f} |", "",
             f"Target: at most 2.0 bytes per entry with the KL within 1e-3 nats/token of the float32 values; "
             f"this run: **{comp:.2f}** bytes. Largest logprob error after the round trip: "
             f"{storage['max_abs_error']:.4f} nats.",
             f"Held-out top-20 KL of the pruned SmolLM2 student over {storage['tokens']} tokens: "
             f"{storage['kl_float32']:.5f} with float32 values, {storage['kl_compact']:.5f} reconstructed "
             f"(difference {abs(storage['kl_compact'] - storage['kl_float32']):.1e} nats/token).", ""]
    return lines


def render_compare(cmp: dict) -> list[str]:
    """The teacher comparison's time against its target."""
    lines = ["## Teacher comparison (`python -m eval.compare`)", "",
             f"The three real TinyFabulist teachers, {cmp['fables']} fables: toxicity (whole and windows), "
             "distinct-n, self-BLEU, embedding cosines, ROUGE-L, faithfulness. Models loaded first in "
             f"{cmp['load_s']:.1f} s; then the comparison took **{cmp['compare_s']:.1f} s** (embeddings "
             f"{cmp['embedding_s']:.1f} s of it) against a target of at most 60 s: "
             f"{cmp['compare_s'] / 60:.2f} of it.", ""]
    return lines


def render_cross(c: dict) -> list[str]:
    """Cross-tokenizer KD against SFT on the same text (benchmarks/run.py bench_cross)."""
    def iv(d):
        return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], lower on {d['a_lower']}/{d['n']} fables"

    d = c["kd_minus_sft"]
    verdict = ("KD lower, the interval excludes zero" if d["high"] < 0 else
               "KD higher, the interval excludes zero" if d["low"] > 0 else "the interval does NOT exclude zero")
    return [f"## Distillation across tokenizers: {c['student']} from {c['teacher']}'s stored top-k", "",
            f"`configs/cross-tokenizer.toml` (judge off): the {c['student']} checkpoint (another "
            f"tokenizer: {c['vocabulary_share']:.0%} of the teacher's tokens have a byte-identical student token) "
            f"trained {c['steps']} steps on {c['rows']} teacher fables by KD (the teacher's top-20 carried onto its "
            "tokens, distill/align.py) and by SFT on the same re-encoded text. Held-out loss on the teacher's text "
            f"in nats per byte over {c['heldout']} held-out fables, per-fable paired bootstrap 95% intervals. "
            f"Pipeline wall time {c['wall_s']:.0f} s.", "",
            "| figure | value |", "| --- | --- |",
            f"| before training | {c['before']:.4f} nats/byte |",
            f"| KD after | {c['kd']:.4f} nats/byte |",
            f"| SFT after | {c['sft']:.4f} nats/byte |",
            f"| KD − SFT per fable | {iv(d)}: **{verdict}** |",
            f"| KD − before per fable | {iv(c['kd_minus_before'])} |",
            f"| positions aligned (carry the teacher's top-k) | {c['aligned_share']:.1%} in training, "
            f"{c['aligned_share_rows']:.1%} over all the teacher's rows |",
            f"| encoding a row: carried / same-tokenizer | {c['encode_ms']['carried']:.2f} / "
            f"{c['encode_ms']['same_tokenizer']:.2f} ms ({c['encode_ms']['carried'] / c['encode_ms']['same_tokenizer']:.0f}×); "
            f"vocabulary map built once in {c['carrier_build_s']:.1f} s |",
            f"| training step: KD / SFT (same student, same rows) | {c['step_s']['kd']:.2f} / {c['step_s']['sft']:.2f} s "
            f"({c['step_s']['kd'] / c['step_s']['sft']:.2f}×) |",
            "| storage | nothing extra: the shards are the teacher's own; the carry happens as training reads them |",
            ""]


def render_three(t: dict) -> list[str]:
    """configs/three-teachers.toml measured (benchmarks/run.py bench_three)."""
    stages = ", ".join(f"{s['stage']}{' ' + s['teacher'] if s['teacher'] else ''} {s['wall_s']:.0f}"
                       for s in t["stages"] if s["stage"] != "report")
    return ["## Which teacher makes the best student (`configs/three-teachers.toml`)", "",
            "The 0.5B checkpoint distilled from each embedded teacher (the 1.5B shares its tokenizer; SmolLM2's and "
            "Gemma's top-k carried onto its tokens) and from all three at once, 12 steps each; judged by the 0.5B's "
            "checklist on 4 prompts (the judge is the students' own base model, of the 1.5B's family). "
            f"Stages {t['stages_s']:.0f} s ({stages}), {t['engine_starts']} engine starts.", "", *t["table"], ""]


def render(gen: dict | None, default: dict | None, storage: dict | None = None, steps: dict | None = None,
           cmp: dict | None = None, judge: dict | None = None, sweep: dict | None = None,
           fuzz: dict | None = None, decoding: dict | None = None, lora: dict | None = None,
           prune: dict | None = None, scale: dict | None = None, judge_run: dict | None = None,
           cross: dict | None = None, three: dict | None = None) -> str:
    when = {k: v["measured"] for k, v in (("default run", default), ("generation and storage", gen), ("compare", cmp),
                                          ("judge modes", judge), ("KD sweep", sweep), ("fuzzing", fuzz),
                                          ("decoding", decoding), ("LoRA decoding", lora), ("pruned build", prune),
                                          ("data scale", scale), ("judge set-ups on the default run", judge_run),
                                          ("cross-tokenizer KD", cross), ("three teachers", three))
            if v and "measured" in v}
    lines = ["# Benchmarks", "", f"Rendered on: {machine()}.",
             "Written by `make bench`; every ratio compares figures taken in one run of its section. Measured "
             "(a section measured alone keeps the others' last figures, each with its date and machine): "
             + "; ".join(f"{k} {v}" for k, v in when.items()) + ".", ""]
    if default:
        lines += render_default(default)
    if decoding:
        lines += render_decoding(decoding)
    if lora:
        lines += render_lora(lora)
    if gen:
        lines += render_generation(gen)
    if storage:
        lines += render_storage(storage)
    if steps:
        lines += render_train_steps(steps)
    if prune:
        lines += render_prune(prune)
    prune_gpu = sorted((ROOT / "benchmarks" / "results").glob("prune-7b*.json"))
    if prune_gpu:
        if not prune:
            lines += ["## Building a pruned student: peak memory", ""]
        lines += render_prune_gpu([(p.stem.removeprefix("prune-7b-"), json.loads(p.read_text())) for p in prune_gpu])
    if scale:
        lines += render_scale(scale)
    if sweep:
        lines += render_sweep(sweep)
    if cross:
        lines += render_cross(cross)
    if three:
        lines += render_three(three)
    trained = sorted((ROOT / "benchmarks" / "results").glob("gpu-train*.json"))
    if trained:
        lines += render_gpu_train([json.loads(p.read_text()) for p in trained])
    gpu = sorted((ROOT / "benchmarks" / "results").glob("gpu_step*.json"))
    if gpu:
        lines += render_gpu([(p.stem.removeprefix("gpu_step-"), json.loads(p.read_text()))
                             for p in gpu])
    if cmp:
        lines += render_compare(cmp)
    if judge_run:
        lines += render_judge_run(judge_run)
    if judge:
        lines += render_judge(judge)
    if fuzz:
        from benchmarks.fuzz import render as render_fuzz

        lines += render_fuzz(fuzz)
    return "\n".join(lines) + "\n"
