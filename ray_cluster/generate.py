"""Teacher generation as a Ray Data LLM job: fables plus per-token top-k logprobs.

    python -m ray_cluster.generate --teacher smollm2-135m --out runs/demo/teachers --n-train 64
    ray job submit --working-dir . -- python -m ray_cluster.generate --teacher smollm2-135m --out /shared/kd

Work is split into shards of rows (prompt x sample); each shard is written atomically
as soon as all its rows are back, and a rerun generates only the shards that are
missing, so a killed job resumes without duplicates or gaps.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from distill.artifacts import remove_partial_writes, write_text_atomic
from distill.redact import redact
from distill.schema import row_problem, tokenizer_fingerprint, write_table_atomic
from ray_cluster.cluster import EngineStarts, engine_processor_config, request_started
from ray_cluster.generation_config import EXECUTION_SETTINGS, GenerationConfig
from teacher import engine
from teacher.prompts import Prompt, splits
from teacher.registry import Teacher, check_reachable, get_teacher

# Held while a teacher's job imports and loads (its tokenizer, its Ray Data LLM processor):
# with several teachers generating at once (parallel_teachers), two threads importing
# through transformers' lazy module raced ("cannot import name 'AutoTokenizer'"). The
# generation itself runs outside it.
_LOADING = threading.Lock()


DEFAULT = GenerationConfig()


def plan_shards(prompts: list[Prompt], cfg: GenerationConfig) -> list[list[dict]]:
    """Rows to generate, grouped into shards in a fixed order."""
    tasks = []
    for p in prompts:
        n = cfg.train_samples if p.split == "train" else cfg.eval_samples
        tasks += [{**asdict(p), "sample_index": i} for i in range(n)]
    return [tasks[i : i + cfg.shard_size] for i in range(0, len(tasks), cfg.shard_size)]


def _processor(teacher, model_path: str, cfg: GenerationConfig, gpus: float):
    from ray.data.llm import build_processor

    config = engine_processor_config(
        teacher, model_path, engine.engine_kwargs(teacher, cfg.top_k, cfg.max_model_len, cfg.trust_remote_code, model_path),
        cfg.batch_size, cfg.kv_cache_gib, gpus, replicas=cfg.replicas, resources=cfg.engine_resources,
        replica_wait_s=cfg.replica_wait_s,
        # A failing row comes back with its error instead of aborting the whole job.
        should_continue_on_error=True,
    )
    sampling = engine.sampling_dict(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k)

    def pre(row):
        return {"prompt": row["prompt_text"], "sampling_params": sampling, "task": row["task"]}

    def post(row):
        task = json.loads(row["task"])
        if row.get("__inference_error__"):
            return {"task": row["task"], "row": "", "error": redact(str(row["__inference_error__"]))[:2000],
                    "started": request_started(row)}
        out = engine.schema_row(
            task, task["sample_index"], row["prompt"], row["prompt_token_ids"], row["generated_text"],
            row["generated_tokens"], row["logprobs"], cfg.top_k, teacher.id, sampling, task["fingerprint"],
        )
        return {"task": row["task"], "row": json.dumps(out), "error": "", "started": request_started(row)}

    # pre and post only reshape rows: a fraction of a CPU each, so they never hold the CPU
    # an engine replica's placement group is waiting for.
    light = {"num_cpus": 0.25}
    return build_processor(config, preprocess=pre, postprocess=post, preprocess_map_kwargs=light,
                           postprocess_map_kwargs=light)


def _key(t: dict) -> str:
    return f"{t['prompt_id']}/{t['sample_index']}"


def _write_plan(out_dir: Path, plan: dict) -> None:
    plan_file = out_dir / "plan.json"
    if plan_file.exists():
        if json.loads(plan_file.read_text()) != plan:
            raise ValueError(
                f"{out_dir} holds a different generation plan (other prompts or settings); "
                "use a new run name or delete that folder"
            )
        return
    write_text_atomic(plan_file, json.dumps(plan, indent=1))


class ShardWriter:
    """Collects finished rows and final failures; writes a shard the moment every row of
    it is accounted for. Failures go to <shard>.failures.json beside it, with their reason."""

    def __init__(self, out_dir: Path, pending: dict[int, list[dict]], meta: dict):
        self.out_dir, self.pending, self.meta = out_dir, pending, meta
        self.rows: dict[int, list[dict]] = {i: [] for i in pending}
        self.failed: dict[int, list[dict]] = {i: [] for i in pending}

    def add(self, shard: int, row: dict) -> bool:
        """Keep a finished row; False when its top-k cannot be trusted (then it is recorded
        as a failure with the reason, like a row the engine failed on)."""
        if (problem := row_problem(row)) is not None:
            self.fail(shard, row, f"invalid teacher output: {problem}")
            return False
        self.rows[shard].append(row)
        self._maybe_write(shard)
        return True

    def fail(self, shard: int, task: dict, reason: str) -> None:
        self.failed[shard].append({"prompt_id": task["prompt_id"], "sample_index": task["sample_index"], "reason": reason})
        self._maybe_write(shard)

    def _maybe_write(self, i: int) -> None:
        if len(self.rows[i]) + len(self.failed[i]) < len(self.pending[i]):
            return
        order = {_key(t): n for n, t in enumerate(self.pending[i])}
        rows = sorted(self.rows.pop(i), key=lambda r: order[_key(r)])
        failed = self.failed.pop(i)
        if failed:
            write_text_atomic(self.out_dir / f"{i:05d}.failures.json", json.dumps(failed, indent=1))
        # The shard last: its presence is what marks the shard finished.
        write_table_atomic(rows, self.out_dir / f"{i:05d}.parquet", self.meta, self.meta["vocab_size"])

    def unfinished(self) -> list[int]:
        return sorted(self.rows)


def ray_pass(teacher, model_path: str, cfg: GenerationConfig):
    """The real engine: one Ray Data LLM pipeline over `items`, streaming results back."""
    import ray

    from ray_cluster.cluster import bounded, connect, engine_failure, releasing_engines

    def run(items: list[dict]):
        cluster = connect()
        with _LOADING:
            processor = bounded(_processor(teacher, model_path, cfg, cluster["gpus"]))
        started = time.time()
        try:
            with releasing_engines():
                yield from processor(ray.data.from_items(items)).iter_rows()
        except ray.exceptions.GetTimeoutError as e:
            have = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:") and "memory" not in k}
            raise RuntimeError(
                f"{teacher.id}: {cfg.replicas} engine replica(s) did not all start within {cfg.replica_wait_s} s "
                f"(generation.replica_wait_s); each needs the resources {cfg.engine_resources or 'CPU/GPU only'} "
                f"on top of its CPU/GPU bundle, and the cluster has {have}: lower "
                f"generation.replicas, add nodes, or wait longer ({e})") from None
        except ray.exceptions.RayError as e:  # the engine died past its restarts
            raise engine_failure(e, f"teacher '{teacher.id}'", started) from None

    return run


def generate(teacher: str | Teacher, prompts: list[Prompt], out_dir: Path, cfg: GenerationConfig, run_pass=None) -> dict:
    """Generate every missing shard of `prompts` for one teacher into out_dir. Returns stats.

    Rows the engine fails on are retried (cfg.retries more passes); rows that still fail,
    or whose prompt cannot fit the context, are recorded with their reason."""
    with _LOADING:
        from transformers import AutoTokenizer

    teacher = teacher if isinstance(teacher, Teacher) else get_teacher(teacher)
    model_path = teacher.model_path()
    out_dir = Path(out_dir)
    shards = plan_shards(prompts, cfg)
    remove_partial_writes(out_dir)
    what = {k: v for k, v in asdict(cfg).items() if k not in EXECUTION_SETTINGS}
    _write_plan(out_dir, {"teacher": teacher.id, "model": teacher.hub_id, "config": what,
                          "shards": [[_key(t) for t in s] for s in shards]})
    pending = {i: s for i, s in enumerate(shards) if not (out_dir / f"{i:05d}.parquet").exists()}
    stats = {"teacher": teacher.id, "shards": len(shards), "shards_done_before": len(shards) - len(pending),
             "rows": 0, "failed": 0, "generated_tokens": 0, "wall_s": 0.0, "engine_starts": 0, "engine_start_s": 0.0}
    if not pending:
        return stats

    with _LOADING:  # loading and prompt formatting import lazily (chat templates)
        tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code, **teacher.load_kwargs())
        fingerprint = tokenizer_fingerprint(tok)
        meta = {"teacher": teacher.id, "hub_id": teacher.hub_id, "top_k": cfg.top_k, "logprobs_mode": "raw_logprobs",
                "vocab_size": max(len(tok), teacher.vocab_size)}
        writer = ShardWriter(out_dir, pending, meta)
        limit = engine.engine_kwargs(teacher, cfg.top_k, cfg.max_model_len, model_path=model_path)["max_model_len"]
        items = _engine_items(teacher, tok, fingerprint, pending, cfg, writer, stats, limit)

    t0, starts = time.perf_counter(), EngineStarts()
    _run_passes(items, run_pass or ray_pass(teacher, model_path, cfg), cfg.retries, writer, stats, teacher.id,
                starts, cfg.replicas)
    stats["wall_s"] = time.perf_counter() - t0
    stats.update(starts.figures())
    if writer.unfinished():
        raise RuntimeError(f"{teacher.id}: generation ended with shards {writer.unfinished()} incomplete")
    return stats


def check_context(teacher: Teacher, prompts: list[Prompt], cfg: GenerationConfig) -> None:
    """Before any work: when the model allows fewer tokens than generation.max_model_len (its
    max_position_embeddings), the engine runs at the model's length, provided the longest
    formatted prompt and max_new_tokens fit in it; otherwise one error naming the teacher and
    both numbers. A model whose config is not on this machine (a hub teacher not yet
    downloaded) is left to the engine."""
    from transformers import AutoTokenizer

    model_path = teacher.model_path()
    limit = engine.model_context(model_path)
    if limit is None or limit >= cfg.max_model_len or not prompts:
        return
    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code, **teacher.load_kwargs())
    longest = max(len(tok(engine.format_prompt(teacher, p, tok)).input_ids) for p in prompts)
    if longest + cfg.max_new_tokens > limit:
        raise ValueError(f"teacher '{teacher.id}': the model allows {limit} tokens (max_position_embeddings), but its "
                         f"longest prompt ({longest} tokens) and generation.max_new_tokens ({cfg.max_new_tokens}) need "
                         f"{longest + cfg.max_new_tokens}: lower generation.max_new_tokens")


def _engine_items(teacher, tok, fingerprint: str, pending: dict, cfg: GenerationConfig, writer: ShardWriter,
                  stats: dict, limit: int | None = None) -> list[dict]:
    """The engine's input rows for the pending shards: each prompt formatted for the
    teacher; one too long for the context is recorded as failed instead."""
    items = []
    for i, shard in pending.items():
        for t in shard:
            p = Prompt(**{k: v for k, v in t.items() if k != "sample_index"})
            text = engine.format_prompt(teacher, p, tok)
            n = len(tok(text).input_ids)
            if n >= (limit or cfg.max_model_len):
                writer.fail(i, t, f"prompt has {n} tokens; the engine's max_model_len is {limit or cfg.max_model_len}")
                stats["failed"] += 1
                continue
            items.append({"prompt_text": text, "task": json.dumps({**t, "shard": i, "fingerprint": fingerprint})})
    return items


def _run_passes(items: list[dict], run_pass, retries: int, writer: ShardWriter, stats: dict, teacher_id: str,
                starts: EngineStarts, replicas: int) -> None:
    """Send `items` through the engine; rows it failed on go round again, up to `retries`
    more passes, and are then recorded as failed with the engine's reason. Each pass is a
    job that starts `replicas` engines."""
    from tqdm import tqdm

    texts = {it["task"]: it["prompt_text"] for it in items}
    with tqdm(total=len(items), desc=f"generate {teacher_id}", unit="fable") as bar:
        for attempt in range(retries + 1):
            if not items:
                break
            retry = []
            for r in starts.timed(run_pass(items), replicas):
                task = json.loads(r["task"])
                if r["error"]:
                    if attempt < retries:
                        retry.append({"prompt_text": texts[r["task"]], "task": r["task"]})
                    else:
                        writer.fail(task["shard"], task, f"engine error after {attempt + 1} attempts: {r['error']}")
                        stats["failed"] += 1
                        bar.update(1)
                    continue
                row = json.loads(r["row"])
                if writer.add(task["shard"], row):
                    stats["rows"] += 1
                    stats["generated_tokens"] += len(row["token_ids"])
                else:
                    stats["failed"] += 1
                bar.update(1)
            items = retry


def build_parser() -> argparse.ArgumentParser:
    """The job's options; each generation setting defaults to GenerationConfig's (documented there)."""
    ap = argparse.ArgumentParser(prog="python -m ray_cluster.generate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 description="generate teacher fables with top-k logprobs on Ray")
    ap.add_argument("--teacher", action="append", required=True, help="teacher id (repeatable)")
    ap.add_argument("--out", required=True, help="folder; one sub-folder per teacher")
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=DEFAULT.top_k)
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT.max_new_tokens)
    ap.add_argument("--temperature", type=float, default=DEFAULT.temperature)
    ap.add_argument("--top-p", type=float, default=DEFAULT.top_p, help="nucleus sampling of the text (the stored top-k stays raw)")
    ap.add_argument("--eval-samples", type=int, default=DEFAULT.eval_samples)
    ap.add_argument("--shard-size", type=int, default=DEFAULT.shard_size)
    ap.add_argument("--replicas", type=int, default=DEFAULT.replicas, help="data-parallel engine replicas per teacher")
    ap.add_argument("--batch-size", type=int, default=DEFAULT.batch_size, help="rows per Ray Data batch (the unit an engine takes)")
    ap.add_argument("--engine-resources", type=json.loads, default=DEFAULT.engine_resources,
                    help='JSON of extra Ray resources per engine bundle, e.g. \'{"teacher_node": 1}\'')
    ap.add_argument("--replica-wait-s", type=int, default=DEFAULT.replica_wait_s,
                    help="seconds to wait for every replica before sending rows (0: do not wait)")
    ap.add_argument("--prompts", help="JSONL of training prompts instead of combinatorial ones")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        teachers = [get_teacher(t) for t in args.teacher]
        for t in teachers:
            check_reachable(t)
        cfg = GenerationConfig(top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p,
                               eval_samples=args.eval_samples, shard_size=args.shard_size,
                               replicas=args.replicas, batch_size=args.batch_size,
                               engine_resources=args.engine_resources, replica_wait_s=args.replica_wait_s)
        train, ev = splits(args.n_train, args.n_eval, args.seed, args.prompts)
        for t in teachers:
            stats = generate(t.id, train + ev, Path(args.out) / t.id, cfg)
            print(json.dumps(stats))
    except (ValueError, FileNotFoundError) as e:  # a bad setting or input: nothing was generated
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m ray_cluster.generate")())
