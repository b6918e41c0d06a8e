"""Measure the pipeline and write BENCHMARKS.md.

    python -m benchmarks.run                 # what `make bench` runs (~20 min on 2 cores)
    python -m benchmarks.run --skip-default  # all but the full default run
    python -m benchmarks.run --only steps --out /tmp/b.md   # one section
    python -m benchmarks.run --render-only   # BENCHMARKS.md again from BENCHMARKS.json and benchmarks/results/

Figures are compared as ratios taken in this same run: the machines are shared and
noisy, so absolute seconds from different runs are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT
from benchmarks.machine import copy_bandwidth_gbs, decoding_bound, machine, matmul_gflops
from benchmarks.render import render
from benchmarks.storage import bench_storage
from distill.run_folder import Evaluated, Generated, HeldOut, JudgeFolder, JudgeSummary, RunFolder, Trained
from eval.rubric import JUDGE_MODES
from teacher.engine import cpu_env  # the pipeline's CPU engine environment: the benches measure that engine


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


def ray_job(teacher: str, n: int, max_new: int, env: dict, *extra: str) -> tuple[float, dict]:
    """`python -m ray_cluster.generate` for n training prompts on a Ray head of its own (the
    pipeline's path), into a folder thrown away after: its wall seconds and result line."""
    with tempfile.TemporaryDirectory() as d:
        wall, out = timed([sys.executable, "-m", "ray_cluster.generate", "--teacher", teacher, "--out", d,
                           "--n-train", str(n), "--n-eval", "0", "--max-new-tokens", str(max_new), *extra],
                          {k: v for k, v in env.items() if k != "RAY_ADDRESS"})
    return wall, last_json(out)


def bench_generation(n: int, max_new: int, env: dict, dump: Path) -> dict:
    plain_wall, out = timed([sys.executable, "-m", "benchmarks.plain_vllm", "--n", str(n),
                             "--max-new-tokens", str(max_new), "--dump", str(dump)], env)
    plain = last_json(out)
    ray_wall, ray = ray_job("smollm2-135m", n, max_new, env)
    return {"prompts": n, "max_new_tokens": max_new, "plain": {**plain, "process_s": plain_wall},
            "ray": {**ray, "process_s": ray_wall}}


def bench_decoding(env: dict, teacher: str = "qwen2.5-coder-1.5b", n: int = 32, max_new: int = 64,
                   top_p: float = 0.95) -> dict:
    """The distillation teacher's decoding speed at the default run's sampling, with the
    sort-free nucleus (teacher/nucleus.py) and with vLLM's own sort, in one run, against
    the machine's bandwidth and compute bounds measured in the same run."""
    out = {"teacher": teacher, "prompts": n, "max_new_tokens": max_new, "top_p": top_p}
    for name, flag in (("sorted", "0"), ("prefiltered", "1")):
        _, stdout = timed([sys.executable, "-m", "benchmarks.plain_vllm", "--teacher", teacher, "--n", str(n),
                           "--max-new-tokens", str(max_new), "--top-p", str(top_p)],
                          {**env, **cpu_env(2), "KD_NUCLEUS_PREFILTER": flag})
        out[name] = last_json(stdout)
    # The same rows through the pipeline's path: a Ray Data LLM job, the engine in a Ray actor.
    _, ray = ray_job(teacher, n, max_new, env, "--top-p", str(top_p), "--batch-size", str(n))
    # the same prompts as the plain runs, so the same prompt tokens
    out["ray"] = {**ray, "tokens": ray["generated_tokens"], "generate_s": ray["wall_s"] - ray["engine_start_s"],
                  "prompt_tokens": out["prefiltered"]["prompt_tokens"]}
    bandwidth = copy_bandwidth_gbs()
    return {**out, "bandwidth_gbs": bandwidth, **decoding_bound(teacher, bandwidth, matmul_gflops())}


def bench_lora(env: dict, adapters: int = 5, n: int = 16, max_new: int = 64) -> dict:
    """The student engine's decoding in the write stage's shape (`adapters` rank-16 adapters,
    requests spread over them) with vLLM's per-token LoRA products and with the grouped ones
    (teacher/lora_cpu.py), and the same engine without LoRA, in one run."""
    out = {"adapters": adapters, "sequences": n, "max_new_tokens": max_new}
    for name, k, flag in (("base", 0, "1"), ("per_token", adapters, "0"), ("grouped", adapters, "1")):
        _, stdout = timed([sys.executable, "-m", "benchmarks.lora_vllm", "--adapters", str(k), "--n", str(n),
                           "--max-new-tokens", str(max_new)],
                          {**env, **cpu_env(2), "KD_LORA_GROUPED": flag})
        out[name] = last_json(stdout)
    return out


def bench_train_steps(env: dict) -> dict:
    """KD (top-k and dense teacher) against a plain cross-entropy step, each variant in a
    fresh process so its peak memory is its own."""
    out = {}
    for variant in ("sft", "kd-topk", "kd-dense"):
        _, stdout = timed([sys.executable, "-m", "benchmarks.train_step", "--variant", variant], env)
        out[variant] = last_json(stdout)
    return out


def bench_prune(env: dict) -> dict:
    """Peak memory of building a pruned student, the whole teacher loaded in float32 then
    pruned (the former way) against load_pruned (benchmarks/prune.py), each in its own process."""
    with tempfile.TemporaryDirectory() as d:
        _, out = timed([sys.executable, "-m", "benchmarks.prune", "--make", d], env)
        made = last_json(out)
        weights = sum(f.stat().st_size for f in Path(d).glob("*.safetensors"))
        ways = {}
        for way in ("whole", "kept"):
            _, out = timed([sys.executable, "-m", "benchmarks.prune", "--path", d, "--way", way], env)
            ways[way] = last_json(out)
    return {"params": made["params"], "weights_bytes": weights, "ways": ways}


def bench_scale(env: dict, sizes: tuple[int, ...] = (2000, 20000, 200000)) -> dict:
    """The training data path at each size, one process and Ray Data into Ray Train, each
    measurement in a fresh process (benchmarks/scale.py)."""
    runs = []
    with tempfile.TemporaryDirectory() as d:
        timed([sys.executable, "-m", "benchmarks.scale", "--make", d], env)
        for way in ("one", "ray"):
            for n in sizes:
                _, out = timed([sys.executable, "-m", "benchmarks.scale", "--path", d, "--rows", str(n), "--way", way], env)
                runs.append(last_json(out))
    return {"runs": runs}


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


def bench_judge(env: dict, modes: tuple[str, ...] = JUDGE_MODES, before: dict | None = None,
                models: tuple[str, ...] = ("smollm2-135m",)) -> dict | None:
    """Each judge method (mode) with each embedded judge model on the TinyFabulist fables and
    their control copies (judge.controls, those these prompts allow): control accuracies,
    agreement with the reference judges (gpt-4o, o3-mini) per fable and over writers, and
    seconds per verdict, through the same commands a user runs. Keyed "<mode> / <model>"."""
    from eval.calibration import agree_files

    tf = ROOT.parent / "shared" / "data" / "tinyfabulist"
    if not tf.exists():  # nothing to measure on: the last figures stay, with their date
        print(f"judge: no {tf}; the section keeps its last figures")
        return before
    fables = [str(p) for p in sorted(tf.glob("fables-*.jsonl"))]
    refs = [str(p) for p in sorted(tf.glob("judged-*.jsonl"))]
    measured = {f"{m} / {j}" for m in modes for j in models}
    # Pairs not measured now keep their last figures (with that section's date); figures of
    # the format before the criterion controls (keyed by mode alone) are dropped.
    out = {**{k: v for k, v in (before or {}).items() if " / " in k and k not in measured},
           "fables_per_writer": JUDGE_MODES_FABLES_PER_WRITER}
    for key in sorted(measured):
        mode, model = key.split(" / ")
        with tempfile.TemporaryDirectory() as d:
            wall, _ = timed([sys.executable, "-m", "eval.protocol", "score", "--input", *fables, "--out", d,
                             "--limit", str(JUDGE_MODES_FABLES_PER_WRITER), "--set", f'judge.mode="{mode}"',
                             "--set", f'judge.model="{model}"'], env)
            verdicts = JudgeFolder(Path(d)).verdicts
            n = sum(1 for line in verdicts.read_text().splitlines() if line.strip())
            out[key] = {**agree_files([str(verdicts)], refs), "wall_s": wall, "verdicts": n,
                        "s_per_verdict": wall / max(n, 1)}
    return out


# Judge set-ups the judge-run section re-judges the default run with: "<mode> / <model>",
# "+gate" for the checklist with the fluency criterion and readability gate.
JUDGE_RUN_SETUPS = ("ensemble / smollm2-135m", "checklist / smollm2-135m", "checklist / qwen2.5-coder-0.5b",
                    "checklist+gate / qwen2.5-coder-0.5b", "checklist / qwen2.5-coder-1.5b", "pairwise / smollm2-135m",
                    "pairwise / qwen2.5-coder-0.5b", "likelihood / smollm2-135m", "likelihood / qwen2.5-coder-0.5b",
                    "likelihood / qwen2.5-coder-1.5b")


def bench_judge_run(env: dict, run_dir: Path, setups: tuple[str, ...] = JUDGE_RUN_SETUPS,
                    before: dict | None = None, now: str = "") -> dict:
    """A finished default run re-judged with each judge set-up, every verdict fresh (a linked
    copy of the run without its verdict cache): each criterion control's accuracy, the age
    group against reading grade, score against loss, each writer's mean, and the judge's
    seconds (its engine start included), through `python -m eval.protocol run`. Set-ups not
    measured now keep their last figures, each with the run it re-judged and its date."""
    kept = {k: {"run": (before or {}).get("run"), "measured": (before or {}).get("measured"), **v}
            for k, v in ((before or {}).get("setups") or {}).items() if k not in setups}
    out = {"run": str(run_dir), "setups": kept}
    for setup in setups:
        mode, model = setup.split(" / ")
        gate = mode.endswith("+gate")
        with tempfile.TemporaryDirectory() as d:
            copy = Path(d) / "run"
            jf = RunFolder(run_dir).judge  # the verdict cache (and its sqlite side files), verdicts, server log
            fresh = (jf.cache.name, jf.verdicts.name, jf.server_log.name)
            shutil.copytree(run_dir, copy, copy_function=os.link,
                            ignore=lambda folder, names: [n for n in names if n.startswith(fresh)])
            wall, _ = timed([sys.executable, "-m", "eval.protocol", "run", "--run", str(copy),
                             "--set", f'judge.mode="{mode.removesuffix("+gate")}"', "--set", f'judge.model="{model}"',
                             "--set", f"judge.fluency_gate={'true' if gate else 'false'}"], env)
            summary = JudgeSummary.read(RunFolder(copy).judge.summary)
        out["setups"][setup] = {
            "wall_s": wall, "method": summary.judge.get("method"), "controls": summary.controls,
            "shuffled_control": summary.shuffled_control,
            "age_check": summary.age_check, "score_vs_loss": {k: v for k, v in summary.score_vs_loss.items() if k != "points"},
            "writers": {m: s["overall"] for m, s in summary.models.items() if s["role"] != "control"},
            "fables": sum(s["fables"] for s in summary.models.values()), "run": str(run_dir), "measured": now}
    return out


def _kl(run: RunFolder, teacher: str, objective: str = "kd") -> dict:
    student = run.student(teacher, objective)
    ev, tr = Evaluated.read(student.evaluated), Trained.read(student.trained)
    return {"before": ev.before.kl, "after": ev.after.kl, "ce_before": ev.before.ce, "ce_after": ev.after.ce,
            "params": tr.params, "trainable": tr.trainable_params, "train_s": tr.train_runtime_s,
            "layers": tr.student_layers}


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
    evaluated = {t: {o: Evaluated.read(run.student(t, o).evaluated) for o in ("kd", "sft")} for t in distilled}

    def kl(held_out) -> list[float]:
        return [f["kl"] for f in held_out.per_fable]

    kd_minus_sft = {t: paired_bootstrap(kl(e["kd"].after), kl(e["sft"].after)) for t, e in evaluated.items()}
    after_minus_before = {t: paired_bootstrap(kl(e["kd"].after), kl(e["kd"].before)) for t, e in evaluated.items()}
    judge = JudgeSummary.read(run.judge.summary) if run.judge.summary.exists() else None
    comparison = json.loads(run.comparison.read_text())
    generation = {t: {**Generated.read(run.generated(t)).to_dict(), **decoding_bound(t, bandwidth, gflops)}
                  for t in distilled}
    stages = manifest["stages"]
    return {"bandwidth_gbs": bandwidth, "gflops": gflops, "generation": generation,
            # the run's own wall clock: teachers that generate side by side count once
            "process_s": wall if wall is not None else manifest["total_wall_s"],
            "stages": stages, "total_s": manifest["total_wall_s"], "kl": evals, "sft": sft,
            "kd_minus_sft": kd_minus_sft, "after_minus_before": after_minus_before,
            "ray_heads_started": manifest.get("ray_heads_started"), "shuffled_control": judge and judge.shuffled_control,
            "controls": judge and judge.controls, "judge_setup": judge and judge.judge,
            "score_vs_loss": judge and judge.score_vs_loss,
            "elements_used": {w: v["faithfulness"]["overall"] for w, v in comparison["writers"].items()},
            # the report's headline: the teacher and its students served alike (eval/footprint.py)
            "footprint": json.loads(run.footprint.read_text()) if run.footprint.exists() else None}


# Cross-tokenizer KD (distill/align.py): configs/cross-tokenizer.toml, SmolLM2-135M as a student
# of the default teacher's fables, KD from the carried top-k against SFT on the same re-encoded
# text, same steps; the judge left out (the loss is the figure).
CROSS_SETS = ("judge.enabled=false",)


def bench_cross(env: dict) -> dict:
    """The cross-tokenizer student trained by the pipeline (`CROSS_SETS` over the default config),
    held-out loss on the teacher's text in nats per byte with per-fable paired intervals, the
    share of positions aligned, and what the alignment costs: encoding a row (carried against
    the same-tokenizer encoding of the same rows) and a training step (KD against SFT)."""
    from distill.align import Carrier
    from distill.data import encode_row
    from distill.schema import read_rows
    from eval.stats import paired_bootstrap
    from transformers import AutoTokenizer

    from teacher.registry import get_teacher

    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        run = RunFolder(Path(d) / "cross")
        teacher = "qwen2.5-coder-1.5b"
        wall, _ = timed([sys.executable, "-m", "distill.pipeline", "--config", "configs/cross-tokenizer.toml", "--name", "cross",
                         *[a for x in CROSS_SETS for a in ("--set", x)]], {**env, "KD_RUNS_DIR": d})
        ev = {o: Evaluated.read(run.student(teacher, o).evaluated) for o in ("kd", "sft")}
        tr = {o: Trained.read(run.student(teacher, o).trained) for o in ("kd", "sft")}

        def nb(h):
            return [f["nats_per_byte"] for f in h.per_fable]

        rows = read_rows(run.teacher(teacher))
        ttok = AutoTokenizer.from_pretrained(get_teacher(teacher).model_path())
        stok = AutoTokenizer.from_pretrained(get_teacher("smollm2-135m").model_path())
        t0 = time.perf_counter()
        carrier = Carrier(ttok, stok)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        carried = [carrier.encode(r, 384) for r in rows]
        carry_s = (time.perf_counter() - t0) / len(rows)
        t0 = time.perf_counter()
        for r in rows:
            encode_row(r, 384)
        same_s = (time.perf_counter() - t0) / len(rows)
        return {
            "wall_s": wall, "teacher": teacher, "student": "smollm2-135m", "heldout": len(nb(ev["kd"].after)),
            "steps": tr["kd"].steps, "rows": tr["kd"].rows,
            "before": ev["kd"].before.ce_per_byte, "kd": ev["kd"].after.ce_per_byte, "sft": ev["sft"].after.ce_per_byte,
            "kd_minus_sft": paired_bootstrap(nb(ev["kd"].after), nb(ev["sft"].after)),
            "kd_minus_before": paired_bootstrap(nb(ev["kd"].after), nb(ev["kd"].before)),
            "aligned_share": tr["kd"].aligned_share,
            "aligned_share_rows": float(np.mean([c["aligned"].mean() for c in carried if len(c["aligned"])])),
            "vocabulary_share": carrier.vocabulary_share(),
            "step_s": {o: t.train_runtime_s / max(t.steps, 1) for o, t in tr.items()},
            "carrier_build_s": build_s, "encode_ms": {"carried": carry_s * 1e3, "same_tokenizer": same_s * 1e3},
        }


def bench_three(env: dict, run_dir: Path | None = None) -> dict:
    """configs/three-teachers.toml (or a finished run of it, `--three-run`): which teacher makes
    the best student, the report's table of that name, with the run's stage times."""
    from distill.config import from_dict
    from eval.report import teachers_as_students

    def figures(run: RunFolder, wall: float | None) -> dict:
        manifest = json.loads(run.manifest.read_text())
        cfg = from_dict(json.loads(run.config.read_text()))
        return {"table": teachers_as_students(cfg, run)[2:], "stages_s": manifest["total_wall_s"],
                "process_s": wall, "engine_starts": manifest["engine_starts"],
                "stages": [{k: s[k] for k in ("stage", "teacher", "wall_s")} for s in manifest["stages"]]}

    if run_dir is not None:
        return figures(RunFolder(run_dir), None)
    with tempfile.TemporaryDirectory() as d:
        wall, _ = timed([sys.executable, "-m", "distill.pipeline", "--config", "configs/three-teachers.toml"],
                        {**env, "KD_RUNS_DIR": d})
        return figures(RunFolder(Path(d) / "three-teachers"), wall)


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


SECTIONS = ("generation", "decoding", "lora", "steps", "prune", "scale", "compare", "judge", "default", "judge-run",
            "sweep", "cross", "three", "fuzz")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run")
    ap.add_argument("--skip-default", action="store_true", help="skip the full default run")
    ap.add_argument("--only", choices=SECTIONS,
                    help="re-measure one section; the others keep their last figures (BENCHMARKS.json)")
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rewrite BENCHMARKS.md from BENCHMARKS.json and benchmarks/results/ "
                         "(after copying in a GPU check's results)")
    ap.add_argument("--default-run", type=Path,
                    help="read the default run's figures from this finished run instead of running it again; "
                         "the sweep trains on its teacher data (default: a fresh run's)")
    ap.add_argument("--judge-modes", nargs="+", choices=JUDGE_MODES, default=list(JUDGE_MODES),
                    help="judge modes the judge section measures (the others keep their last figures)")
    ap.add_argument("--judge-models", nargs="+", default=["smollm2-135m"],
                    help="embedded models the judge section measures each mode with")
    ap.add_argument("--judge-setups", nargs="+", default=list(JUDGE_RUN_SETUPS),
                    help="'<mode> / <model>' set-ups (mode checklist+gate: with the fluency gate) the judge-run "
                         "section re-judges the default run with")
    ap.add_argument("--three-run", type=Path,
                    help="read the three-teachers section from this finished run of configs/three-teachers.toml")
    ap.add_argument("--fuzz-cases", type=int, default=2000, help="generated cases per reader in the fuzz section")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    return ap


def measure(sections: set[str], args, results: dict) -> None:
    """Measure `sections` into `results`, each stamped with when and where it was measured."""
    env = dict(os.environ)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    now = f"{now} on {machine()}"  # sections measured on other machines keep their own
    if "generation" in sections:
        with tempfile.TemporaryDirectory() as d:
            dump = Path(d) / "plain-topk.json"
            results["generation"] = bench_generation(args.prompts, args.max_new_tokens, env, dump)
            results["storage"] = bench_storage(dump)
        results["generation"]["measured"] = results["storage"]["measured"] = now
    if "decoding" in sections:
        results["decoding"] = {**bench_decoding(env), "measured": now}
    if "lora" in sections:
        results["lora"] = {**bench_lora(env), "measured": now}
    if "steps" in sections:
        results["steps"] = {**bench_train_steps(env), "measured": now}
    if "prune" in sections:
        results["prune"] = {**bench_prune(env), "measured": now}
    if "scale" in sections:
        results["scale"] = {**bench_scale(env), "measured": now}
    if "compare" in sections:
        results["compare"] = bench_compare()
        if results["compare"]:
            results["compare"]["measured"] = now
    if "judge-run" in sections:
        run_dir = args.default_run or ROOT / "runs" / "default"
        if not RunFolder(run_dir).judge.summary.exists():
            raise SystemExit(f"the judge-run section re-judges a finished default run: none at {run_dir}; "
                             "run `make distill` first or pass --default-run")
        results["judge_run"] = {**bench_judge_run(env, run_dir, tuple(args.judge_setups), results.get("judge_run"), now),
                                "measured": now}
    if "judge" in sections:
        results["judge"] = bench_judge(env, tuple(args.judge_modes), results.get("judge"), tuple(args.judge_models))
        if results["judge"]:
            results["judge"]["measured"] = now
    if "default" in sections:
        results["default"] = {**bench_default(env, args.default_run), "measured": now}
    if "cross" in sections:
        results["cross"] = {**bench_cross(env), "measured": now}
    if "three" in sections:
        results["three"] = {**bench_three(env, args.three_run), "measured": now}
    if "fuzz" in sections:
        from benchmarks import fuzz

        results["fuzz"] = {**fuzz.run(args.fuzz_cases), "measured": now}
    if "sweep" in sections:
        sweep_run = args.default_run or RunFolder.named("default").root
        if RunFolder(sweep_run).manifest.exists():
            results["sweep"] = {**bench_sweep(env, sweep_run), "measured": now}
        else:
            msg = (f"the sweep trains on a finished default run's data: {sweep_run} has none; "
                   "run `make distill` first or pass --default-run")
            if args.only:
                raise SystemExit(msg)
            print(f"skipped the KD sweep: {msg}")


def main(argv: list[str] | None = None) -> None:
    from distill.artifacts import write_json_atomic, write_text_atomic

    args = build_parser().parse_args(argv)
    raw_file = Path(args.out).with_suffix(".json")
    # Every section's raw figures, each with the time it was measured: a section measured
    # alone is rendered beside the others' last figures, and says so.
    keep = (args.only or args.render_only) and raw_file.exists()
    results = json.loads(raw_file.read_text()) if keep else {}
    if not args.render_only:
        sections = {args.only} if args.only else set(SECTIONS) - ({"default"} if args.skip_default else set())
        measure(sections, args, results)
        write_json_atomic(raw_file, results)
    steps = {k: v for k, v in results["steps"].items() if k != "measured"} if results.get("steps") else None
    write_text_atomic(Path(args.out), render(results.get("generation"), results.get("default"), results.get("storage"),
                                             steps, results.get("compare"), results.get("judge"),
                                             results.get("sweep"), results.get("fuzz"), results.get("decoding"),
                                             results.get("lora"), results.get("prune"), results.get("scale"),
                                             results.get("judge_run"), results.get("cross"), results.get("three")))
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
