"""The whole path, prompts to report, for every configured teacher.

    python -m distill.pipeline --config configs/default.toml      # what `make distill` runs
    python -m distill.pipeline --config configs/tiny.toml --set train.steps=2 --name try
    python -m distill.pipeline --config configs/production.toml --dry-run   # the plan, nothing loaded

Stages per teacher: generate (Ray Data LLM + vLLM) -> train (LoRA student, top-k KD, and
the SFT baseline) -> evaluate (held-out KL before/after, student fables); then the LLM
judge over every student and teacher -> report. Each stage writes
its outputs atomically and is skipped when they exist, so rerunning a killed run
keeps everything it finished (generation resumes per shard, training from its last
checkpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

from distill import artifacts
from distill.config import RunConfig, TeacherRun, load, to_dict
from student.initial import build_initial_student, student_checkpoint, student_tokenizer
from teacher.prompts import load_prompts, splits
from teacher.registry import check_reachable

RUNS_DIR = Path(os.environ.get("KD_RUNS_DIR", "runs"))


def preflight(cfg: RunConfig) -> None:
    """Everything that can be checked before long work starts."""
    j = cfg.judge
    if j.enabled and not (j.base_url or os.environ.get("OPENAI_BASE_URL")):
        from teacher.registry import EMBEDDED

        if j.model not in EMBEDDED:
            raise ValueError(f"judge.model={j.model!r} is not an embedded model that can be served here, and no "
                             "endpoint is set: export OPENAI_BASE_URL (and OPENAI_API_KEY) or set judge.base_url")
    for tr in cfg.teachers:
        check_reachable(tr.model)  # raises with the fix (`make models`, HF_HOME) when missing
        if tr.train.student_kind == "checkpoint" and not Path(student_checkpoint(tr)).exists():
            raise FileNotFoundError(f"teacher.{tr.teacher}.train.student_checkpoint: {tr.train.student_checkpoint} not found")
        if tr.train.on_policy:
            if tr.train.quantization == "nf4" and not _cuda():
                raise ValueError(f"teacher.{tr.teacher}: on-policy sampling runs the student without gradients, "
                                 "which a 4-bit student must not do on CPU; use quantization='none' or a GPU")
            from distill.onpolicy import endpoint_scorer

            endpoint_scorer(tr.teacher, tr.generation.top_k)  # raises, naming the fix, if not served
    if cfg.prompts_file:
        load_prompts(cfg.prompts_file)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def prompts_for(cfg: RunConfig, tr: TeacherRun):
    train, ev = splits(tr.n_train, cfg.eval_prompts, cfg.seed, cfg.prompts_file or None)
    return train, ev[: tr.n_heldout]


def stage_generate(cfg: RunConfig, run_dir: Path, ledger: artifacts.Ledger) -> None:
    from ray_cluster.cluster import connect, shutdown
    from ray_cluster.generate import generate

    todo = [tr for tr in cfg.teachers if not (run_dir / "teachers" / tr.teacher / "DONE").exists()]
    for tr in cfg.teachers:
        if tr not in todo:
            with ledger.stage("generate", tr.teacher) as st:
                st["status"] = "skipped"
    if not todo:
        return
    def one(tr: TeacherRun) -> None:
        with ledger.stage("generate", tr.teacher) as st:
            train, heldout = prompts_for(cfg, tr)
            out = run_dir / "teachers" / tr.teacher
            stats = generate(tr.model, train + heldout, out, tr.generation)
            artifacts.write_json_atomic(out / "DONE", stats)
            st.update({k: stats[k] for k in ("rows", "generated_tokens")})

    connect()
    try:
        if cfg.parallel_teachers > 1 and len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=cfg.parallel_teachers) as pool:
                for done in [pool.submit(one, tr) for tr in todo]:
                    done.result()  # the first failure, once every teacher has stopped
        else:
            for tr in todo:
                one(tr)
    finally:
        # Free the engines' memory before training on the same machine.
        shutdown()


def stage_train(cfg: RunConfig, tr: TeacherRun, objective: str, run_dir: Path, ledger: artifacts.Ledger) -> None:
    from distill.data import retokenize
    from distill.schema import read_rows, tokenizer_fingerprint
    from distill.train import train
    from student.build import apply_lora, check_same_vocab, export, quantize_nf4

    # The SFT baseline trains on the teacher's text only: no on-policy steps.
    tcfg = dataclasses.replace(tr.train, objective=objective, **({"on_policy": 0.0} if objective == "sft" else {}))
    if cfg.judge.enabled and cfg.judge.checkpoints and objective == tr.train.objective:
        tcfg = dataclasses.replace(tcfg, keep_checkpoints=0)  # every checkpoint is a score-against-loss point
    out = run_dir / "students" / f"{tr.teacher}-{objective}"
    with ledger.stage(f"train-{objective}", tr.teacher) as st:
        if (out / "train.json").exists():
            st["status"] = "skipped"
            return
        rows = read_rows(run_dir / "teachers" / tr.teacher, split="train")
        removed = []
        if tcfg.max_toxicity < 1.0:
            from eval.toxicity import filter_toxic

            rows, removed = filter_toxic(rows, tcfg.max_toxicity)
            if not rows:
                raise ValueError(f"teacher.{tr.teacher}: max_toxicity={tcfg.max_toxicity} removed every training fable")
        tok = student_tokenizer(tr)
        if objective == "kd":
            check_same_vocab(tok, rows[0]["tokenizer_fingerprint"], tr.teacher)
        elif tokenizer_fingerprint(tok) != rows[0]["tokenizer_fingerprint"]:
            rows = retokenize(rows, tok)  # sequence-level distillation into another tokenizer family

        def build():  # seeded (build_initial_student): every Ray Train worker builds the same student
            model, tok = build_initial_student(tr)
            if tcfg.quantization == "nf4":
                with tempfile.TemporaryDirectory(dir=run_dir) as d:
                    model = quantize_nf4(model, Path(d), tr.generation.trust_remote_code)
            if tcfg.lora_r:
                model = apply_lora(model, tcfg.lora_r, tcfg.lora_alpha, tcfg.lora_dropout)
            return model, tok

        def finish(model, tok, result):
            paths = export(model, tok, out, full_precision_base=lambda: build_initial_student(tr)[0])
            result.update({"student_layers": model.config.num_hidden_layers,
                           "params": sum(p.numel() for p in model.parameters()),
                           "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                           **{k: str(v) for k, v in paths.items()}})

        if tcfg.workers > 1:
            from distill.train_ray import train_on_ray

            result = train_on_ray(build, rows, out, tcfg, finish)
        else:
            scorer = None
            if tcfg.on_policy:
                from distill.onpolicy import endpoint_scorer

                scorer = endpoint_scorer(tr.teacher, tr.generation.top_k)
            model, tok = build()
            result = train(model, tok, rows, out, tcfg, scorer=scorer)
            finish(model, tok, result)
        summary = {**result, "objective": objective, "student_kind": tcfg.student_kind,
                   "quantization": tcfg.quantization, "rows": len(rows), "removed_as_toxic": removed}
        artifacts.write_json_atomic(out / "train.json", summary)
        st.update({"steps": result["steps"], "final_loss": result["final_loss"]})


def stage_evaluate(cfg: RunConfig, tr: TeacherRun, objective: str, run_dir: Path, ledger: artifacts.Ledger) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.data import pad_id, retokenize
    from distill.schema import read_rows, tokenizer_fingerprint
    from eval.samples import sample_fables
    from teacher.hardware import on_accelerator

    student_dir = run_dir / "students" / f"{tr.teacher}-{objective}"
    out = student_dir / "eval.json"
    with ledger.stage(f"evaluate-{objective}", tr.teacher) as st:
        if out.exists():
            st["status"] = "skipped"
            return
        heldout = read_rows(run_dir / "teachers" / tr.teacher, split="eval")
        tok = AutoTokenizer.from_pretrained(student_dir / "merged")
        # A student of another tokenizer family (sequence-level SFT) is measured on the
        # teacher's text in its own tokens; KL to the teacher is undefined across token maps.
        cross = tokenizer_fingerprint(tok) != heldout[0]["tokenizer_fingerprint"]
        if cross:
            heldout = retokenize(heldout, tok)
        picks = [r for r in heldout if r["sample_index"] == 0][: cfg.eval.student_samples]

        def samples_of(model, tok) -> list[str]:
            return sample_fables(model, tok, [r["prompt_token_ids"] for r in picks], cfg.eval.max_new_tokens,
                                 cfg.eval.temperature, seed=cfg.seed)

        # Every objective starts from the same student: measure it (and its fables, for the
        # report's side by side) once per teacher. A QLoRA run's starting point is measured
        # in full precision (the 4-bit base differs slightly).
        before_file = run_dir / "students" / f"{tr.teacher}-initial{'-own-tokens' if cross else ''}.json"
        if before_file.exists():
            before = artifacts.read_json(before_file)
        else:
            base, btok = build_initial_student(tr)
            base = on_accelerator(base)
            before = {**_metrics(base, pad_id(btok), heldout, tr.train.max_len, cross), "samples": samples_of(base, btok)}
            del base
            artifacts.write_json_atomic(before_file, before)
        merged = on_accelerator(AutoModelForCausalLM.from_pretrained(student_dir / "merged", dtype=torch.float32,
                                                                     use_safetensors=True))
        after = _metrics(merged, pad_id(tok), heldout, tr.train.max_len, cross)
        samples = [{"prompt_id": r["prompt_id"], "instruction": r["instruction"], "teacher": r["text"], "student": s}
                   for r, s in zip(picks, samples_of(merged, tok))]
        result = {"heldout_rows": len(heldout), "before": before, "after": after, "samples": samples}
        artifacts.write_json_atomic(out, result)
        key = "ce" if cross else "kl"
        st.update({f"{key}_before": round(before[key], 4), f"{key}_after": round(after[key], 4)})


def stage_judge(cfg: RunConfig, run_dir: Path, ledger: artifacts.Ledger) -> None:
    """Every student and its teacher, judged on the same held-out prompts (eval/protocol.py)."""
    from eval.protocol import evaluate_run

    if not cfg.judge.enabled:
        return
    with ledger.stage("judge") as st:
        summary = run_dir / "judge" / "summary.json"
        if summary.exists():
            st["status"] = "skipped"
            return
        evaluate_run(run_dir, cfg=cfg)
        models = artifacts.read_json(summary)["models"]
        st.update({"fables": sum(m["fables"] for m in models.values()),
                   "failed_verdicts": sum(m["failures"] for m in models.values())})


def stage_compare(cfg: RunConfig, run_dir: Path, ledger: artifacts.Ledger) -> None:
    """The teachers (and their students, where judged) compared on toxicity, diversity,
    similarity and faithfulness: runs/<name>/compare/ (eval/compare.py)."""
    from eval import compare

    with ledger.stage("compare") as st:
        out = run_dir / "compare"
        if (out / "comparison.json").exists():
            st["status"] = "skipped"
            return
        inputs, scores = compare.run_inputs(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        result = compare.compare(inputs, judge_scores=scores)
        artifacts.write_json_atomic(out / "comparison.json", result)
        compare.render(result, inputs, out)
        st["writers"] = len(inputs)


def _metrics(model, pad: int, rows: list[dict], max_len: int, cross_tokenizer: bool) -> dict:
    from eval.logit_metrics import heldout_metrics

    m = heldout_metrics(model, pad, rows, max_len)
    return {**m, "kl": None} if cross_tokenizer else m


def run(cfg: RunConfig) -> Path:
    from eval.report import write_report

    run_dir = RUNS_DIR / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.json"
    if config_file.exists() and artifacts.read_json(config_file) != to_dict(cfg):
        raise ValueError(f"{run_dir} was started with a different configuration; pick another name (--name) or delete it")
    artifacts.write_json_atomic(config_file, to_dict(cfg))
    artifacts.remove_partial_writes(run_dir, recursive=True)
    ledger = artifacts.Ledger(run_dir / "stages.json")
    t0 = time.perf_counter()
    stage_generate(cfg, run_dir, ledger)
    for tr in cfg.teachers:
        for objective in cfg.objectives(tr):
            stage_train(cfg, tr, objective, run_dir, ledger)
            stage_evaluate(cfg, tr, objective, run_dir, ledger)
    stage_judge(cfg, run_dir, ledger)
    stage_compare(cfg, run_dir, ledger)
    with ledger.stage("report") as st:
        write_report(cfg, run_dir, ledger.stages)
    manifest = {
        "name": cfg.name,
        "config": to_dict(cfg),
        "packages": artifacts.package_versions(),
        "stages": ledger.stages,
        "total_wall_s": round(time.perf_counter() - t0, 2),
        "artifacts": artifacts.list_artifacts(run_dir),
    }
    artifacts.write_json_atomic(run_dir / "manifest.json", manifest)
    return run_dir


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m distill.pipeline", description="distil the configured teachers into students")
    ap.add_argument("--config", default="configs/default.toml")
    ap.add_argument("--name", help="run name (overrides the config's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set train.steps=10 --set teacher.gemma3-270m.n_train=8")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the plan (stages, resources, disk, GPU-hours) without loading any weights")
    ap.add_argument("--assume-gen-tok-s", type=float, default=None, metavar="N",
                    help="for --dry-run: generated tokens/s per GPU (default: distill/plan.py)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load(args.config, args.set + ([f'name="{args.name}"'] if args.name else []))
        if args.dry_run:
            from distill import plan

            print(plan.render(plan.build(cfg, args.assume_gen_tok_s or plan.GEN_TOKENS_PER_GPU_S)))
            return 0
        preflight(cfg)
        run_dir = run(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume; finished work is kept", file=sys.stderr)
        return 130
    print(f"report: {run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
