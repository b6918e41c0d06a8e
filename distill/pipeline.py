"""The whole path, prompts to report, for every configured teacher.

    python -m distill.pipeline --config configs/default.toml      # what `make distill` runs
    python -m distill.pipeline --config configs/tiny.toml --set train.steps=2 --name try
    python -m distill.pipeline --config configs/production.toml --dry-run   # the plan, nothing loaded

Stages: generate (Ray Data LLM + vLLM, every teacher) -> train (LoRA student, top-k KD, and
the SFT baseline, per distilled teacher) -> write (every student's fables: one vLLM engine
per base student, each trained student and checkpoint a LoRA adapter on it) -> evaluate
(held-out KL before/after) -> the LLM judge over every student and teacher -> compare -> report. Each stage writes
its outputs atomically and is skipped when they exist, so rerunning a killed run
keeps everything it finished (generation resumes per shard, training from its last
checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from distill import artifacts, entry
from distill.config import RunConfig, TeacherRun, config_path, load, recorded
from distill.run_folder import Generated, RunFolder
from distill.train_stage import MIX, stage_train, stage_train_mix
from ray_cluster import cluster
from student.initial import student_checkpoint
from teacher.prompts import eval_prompts_from, load_prompts, splits
from teacher.registry import check_reachable


def preflight(cfg: RunConfig) -> None:
    """Everything that can be checked before long work starts."""
    j = cfg.judge
    if j.enabled:
        from eval.rubric import rubric_for

        rubric_for(j)  # a missing or broken judge.rubric stops here, not at the judge stage
    if cfg.judge_served_here():
        from teacher.registry import EMBEDDED

        if j.model not in EMBEDDED:
            raise ValueError(f"judge.model={j.model!r} is not an embedded model that can be served here, and no "
                             "endpoint is set: export OPENAI_BASE_URL (and OPENAI_API_KEY) or set judge.base_url")
    check_gpus(cfg)
    from eval.toxicity import check_classifier

    check_classifier(cfg.compare.toxicity)  # toxigen-roberta without the hub or its cache stops here
    from ray_cluster.generate import check_context

    for tr in cfg.teachers:
        check_reachable(tr.model)  # raises with the fix (`make models`, HF_HOME) when missing
        train, ev = prompts_for(cfg, tr)
        check_context(tr.model, train + ev, tr.generation)  # a model shorter than the engine's context
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
    if cfg.eval_prompts_file:
        eval_prompts_from(config_path(cfg.eval_prompts_file), cfg.eval_prompts)


def check_gpus(cfg: RunConfig) -> None:
    """A run whose teachers need GPUs (gpu_memory_gib > 0) does not start where they cannot
    run: in a venv of the CPU build of torch (set up without GPU=1), or on a machine with
    fewer GPUs than a teacher's tensor-parallel size and no cluster to add them (RAY_ADDRESS:
    the autoscaler starts GPU workers on demand, so a CPU-only head is fine there)."""
    need = {tr.teacher: (tr.model.gpu_memory_gib, tr.model.tensor_parallel) for tr in cfg.teachers
            if tr.model.gpu_memory_gib}
    if not need:
        return
    import torch

    tid, (gib, tp) = max(need.items(), key=lambda kv: kv[1][1])
    if torch.version.cuda is None and torch.version.hip is None:
        raise RuntimeError(f"teacher '{tid}' runs on GPUs (gpu_memory_gib = {gib:g}) and this venv's torch "
                           f"{torch.__version__} is the CPU build: set it up with `make setup GPU=1` (it rebuilds "
                           f"a CPU .venv), or set teacher.{tid}.gpu_memory_gib = 0 to run the teacher on the CPU")
    have = torch.cuda.device_count()
    if have < tp and not os.environ.get("RAY_ADDRESS"):
        raise RuntimeError(f"teacher '{tid}' needs {tp} GPU(s) (tensor_parallel_size = {tp}) and this machine has "
                           f"{have}: run on a GPU machine, or submit to a Ray cluster (RAY_ADDRESS) whose "
                           f"autoscaler adds GPU workers")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def prompts_for(cfg: RunConfig, tr: TeacherRun):
    train, ev = splits(tr.n_train, cfg.eval_prompts, cfg.seed, cfg.prompts_file or None,
                       config_path(cfg.eval_prompts_file) if cfg.eval_prompts_file else None)
    return train, ev[: tr.n_heldout]


def stage_generate(cfg: RunConfig, run: RunFolder, ledger: artifacts.Ledger) -> None:
    from ray_cluster.generate import generate

    todo = [tr for tr in cfg.teachers if not run.generated(tr.teacher).exists()]
    for tr in cfg.teachers:
        if tr not in todo:
            with ledger.stage("generate", tr.teacher) as st:
                st["status"] = "skipped"
    if not todo:
        return
    def one(tr: TeacherRun) -> None:
        with ledger.stage("generate", tr.teacher) as st:
            train, heldout = prompts_for(cfg, tr)
            done = Generated(**generate(tr.model, train + heldout, run.teacher(tr.teacher), tr.generation))
            done.write(run.generated(tr.teacher))
            st.update(rows=done.rows, generated_tokens=done.generated_tokens, engine_starts=done.engine_starts,
                      engine_start_s=round(done.engine_start_s, 1),
                      # engine placement groups still reserved once this teacher is done (0: its GPUs are free)
                      placement_groups_held=cluster.engine_groups_held())

    at_once = teachers_at_once(cfg.parallel_teachers, [tr.model for tr in todo], cluster.connect())
    if at_once > 1 and len(todo) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=at_once) as pool:
            for done in [pool.submit(one, tr) for tr in todo]:
                done.result()  # the first failure, once every teacher has stopped
    else:
        for tr in todo:
            one(tr)


def teachers_at_once(parallel: int, teachers: list, cluster_info: dict) -> int:
    """parallel_teachers, capped where the GPUs are known: on a head without an autoscaler
    (no RAY_ADDRESS), as many GPU teachers at once as its GPUs hold engines, so none waits
    for a GPU another holds until Ray Data's replica timeout. A cluster's autoscaler adds
    GPU nodes for the engines that ask, so it is not capped there."""
    gpu = [t for t in teachers if t.gpu_memory_gib]
    if not gpu or cluster_info.get("address", "local") != "local":
        return parallel
    tp = max(t.tensor_parallel for t in gpu)
    return max(1, min(parallel, int(cluster_info.get("gpus", 0) // tp)))


def stage_write(cfg: RunConfig, run: RunFolder, ledger: artifacts.Ledger) -> None:
    """Every student's fables, for the report and the judge (eval/writers.py), before the judge
    starts its engine: a batch job's engine is gone when its job ends."""
    from eval.writers import write_all

    if not any(cfg.objectives(tr) for tr in cfg.teachers):
        return
    with ledger.stage("write") as st:
        starts = cluster.EngineStarts()
        written = write_all(cfg, run, starts=starts)
        st.update({"status": "skipped"} if not written else {"writers": len(written), **starts.figures()})


def stage_evaluate_mix(cfg: RunConfig, run: RunFolder, ledger: artifacts.Ledger) -> None:
    """The student of several teachers on each one's held-out text (eval/heldout.py evaluate_mix)."""
    from eval.heldout import evaluate_mix

    if not cfg.mix:
        return
    out = run.student(MIX, "kd").evaluated_per_teacher
    with ledger.stage("evaluate-kd", MIX) as st:
        if out.exists():
            st["status"] = "skipped"
            return
        per = evaluate_mix(cfg, run)
        artifacts.write_json_atomic(out, per)
        st.update({f"nats_per_byte_{t}": round(v["after"]["ce_per_byte"] or float("nan"), 4) for t, v in per.items()})


def stage_evaluate(cfg: RunConfig, tr: TeacherRun, objective: str, run: RunFolder, ledger: artifacts.Ledger) -> None:
    from eval.heldout import evaluate_student

    out = run.student(tr.teacher, objective).evaluated
    with ledger.stage(f"evaluate-{objective}", tr.teacher) as st:
        if out.exists():
            st["status"] = "skipped"
            return
        ev = evaluate_student(cfg, tr, objective, run)
        ev.write(out)
        key = "kl" if ev.after.kl is not None else "ce"
        st.update({f"{key}_before": round(getattr(ev.before, key), 4), f"{key}_after": round(getattr(ev.after, key), 4)})


@contextlib.contextmanager
def judge_service(cfg: RunConfig, run: RunFolder):
    """Yields (wait, starts): the judge's endpoint, started now on the run's own Ray head
    (ray_cluster/serve.py in this process) so that its engine starts while the students write
    and are evaluated, and the count of its start. (None, None) when no judge stage will run,
    and on a rerun that has verdicts cached: the judge stage starts the service only if some
    fable is still unjudged."""
    from eval.endpoint import judge_endpoint

    if not cfg.judge.enabled or run.judge.summary.exists() or run.judge.cache.exists():
        yield None, None
        return
    starts = cluster.EngineStarts()
    with judge_endpoint(cfg.judge, run.judge.server_log, on_this_head=True, starts=starts) as wait:
        yield wait, starts


def stage_judge(cfg: RunConfig, run: RunFolder, ledger: artifacts.Ledger, endpoint=None, starts=None) -> None:
    """Every student and its teacher, judged on the same held-out prompts (eval/protocol.py).
    `endpoint`, `starts`: the judge's service and its start count (judge_service)."""
    from eval.protocol import evaluate_run

    if not cfg.judge.enabled:
        return
    with ledger.stage("judge") as st:
        if run.judge.summary.exists():
            st["status"] = "skipped"
            return
        starts = starts if starts is not None else cluster.EngineStarts()
        models = evaluate_run(run, cfg=cfg, starts=starts, on_this_head=True, endpoint=endpoint).models
        st.update({"fables": sum(m["fables"] for m in models.values()),
                   "failed_verdicts": sum(m["failures"] for m in models.values()), **starts.figures()})


def stage_footprint(cfg: RunConfig, run: RunFolder, ledger: artifacts.Ledger) -> None:
    """The distilled teacher and its students served alike, one at a time: the report's
    headline (eval/footprint.py). After the judge, whose engine has stopped, so each writer
    has the machine to itself."""
    from eval import footprint

    if not cfg.eval.footprint or not any(cfg.objectives(tr) for tr in cfg.teachers):
        return
    with ledger.stage("footprint") as st:
        if run.footprint.exists():
            st["status"] = "skipped"
            return
        starts = cluster.EngineStarts()
        fp = footprint.measure(cfg, run, starts)
        artifacts.write_json_atomic(run.footprint, fp)
        st.update({"writers": len(fp["writers"]), **starts.figures()})


def stage_compare(cfg: RunConfig, run: RunFolder, ledger: artifacts.Ledger) -> None:
    """The teachers (and their students, where judged) compared on toxicity, diversity,
    similarity and faithfulness: runs/<name>/compare/ (eval/compare.py)."""
    from eval import compare
    from eval.comparison_inputs import run_inputs

    with ledger.stage("compare") as st:
        if run.comparison.exists():
            st["status"] = "skipped"
            return
        inputs, scores = run_inputs(run)
        compare.save(compare.compare(inputs, judge_scores=scores, classifier=cfg.compare.toxicity), inputs, run.compare)
        st["toxicity_classifier"] = cfg.compare.toxicity
        st["writers"] = len(inputs)


def same_config(before: dict, cfg: RunConfig) -> bool:
    """Whether a run folder's recorded config is `cfg`. A setting added to fable-kd since the
    run started reads as its default, so an upgrade does not orphan a run that set nothing new."""
    from distill.config import from_dict
    from distill.settings import SettingError

    try:
        return recorded(from_dict(before)) == recorded(cfg)
    except SettingError:
        return before == recorded(cfg)


def run(cfg: RunConfig) -> RunFolder:
    from eval.report import write_report

    folder = RunFolder.named(cfg.name)
    folder.root.mkdir(parents=True, exist_ok=True)
    entry.log_to(folder.root)  # an unexpected error's traceback: runs/<name>/error.log
    if folder.config.exists() and not same_config(artifacts.read_json(folder.config), cfg):
        raise ValueError(f"{folder.root} was started with a different configuration; pick another name (--name) or delete it")
    artifacts.write_json_atomic(folder.config, recorded(cfg))
    artifacts.remove_partial_writes(folder.root, recursive=True)
    ledger = artifacts.Ledger(folder.stages)
    t0 = time.perf_counter()
    # One Ray head for the whole run, started by the first stage that needs one (generate, write,
    # the local judge) and kept to the end: each batch job's engines end with their job, so
    # training in between has the cores and the memory to itself (measured: the comparison
    # teachers generating beside the KD training, 172 + 196 s against 64 + 79 s alone, and the
    # training 437 s against 183 s; torch's threads and the engine's oversubscribe 2 cores).
    try:
        stage_generate(cfg, folder, ledger)
        for tr in cfg.teachers:
            for objective in cfg.objectives(tr):
                stage_train(cfg, tr, objective, folder, ledger)
        stage_train_mix(cfg, folder, ledger)
        with judge_service(cfg, folder) as (endpoint, judge_starts):
            stage_write(cfg, folder, ledger)
            for tr in cfg.teachers:
                for objective in cfg.objectives(tr):
                    stage_evaluate(cfg, tr, objective, folder, ledger)
            stage_evaluate_mix(cfg, folder, ledger)
            stage_judge(cfg, folder, ledger, endpoint, judge_starts)
        stage_footprint(cfg, folder, ledger)
    finally:
        cluster.shutdown()
    stage_compare(cfg, folder, ledger)
    with ledger.stage("report"):
        write_report(cfg, folder, ledger.stages, ray_heads=cluster.heads_started)
    manifest = {
        "name": cfg.name,
        "config": recorded(cfg),
        "packages": artifacts.package_versions(),
        "stages": ledger.stages,
        "ray_heads_started": cluster.heads_started,
        "placement_groups_removed": cluster.groups_removed,
        "engine_starts": sum(s.get("engine_starts", 0) for s in ledger.stages),
        "total_wall_s": round(time.perf_counter() - t0, 2),
        "artifacts": artifacts.list_artifacts(folder.root),
    }
    artifacts.write_json_atomic(folder.manifest, manifest)
    return folder


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
        folder = run(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume; finished work is kept", file=sys.stderr)
        return 130
    print(f"report: {folder.report}")
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m distill.pipeline")())
