"""Measure the pipeline and write BENCHMARKS.md.

    python -m benchmarks.run                 # what `make bench` runs (~20 min on 2 cores)
    python -m benchmarks.run --skip-default  # all but the full default run
    python -m benchmarks.run --only steps --out /tmp/b.md   # one section

Figures are compared as ratios taken in this same run: the machines are shared and
noisy, so absolute seconds from different runs are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distill.run_folder import Evaluated, Generated, HeldOut, JudgeFolder, JudgeSummary, RunFolder, Trained

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 20 * 60  # the default run's target on 2 cores


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except OSError:
        mem = 0
    from teacher.hardware import cpu_has_native_bf16

    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16 (AVX2)"
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {bf16}, {platform.system()} {platform.machine()}, no GPU"


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


def last_json(stdout: str) -> dict:
    """The command's result line: engines log to stdout too, so take the last JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result line in the command's output")


def topk_bytes(directory: Path) -> int:
    """Bytes the top-k takes in a folder of shards: its columns as compressed on disk, plus
    the codec metadata (the per-shard id renumbering)."""
    import pyarrow.parquet as pq

    total = 0
    for f in sorted(directory.glob("*.parquet")):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                if col.path_in_schema.startswith("topk_"):
                    total += col.total_compressed_size
        total += len((md.metadata or {}).get(b"kd", b""))
    return total


def bench_storage(dump: Path, shard_rows: int = 16) -> dict:
    """Bytes per stored (token id, logprob) entry in shards as the pipeline writes them,
    float32 lists against the compact form, and what the quantization does to a real
    student's KL (the pruned SmolLM2 student, before training)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.schema import read_rows, write_table_atomic
    from eval.logit_metrics import heldout_metrics
    from student.build import build_student
    from teacher.registry import get_teacher

    teacher = get_teacher("smollm2-135m")
    rows = json.loads(dump.read_text())
    entries = sum(len(r["topk_ids"]) * len(r["topk_ids"][0]) for r in rows if r["topk_ids"])
    with tempfile.TemporaryDirectory() as d:
        plain, compact = Path(d, "float32"), Path(d, "compact")
        plain.mkdir()
        for n, i in enumerate(range(0, len(rows), shard_rows)):
            part = rows[i : i + shard_rows]
            pq.write_table(pa.table({"topk_ids": pa.array([r["topk_ids"] for r in part], pa.list_(pa.list_(pa.int32()))),
                                     "topk_logprobs": pa.array([r["topk_logprobs"] for r in part],
                                                               pa.list_(pa.list_(pa.float32())))}),
                           plain / f"{n:05d}.parquet", compression="zstd")
            write_table_atomic([_schema_row(r, i + j) for j, r in enumerate(part)], compact / f"{n:05d}.parquet",
                               {}, teacher.vocab_size)
        decoded = read_rows(compact)
        plain_b, compact_b = topk_bytes(plain), topk_bytes(compact)
    exact_lp = [r["topk_logprobs"] for r in rows]
    err = max((abs(a - b) for r, e in zip(decoded, exact_lp) for x, y in zip(r["topk_logprobs"], e) for a, b in zip(x, y)),
              default=0.0)
    model, tok = build_student("pruned", teacher.model_path())
    exact = heldout_metrics(model, tok.pad_token_id, rows)
    approx = heldout_metrics(model, tok.pad_token_id, decoded)
    return {"entries": entries, "shard_rows": shard_rows, "float32_bytes": plain_b, "compact_bytes": compact_b,
            "max_abs_error": err, "kl_float32": exact["kl"], "kl_compact": approx["kl"], "tokens": exact["tokens"]}


def _schema_row(r: dict, i: int) -> dict:
    """A full dataset row around a plain-vLLM result, so it goes through the real writer."""
    empty = {c: "" for c in ("split", "character", "trait", "setting", "conflict", "resolution", "moral",
                              "instruction", "prompt_text", "text", "teacher_id", "sampling", "tokenizer_fingerprint")}
    return {**empty, "prompt_id": str(i), "variant": 0, "sample_index": 0, "prompt_token_ids": r["prompt_token_ids"],
            "token_ids": r["token_ids"], "token_logprobs": [0.0] * len(r["token_ids"]),
            "topk_ids": r["topk_ids"], "topk_logprobs": r["topk_logprobs"]}


def bench_generation(n: int, max_new: int, env: dict, dump: Path) -> dict:
    plain_wall, out = timed([sys.executable, "-m", "benchmarks.plain_vllm", "--n", str(n),
                             "--max-new-tokens", str(max_new), "--dump", str(dump)], env)
    plain = last_json(out)
    with tempfile.TemporaryDirectory() as d:
        ray_wall, out = timed([sys.executable, "-m", "ray_cluster.generate", "--teacher", "smollm2-135m",
                               "--out", d, "--n-train", str(n), "--n-eval", "0", "--max-new-tokens", str(max_new)],
                              {k: v for k, v in env.items() if k != "RAY_ADDRESS"})
    ray = last_json(out)
    return {"prompts": n, "max_new_tokens": max_new, "plain": {**plain, "process_s": plain_wall},
            "ray": {**ray, "process_s": ray_wall}}


def bench_train_steps(env: dict) -> dict:
    """KD (top-k and dense teacher) against a plain cross-entropy step, each variant in a
    fresh process so its peak memory is its own."""
    out = {}
    for variant in ("sft", "kd-topk", "kd-dense"):
        _, stdout = timed([sys.executable, "-m", "benchmarks.train_step", "--variant", variant], env)
        out[variant] = last_json(stdout)
    return out


def bench_compare() -> dict | None:
    """The teacher comparison on the three real TinyFabulist teachers (3 x 100 fables),
    timed after the embedding and toxicity models are loaded."""
    tf = ROOT.parent / "shared" / "data" / "tinyfabulist"
    if not tf.exists():
        return None
    from eval.compare import compare, embedding_model
    from eval.comparison_inputs import load_input
    from eval.toxicity import toxicity

    t0 = time.perf_counter()
    embedding_model(), toxicity(["warm-up"])
    load_s = time.perf_counter() - t0
    inputs = {n: load_input(str(tf / f"fables-{f}.jsonl"), "tinyfabulist", {})
              for n, f in (("mistral", "mistral-7b-instruct-v0.3"), ("llama", "llama-3.1-8b-instruct"),
                           ("falcon", "falcon3-7b-instruct"))}
    t0 = time.perf_counter()
    result = compare(inputs)
    return {"fables": sum(len(v) for v in inputs.values()), "load_s": load_s, "compare_s": time.perf_counter() - t0,
            "embedding_s": result["timing_s"]["embedding"]}


JUDGE_MODES_FABLES_PER_WRITER = 10
JUDGE_MODES = ("form", "geval", "ensemble")


def bench_judge(env: dict, modes: tuple[str, ...] = JUDGE_MODES, before: dict | None = None) -> dict | None:
    """The configured (embedded) judge in each mode on the TinyFabulist fables: how often it
    scores a fable above its word-shuffled copy, and how far it agrees with the reference
    judges (gpt-4o, o3-mini), through the same commands a user runs."""
    from eval.calibration import agree_files

    tf = ROOT.parent / "shared" / "data" / "tinyfabulist"
    if not tf.exists():
        return None
    fables = [str(p) for p in sorted(tf.glob("fables-*.jsonl"))]
    refs = [str(p) for p in sorted(tf.glob("judged-*.jsonl"))]
    # Modes not measured now keep their last figures (with that section's date).
    out = {**{m: v for m, v in (before or {}).items() if m in JUDGE_MODES and m not in modes},
           "fables_per_writer": JUDGE_MODES_FABLES_PER_WRITER}
    for mode in modes:
        with tempfile.TemporaryDirectory() as d:
            wall, _ = timed([sys.executable, "-m", "eval.protocol", "score", "--input", *fables, "--out", d,
                             "--limit", str(JUDGE_MODES_FABLES_PER_WRITER), "--set", f'judge.mode="{mode}"'], env)
            out[mode] = {**agree_files([str(JudgeFolder(Path(d)).verdicts)], refs), "wall_s": wall}
    return out


def render_judge(j: dict) -> list[str]:
    lines = ["## The judge's modes (`python -m eval.protocol score` / `agree`)", "",
             f"The default run's judge on {j['fables_per_writer']} TinyFabulist fables per teacher (3 teachers) and a "
             "word-shuffled copy of each, against the reference verdicts (gpt-4o for Mistral and Llama, o3-mini "
             "for Falcon), joined on (writer, hash).", "",
             "| mode | joined | shuffled control: real above copy | Spearman, overall | per criterion | "
             "writer pairs in the reference's order | wall s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode in (m for m in JUDGE_MODES if m in j):
        r = j[mode]
        c = r["shuffled_control"] or {"accuracy": float("nan"), "pairs": 0}
        crit = ", ".join(f"{k} {v:.2f}" for k, v in r["spearman"].items() if k != "overall")
        w = r["writers"]
        lines.append(f"| {mode} | {r['pairs']} | {c['accuracy']:.0%} of {c['pairs']} | {r['spearman']['overall']:.2f} | "
                     f"{crit} | {w['pairs_in_same_order']} of {w['writer_pairs']} | {r['wall_s']:.0f} |")
    return lines + ([""] + [j["note"]] if j.get("note") else []) + [""]


def _kl(run: RunFolder, teacher: str, objective: str = "kd") -> dict:
    student = run.student(teacher, objective)
    ev, tr = Evaluated.read(student.evaluated), Trained.read(student.trained)
    return {"before": ev.before.kl, "after": ev.after.kl, "ce_before": ev.before.ce, "ce_after": ev.after.ce,
            "params": tr.params, "trainable": tr.trainable_params, "train_s": tr.train_runtime_s,
            "layers": tr.student_layers}


def copy_bandwidth_gbs(mib: int = 512, repeats: int = 5) -> float:
    """Best-of-N memory copy bandwidth (bytes read + written per second), in GB/s."""
    import numpy as np

    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)

    def copy():
        dst[...] = src
    return 2 * src.nbytes / _best_time(copy, repeats) / 1e9


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-N float32 matrix-product throughput of this machine through torch, in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    return 2 * n**3 / _best_time(lambda: a @ b, repeats) / 1e9


def _best_time(fn, repeats: int) -> float:
    """The shortest of `repeats` timed calls: the least disturbed by a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def decoding_bound(teacher_id: str, bandwidth_gbs: float, gflops: float | None = None) -> dict:
    """Each decoding step reads every weight once: steps/s <= bandwidth / weight bytes. Each
    token costs 2 FLOPs per weight it multiplies (all but the input embedding, a lookup):
    tokens/s <= matmul throughput / FLOPs per token, however many rows are in flight."""
    from safetensors import safe_open

    from teacher.hardware import engine_dtype
    from teacher.registry import get_teacher

    path = Path(get_teacher(teacher_id).model_path())
    params = embedding = 0
    for f in path.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                params += n
                embedding += n if k.endswith("embed_tokens.weight") else 0
    weight_bytes = params * (2 if engine_dtype() == "bfloat16" else 4)
    flops = 2 * (params - embedding)
    return {"params": params, "dtype": engine_dtype(), "weight_bytes": weight_bytes,
            "steps_per_s_bound": bandwidth_gbs * 1e9 / weight_bytes, "flops_per_token": flops,
            **({"gflops": gflops, "tokens_per_s_compute_bound": gflops * 1e9 / flops} if gflops else {})}


def bench_default(env: dict, run_dir: Path | None = None) -> dict:
    """The default run measured: run now in a temporary folder, or read from a finished run
    (`--default-run runs/default`, whose stage times its manifest recorded)."""
    if run_dir is not None:
        return default_figures(RunFolder(run_dir), None)
    with tempfile.TemporaryDirectory() as d:
        wall, _ = timed([sys.executable, "-m", "distill.pipeline", "--config", "configs/default.toml",
                         "--name", "bench"], {**env, "KD_RUNS_DIR": d})
        return default_figures(RunFolder(Path(d) / "bench"), wall)


def default_figures(run: RunFolder, wall: float | None) -> dict:
    from eval.stats import paired_bootstrap

    bandwidth, gflops = copy_bandwidth_gbs(), matmul_gflops()
    manifest = json.loads(run.manifest.read_text())
    distilled = [t["teacher"] for t in manifest["config"]["teachers"] if t.get("distil", True)]
    evals = {t: _kl(run, t) for t in distilled}
    sft = {t: _kl(run, t, "sft") for t in distilled}
    per_fable = {t: [Evaluated.read(run.student(t, o).evaluated).after.per_fable for o in ("kd", "sft")]
                 for t in distilled}
    kd_minus_sft = {t: paired_bootstrap([f["kl"] for f in kd], [f["kl"] for f in sf]) for t, (kd, sf) in per_fable.items()}
    judge = JudgeSummary.read(run.judge.summary) if run.judge.summary.exists() else None
    comparison = json.loads(run.comparison.read_text())
    generation = {t: {**Generated.read(run.generated(t)).to_dict(), **decoding_bound(t, bandwidth, gflops)}
                  for t in distilled}
    stages = manifest["stages"]
    return {"bandwidth_gbs": bandwidth, "gflops": gflops, "generation": generation,
            "process_s": wall if wall is not None else sum(st.get("wall_s", 0) for st in stages),
            "stages": stages, "total_s": manifest["total_wall_s"], "kl": evals, "sft": sft,
            "kd_minus_sft": kd_minus_sft, "shuffled_control": judge and judge.shuffled_control,
            "score_vs_loss": judge and judge.score_vs_loss,
            "elements_used": {w: v["faithfulness"]["overall"] for w, v in comparison["writers"].items()}}


# The KD sweep behind the default's settings: each variant changes [train] settings of the
# default run's distilled teacher (benchmarks/kd_sweep.py), trained on that run's teacher data.
SWEEP = ("", "objective=sft", "lr=2e-3", "lr=2e-4", "kd_weight=1.0", "steps=48")


def bench_sweep(env: dict, run_dir: Path) -> dict:
    from distill import artifacts

    run = RunFolder(run_dir)
    cfg = json.loads(run.config.read_text())
    teacher = next(t["teacher"] for t in cfg["teachers"] if t.get("distil", True))
    args = [a for v in SWEEP for a in ("--variant", v)]
    subprocess.run([sys.executable, "-m", "benchmarks.kd_sweep", "--run", str(run_dir), "--teacher", teacher, *args],
                   env=env, check=True)
    before = HeldOut.read(run.initial(teacher))
    rows = [artifacts.read_json(f) for f in sorted(run.sweep.glob("*.json"))]
    return {"teacher": teacher, "before": {"kl": before.kl, "ce": before.ce, "per_fable": before.per_fable},
            "variants": rows}


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


def render(gen: dict | None, default: dict | None, storage: dict | None = None, steps: dict | None = None,
           cmp: dict | None = None, judge: dict | None = None, sweep: dict | None = None,
           fuzz: dict | None = None) -> str:
    when = {k: v["measured"] for k, v in (("default run", default), ("generation and storage", gen), ("compare", cmp),
                                          ("judge modes", judge), ("KD sweep", sweep), ("fuzzing", fuzz))
            if v and "measured" in v}
    lines = ["# Benchmarks", "", f"Rendered on: {machine()}.",
             "Written by `make bench`; every ratio compares figures taken in one run of its section. Measured "
             "(a section measured alone keeps the others' last figures, each with its date and machine): "
             + "; ".join(f"{k} {v}" for k, v in when.items()) + ".", ""]
    if default:
        s = default["process_s"]
        lines += ["## The default run (`make distill`, configs/default.toml, models already built)", "",
                  f"Total: **{s / 60:.1f} min** against the 20-minute budget: {s / BUDGET_S:.2f} of it.", "",
                  "| stage | teacher | wall s | share of run |", "| --- | --- | --- | --- |"]
        lines += [f"| {st['stage']} | {st['teacher']} | {st['wall_s']:.1f} | {st['wall_s'] / s:.0%} |" for st in default["stages"]]
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
        lines += ["", "Goals of the default run:", "",
                  *[f"- held-out KL of the {t} student falls by **{d:.0%}** (goal ≥ 30%)" for t, d in drop.items()],
                  *[f"- {w} uses **{u:.0%}** of its prompts' elements"
                    + (" (goal ≥ 60% for the distillation teacher)" if w in default["kl"] else "")
                    for w, u in default["elements_used"].items() if u is not None]]
        c = default.get("shuffled_control")
        if c and c["pairs"]:
            lines.append(f"- the judge scores the real fable above its word-shuffled copy in **{c['accuracy']:.0%}** "
                         f"of {c['pairs']} pairs (goal ≥ 90%)")
        curve = default.get("score_vs_loss") or {}
        if curve.get("points"):
            lines.append(f"- judge score against training loss over {len(curve['points'])} checkpoints: Spearman "
                         f"{curve['spearman']:.2f} [{curve.get('spearman_low', float('nan')):.2f}, "
                         f"{curve.get('spearman_high', float('nan')):.2f}]")
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
    if gen:
        p, r = gen["plain"], gen["ray"]
        plain_tps, ray_tps = p["tokens"] / p["process_s"], r["generated_tokens"] / r["process_s"]
        lines += [f"## Generation: the Ray Data LLM job against plain `vllm.LLM.generate`", "",
                  f"SmolLM2-135M, {gen['prompts']} training prompts, up to {gen['max_new_tokens']} new tokens, "
                  "top-20 logprobs, T=1, same engine settings. Whole processes, engine start included.", "",
                  "| path | tokens | wall s | tokens/s | ratio to plain vLLM |", "| --- | --- | --- | --- | --- |",
                  f"| plain `LLM.generate` | {p['tokens']} | {p['process_s']:.1f} | {plain_tps:.0f} | 1.00 |",
                  f"| Ray job (`ray_cluster.generate`, Parquet shards) | {r['generated_tokens']} | {r['process_s']:.1f} | "
                  f"{ray_tps:.0f} | {ray_tps / plain_tps:.2f} |", "",
                  f"Target: the Ray job at least 0.9 of plain vLLM's tokens/s; this run: **{ray_tps / plain_tps:.2f}**. "
                  f"Plain vLLM alone: engine start {p['engine_start_s']:.1f} s, generation {p['generate_s']:.1f} s "
                  f"({p['tokens'] / p['generate_s']:.0f} tokens/s once started).", ""]
    if storage:
        e = storage["entries"]
        f32, comp = storage["float32_bytes"] / e, storage["compact_bytes"] / e
        lines += ["## Storage of the teacher's top-k", "",
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
    if steps:
        lines += render_train_steps(steps)
    if sweep:
        lines += render_sweep(sweep)
    gpu = sorted((ROOT / "benchmarks" / "results").glob("gpu_step*.json"))
    if gpu:
        lines += render_gpu([(p.stem.removeprefix("gpu_step-"), json.loads(p.read_text()))
                             for p in gpu])
    if cmp:
        lines += ["## Teacher comparison (`python -m eval.compare`)", "",
                  f"The three real TinyFabulist teachers, {cmp['fables']} fables: toxicity (whole and windows), "
                  "distinct-n, self-BLEU, embedding cosines, ROUGE-L, faithfulness. Models loaded first in "
                  f"{cmp['load_s']:.1f} s; then the comparison took **{cmp['compare_s']:.1f} s** (embeddings "
                  f"{cmp['embedding_s']:.1f} s of it) against a target of at most 60 s: "
                  f"{cmp['compare_s'] / 60:.2f} of it.", ""]
    if judge:
        lines += render_judge(judge)
    if fuzz:
        from benchmarks.fuzz import render as render_fuzz

        lines += render_fuzz(fuzz)
    return "\n".join(lines) + "\n"


SECTIONS = ("generation", "steps", "compare", "judge", "default", "sweep", "fuzz")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-default", action="store_true", help="skip the full default run")
    ap.add_argument("--only", choices=SECTIONS,
                    help="re-measure one section; the others keep their last figures (BENCHMARKS.json)")
    ap.add_argument("--default-run", type=Path,
                    help="read the default run's figures from this finished run instead of running it again; "
                         "the sweep trains on its teacher data (default: a fresh run's)")
    ap.add_argument("--judge-modes", nargs="+", choices=JUDGE_MODES, default=list(JUDGE_MODES),
                    help="judge modes the judge section measures (the others keep their last figures)")
    ap.add_argument("--fuzz-cases", type=int, default=2000, help="generated cases per reader in the fuzz section")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    env = dict(os.environ)
    raw_file = Path(args.out).with_suffix(".json")
    # Every section's raw figures, each with the time it was measured: a section measured
    # alone is rendered beside the others' last figures, and says so.
    results = json.loads(raw_file.read_text()) if args.only and raw_file.exists() else {}
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    now = f"{now} on {machine()}"  # sections measured on other machines keep their own
    run = set(SECTIONS) - ({"default"} if args.skip_default else set()) if not args.only else {args.only}
    if "generation" in run:
        with tempfile.TemporaryDirectory() as d:
            dump = Path(d) / "plain-topk.json"
            results["generation"] = bench_generation(args.prompts, args.max_new_tokens, env, dump)
            results["storage"] = bench_storage(dump)
        results["generation"]["measured"] = results["storage"]["measured"] = now
    if "steps" in run:
        results["steps"] = {**bench_train_steps(env), "measured": now}
    if "compare" in run:
        results["compare"] = bench_compare()
        if results["compare"]:
            results["compare"]["measured"] = now
    if "judge" in run:
        results["judge"] = bench_judge(env, tuple(args.judge_modes), results.get("judge"))
        if results["judge"]:
            results["judge"]["measured"] = now
    if "default" in run:
        results["default"] = {**bench_default(env, args.default_run), "measured": now}
    if "fuzz" in run:
        from benchmarks import fuzz

        results["fuzz"] = {**fuzz.run(args.fuzz_cases), "measured": now}
    if "sweep" in run:
        sweep_run = args.default_run or RunFolder.named("default").root
        if RunFolder(sweep_run).manifest.exists():
            results["sweep"] = {**bench_sweep(env, sweep_run), "measured": now}
        else:
            msg = (f"the sweep trains on a finished default run's data: {sweep_run} has none; "
                   "run `make distill` first or pass --default-run")
            if args.only:
                raise SystemExit(msg)
            print(f"skipped the KD sweep: {msg}")
    from distill.artifacts import write_json_atomic, write_text_atomic

    write_json_atomic(raw_file, results)
    steps = {k: v for k, v in results["steps"].items() if k != "measured"} if results.get("steps") else None
    write_text_atomic(Path(args.out), render(results.get("generation"), results.get("default"), results.get("storage"),
                                             steps, results.get("compare"), results.get("judge"),
                                             results.get("sweep"), results.get("fuzz")))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
