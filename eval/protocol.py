"""The judging protocol over a finished run: every student and, as the reference, its
teacher write fables for the same held-out prompts; one judge scores them all.

    python -m eval.protocol run --run runs/default          # `make eval RUN=default`; the pipeline's judge stage
    python -m eval.protocol aggregate --input FILE... --format tinyfabulist
    python -m eval.protocol score --input FILE... --format tinyfabulist --out DIR     # eval/calibration.py
    python -m eval.protocol agree --ours FILE... --reference FILE...

Outputs in runs/<name>/judge/: fables-<student>.json (the students' completions, kept
so a rerun does not regenerate them), cache.sqlite (every verdict, committed as it
arrives), verdicts.jsonl, summary.json, report.md / report.html with PNG plots.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from distill import artifacts, entry
from distill.run_folder import JudgeSummary, RunFolder, StudentFables, Trained
from distill.schema import ELEMENT_COLUMNS
from eval.endpoint import judge_endpoint
from teacher.prompts import heldout_prompts


def judge_items_for_teacher(cfg, tr, run: RunFolder) -> list[dict]:
    """The teacher's own held-out fables on the judged prompts (the reference). `ended`: the
    teacher stopped before its token limit (a fable cut by the limit has no ending to cut off)."""
    from distill.schema import read_rows

    rows = read_rows(run.teacher(tr.teacher), split="eval")
    keep = {r["prompt_id"] for r in heldout_prompts(rows)[: cfg.judge.prompts]}
    return [_teacher_item(r, tr, "teacher") for r in rows
            if r["prompt_id"] in keep and r["sample_index"] < cfg.judge.samples]


def control_source_items(cfg, tr, run: RunFolder) -> list[dict]:
    """The teacher's first judge.control_train_fables training fables (sample 0 of each prompt),
    role "calibration": judged only so that the controls built from them have their real fable
    to be compared with; not the teacher's score."""
    from distill.schema import read_rows

    n = cfg.judge.control_train_fables
    if not n:
        return []
    rows = read_rows(run.teacher(tr.teacher), split="train", limit=n * tr.generation.train_samples)
    return [_teacher_item(r, tr, "calibration") for r in rows if r["sample_index"] == 0][:n]


def _teacher_item(row: dict, tr, role: str) -> dict:
    """A teacher's fable as a judged item; `ended`: the teacher stopped before its token limit."""
    return {**_item(row, f"{tr.teacher} (teacher)", role, tr.teacher, row["sample_index"], row["text"]),
            "ended": len(row["token_ids"]) < tr.generation.max_new_tokens}


def judge_items_for_student(cfg, tr, objective: str, run: RunFolder, label: str | None = None) -> list[dict]:
    """`samples` completions per judged prompt by a student (or one of its checkpoints, by
    label), as eval/writers.py wrote them to judge/fables-<label>.json."""
    from distill.schema import read_rows

    label = label or f"{tr.teacher}-{objective}"
    prompts = heldout_prompts(read_rows(run.teacher(tr.teacher), split="eval"))[: cfg.judge.prompts]
    samples = StudentFables.read(run.judge.fables(label)).samples[: cfg.judge.samples]  # a record may hold more
    return [_item(r, label, objective, tr.teacher, s, texts[i]) for s, texts in enumerate(samples)
            for i, r in enumerate(prompts)]


def _item(row: dict, model: str, role: str, teacher: str, sample: int, fable: str) -> dict:
    return {"model": model, "role": role, "teacher": teacher, "prompt_id": row["prompt_id"], "sample": sample,
            **{c: row[c] for c in ELEMENT_COLUMNS}, "prompt": row["instruction"], "fable": fable}


def summarize(judged: list[dict], criteria: list[str]) -> dict:
    """Per judged model: verdict and failure counts, failure reasons, each criterion's and
    the overall mean with bootstrap 95% intervals, the age-group distribution, and the
    per-element breakdown (worst values first). Failures are counted, never averaged."""
    from eval.stats import bootstrap_ci, breakdown, overall_score

    out = {}
    for model in dict.fromkeys(j["model"] for j in judged):
        rows = [j for j in judged if j["model"] == model]
        ok = [j for j in rows if j["verdict"]]
        crit = {c: bootstrap_ci([j["verdict"]["scores"][c] for j in ok]) for c in criteria}
        overall = bootstrap_ci([overall_score(j) for j in ok])
        out[model] = {
            "role": rows[0]["role"], "teacher": rows[0]["teacher"], "fables": len(rows), "verdicts": len(ok),
            "failures": len(rows) - len(ok),
            # the readability gate's count; None where no verdict went through a gate (it is off)
            "gated": sum(bool(j["verdict"].get("gated")) for j in ok) if any("gated" in j["verdict"] for j in ok) else None,
            "failure_reasons": Counter(_reason_kind(j["reason"]) for j in rows if not j["verdict"]).most_common(),
            "criteria": {c: {"mean": m, "low": lo, "high": hi} for c, (m, lo, hi) in crit.items()},
            "overall": {"mean": overall[0], "low": overall[1], "high": overall[2]},
            "age_groups": dict(sorted(Counter(j["verdict"]["age_group"] for j in ok).items())),
            "elements": {e: breakdown(ok, e, overall_score)[:3] for e in ELEMENT_COLUMNS},
        }
    return out


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0]


def evaluate_run(run: RunFolder, overrides: list[str] = (), cfg=None, starts=None,
                 on_this_head: bool = False, endpoint=None) -> JudgeSummary:
    """Judge a finished run (students, teachers, optionally checkpoints) and write its report.
    Engine starts (fables written, the local judge) are counted in `starts`; on_this_head puts
    the local judge on this process's Ray head (eval/endpoint.py). `endpoint`: the wait
    function of a judge_endpoint the caller already started (the pipeline starts it before
    its write stage, so the judge's start overlaps the students' writing)."""
    from distill.config import from_dict, with_overrides
    from eval.controls import age_vs_readability, control_accuracies, control_accuracy, control_items
    from eval.judge import judge_all, judge_from_config
    from eval.rubric import criteria_names, rubric_for
    from eval.verdict_cache import VerdictCache
    from eval.writers import write_all
    from eval.stats import overall_score
    from eval.judge_report import write_judge_report
    from teacher.client import make_client

    if cfg is None:
        if not run.config.exists():
            raise FileNotFoundError(f"{run.root} is not a finished run (no config.json); run `make distill` first")
        cfg = with_overrides(from_dict(artifacts.read_json(run.config)), overrides)
    jc = cfg.judge
    rubric = rubric_for(jc)
    cache = VerdictCache(run.judge.cache, recover_from=run.judge.verdicts)
    server_log = run.judge.server_log
    with contextlib.ExitStack() as stack:
        if endpoint is None and not len(cache):  # nothing judged yet: start the server now, while the students write
            endpoint = stack.enter_context(judge_endpoint(jc, server_log, on_this_head, starts))
        for tr in cfg.teachers:
            for objective in cfg.objectives(tr):
                if not run.student(tr.teacher, objective).trained.exists():
                    raise FileNotFoundError(f"{run.root}: student {tr.teacher}-{objective} was not trained; "
                                            "finish the run first")
        write_all(cfg, run, report=False, starts=starts)  # the students' judged fables not yet written, one engine start
        items: list[dict] = []
        for tr in cfg.teachers:
            items += judge_items_for_teacher(cfg, tr, run)
            for objective in cfg.objectives(tr):
                items += judge_items_for_student(cfg, tr, objective, run)
        if cfg.mix:  # the student of several teachers, on the judged prompts (eval/writers.py mix_writers)
            from distill.train_stage import MIX, mix_teacher

            items += [{**it, "teacher": MIX} for it in
                      judge_items_for_student(cfg, mix_teacher(cfg), "kd", run, label=f"{MIX}-kd")]
        sources = [it for it in items if it["role"] == "teacher"]
        if jc.controls:  # the distilled teachers' training fables too: more pairs per control
            extra = [it for tr in cfg.teachers if cfg.objectives(tr) for it in control_source_items(cfg, tr, run)]
            items += extra
            sources += extra
        items += control_items(sources, tuple(jc.controls))
        curve = checkpoint_items(cfg, run) if jc.checkpoints else []
        everything = items + [it for c in curve for it in c["items"]]
        if not everything:
            raise ValueError(f"{run.root}: no held-out fables to judge")
        if jc.mode == "pairwise":  # every fable against the first distilled teacher's for its prompt
            from eval.pairwise import with_references

            everything = with_references(everything, f"{reference_teacher(cfg).teacher} (teacher)")
        offline = judge_from_config(SimpleNamespace(base_url=jc.base_url or os.environ.get("OPENAI_BASE_URL") or "local"),
                                    jc, rubric, cache)
        cached = [offline.cached(it["prompt"], it["fable"], it) for it in everything]
        if all(cached):  # a re-evaluation with nothing new: no endpoint needed
            judged, settings = [{**it, **rec} for it, rec in zip(everything, cached)], cached[0]["judge"]
        else:
            endpoint = endpoint or stack.enter_context(judge_endpoint(jc, server_log, on_this_head, starts))
            judge = judge_from_config(make_client(endpoint(), max_retries=jc.retries), jc, rubric, cache)
            judged = judge_all(judge, everything, workers=jc.workers)
            settings = judge.settings()
    by_model = [j for j in judged if j["role"] != "checkpoint"]
    controls = control_accuracies(by_model, overall_score)  # training fables (role calibration) too
    age_check = age_vs_readability(by_model, list(dict(rubric.age_groups)))
    by_model = [j for j in by_model if j["role"] != "calibration"]  # the writers' scores: held-out prompts only
    summary = JudgeSummary(
        judge=settings, protocol={"prompts": jc.prompts, "samples": jc.samples, **cfg.sampling,
                                  "max_new_tokens": jc.max_new_tokens,
                                  "control_train_fables": jc.control_train_fables if jc.controls else 0},
        models=summarize(by_model, criteria_names(rubric, jc.mode, jc.fluency_gate)),
        criteria=criteria_names(rubric, jc.mode, jc.fluency_gate),
        age_groups=dict(rubric.age_groups), score_vs_loss=score_vs_loss(curve, judged),
        # the sanity line: reported (unchecked, with no pairs) whenever the control was asked for
        shuffled_control=(controls.get("shuffled words") or control_accuracy([], overall_score)
                          if "shuffled words" in jc.controls else None),
        controls=controls,
        age_check=age_check)
    artifacts.write_text_atomic(run.judge.verdicts, "".join(json.dumps(j) + "\n" for j in judged))
    write_judge_report(run.judge.path, summary, by_model)
    summary.write(run.judge.summary)  # last: the stage is done when the summary exists
    return summary


def reference_teacher(cfg):
    """The teacher every fable is compared with in pairwise mode: the first distilled one."""
    return next((t for t in cfg.teachers if cfg.objectives(t)), cfg.teachers[0])


def checkpoint_items(cfg, run: RunFolder) -> list[dict]:
    """Fables from the saved checkpoints of the first distilled teacher's KD student, for score
    against training loss: each checkpoint's adapter served on the starting student (eval/writers.py)."""
    distilled = [t for t in cfg.teachers if cfg.objectives(t)]
    if not distilled:
        return []
    tr = distilled[0]
    student = run.student(tr.teacher, tr.train.objective)
    trained = Trained.read(student.trained)
    history = trained.history
    points, previous = [], 0
    for ck in artifacts.checkpoints(student.checkpoints):
        step = int(ck.name.split("-")[1])
        label = f"{tr.teacher}-{tr.train.objective}@{step}"
        loss, steps = checkpoint_loss(history, previous, step)
        previous = step
        if step == trained.steps:
            # The last checkpoint is the finished student: its fables (and their cached
            # verdicts) are the student's own; nothing written twice.
            items = [{**it, "model": label} for it in judge_items_for_student(cfg, tr, tr.train.objective, run)]
        else:
            items = judge_items_for_student(cfg, tr, tr.train.objective, run, label)
        points.append({"label": label, "step": step, "loss": loss, "loss_steps": steps,
                       "items": [{**it, "role": "checkpoint"} for it in items]})
    return points


def checkpoint_loss(history: list[dict], previous: int, step: int) -> tuple[float, list[int]]:
    """A checkpoint's training loss: the mean of the losses logged after the previous
    checkpoint, up to its own step, and those steps. The nearest logged value instead gave two
    checkpoints one loss when logging was sparser than saving (steps 8 and 12 both read step
    10's). With no step logged in the window, the nearest logged step's loss, and that step."""
    logged = [h for h in history if h.get("loss") is not None]
    window = [h for h in logged if previous < h["step"] <= step]
    if window:
        return sum(h["loss"] for h in window) / len(window), [window[0]["step"], window[-1]["step"]]
    if not logged:
        return float("nan"), []
    near = min(logged, key=lambda h: abs(h["step"] - step))
    return near["loss"], [near["step"], near["step"]]


def score_vs_loss(curve: list[dict], judged: list[dict]) -> dict:
    from eval.stats import bootstrap_ci, items_for_direction, overall_score, spearman_bootstrap

    pts, matrix = [], []
    keys = sorted({(j["prompt_id"], j["sample"]) for c in curve for j in c["items"]})
    for c in curve:
        by_key = {(j["prompt_id"], j["sample"]): overall_score(j) for j in judged if j["model"] == c["label"]}
        row = [by_key.get(k) for k in keys]
        scores = [v for v in row if v is not None]
        matrix.append([float("nan") if v is None else v for v in row])
        m, lo, hi = bootstrap_ci(scores)
        pts.append({"label": c["label"], "step": c["step"], "loss": c["loss"], "loss_steps": c.get("loss_steps", []),
                    "score": m, "low": lo, "high": hi, "verdicts": len(scores)})
    losses = [p["loss"] for p in pts]
    rho = spearman_bootstrap(losses, matrix)
    return {"points": pts, "spearman": rho["rho"], "spearman_low": rho["low"], "spearman_high": rho["high"],
            "items": len(keys), "items_needed": items_for_direction(losses, matrix) if pts else None}


def aggregate_table(table: dict) -> str:
    """Per-model means of TinyFabulist verdicts as a Markdown table."""
    crits = list(dict.fromkeys(c for t in table.values() for c in t["means"]))
    lines = ["| model | n | " + " | ".join(crits) + " | mean |", "| --- | --- | " + " | ".join("---" for _ in crits) + " | --- |"]
    lines += [f"| {m} | {t['count']} | " + " | ".join(f"{t['means'][c]:.2f}" if c in t["means"] else "–" for c in crits)
              + f" | {t['mean']:.2f} |" for m, t in table.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="LLM-as-judge evaluation")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ag = sub.add_parser("aggregate", help="per-model, per-criterion means of existing verdict files")
    ag.add_argument("--input", nargs="+", required=True)
    ag.add_argument("--format", choices=["tinyfabulist"], default="tinyfabulist")
    ag.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rn = sub.add_parser("run", help="judge a finished run's students and teachers, write its judge report")
    rn.add_argument("--run", required=True, help="runs/<name>")
    rn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a judge.* setting")
    sc = sub.add_parser("score", help="judge any fables with the configured judge; verdicts in the TinyFabulist layout")
    sc.add_argument("--input", nargs="+", required=True, help="fables files")
    sc.add_argument("--format", choices=["tinyfabulist"], default="tinyfabulist")
    sc.add_argument("--out", required=True, help="folder for verdicts.jsonl, failures.json and the verdict cache")
    sc.add_argument("--config", default="configs/default.toml", help="the run config whose [judge] table is used")
    sc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a judge.* setting")
    sc.add_argument("--limit", type=int, default=0, help="judge the first N fables of each file (0: all)")
    sc.add_argument("--no-controls", action="store_true", help="judge no control copies (default: judge.controls)")
    agr = sub.add_parser("agree", help="agreement of our verdicts with a reference judge's, joined on (writer, hash)")
    agr.add_argument("--ours", nargs="+", required=True)
    agr.add_argument("--reference", nargs="+", required=True)
    agr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "aggregate":
            from eval.tinyfabulist import aggregate, read_tinyfabulist

            table = aggregate([v for f in args.input for v in read_tinyfabulist(f)])
            print(json.dumps(table, indent=1) if args.json else aggregate_table(table))
            return 0
        if args.cmd == "score":
            from distill.config import load
            from eval.calibration import score

            cfg = load(args.config, args.set)
            entry.log_to(args.out)
            print(f"verdicts: {score(args.input, Path(args.out), cfg.judge, args.limit, not args.no_controls)}")
            return 0
        if args.cmd == "agree":
            from eval.calibration import agree_files, render_agreement

            result = agree_files(args.ours, args.reference)
            print(json.dumps(result, indent=1) if args.json else render_agreement(result))
            return 0
        from distill.config import from_dict
        from eval.report import write_report

        run = RunFolder(Path(args.run))
        if run.root.is_dir():
            entry.log_to(run.root)
        evaluate_run(run, args.set)
        stages = artifacts.read_json(run.stages) if run.stages.exists() else []
        write_report(from_dict(artifacts.read_json(run.config)), run, stages)
        print(f"judge report: {run.judge.report}\nrun report: {run.report}")
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m eval.protocol")())
