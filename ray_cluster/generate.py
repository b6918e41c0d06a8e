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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from distill.schema import tokenizer_fingerprint, write_table_atomic
from teacher import engine
from teacher.prompts import Prompt, make_splits
from teacher.registry import get_teacher


@dataclass(frozen=True)
class GenerationConfig:
    top_k: int = 20  # teacher alternatives kept per generated token
    max_new_tokens: int = 160  # fable length cap, in tokens
    temperature: float = 1.0
    top_p: float = 1.0
    train_samples: int = 1  # completions per training prompt
    eval_samples: int = 1  # completions per evaluation prompt
    shard_size: int = 16  # rows per Parquet shard: the unit of resumption
    batch_size: int = 16  # rows per Ray Data batch sent to the engine
    max_model_len: int = 1024
    kv_cache_gib: int = 2  # CPU engines: RAM reserved for the KV cache
    trust_remote_code: bool = False

    def __post_init__(self):
        checks = {
            "top_k": self.top_k >= 1, "max_new_tokens": self.max_new_tokens >= 1,
            "temperature": self.temperature >= 0, "top_p": 0 < self.top_p <= 1,
            "train_samples": self.train_samples >= 1, "eval_samples": self.eval_samples >= 1,
            "shard_size": self.shard_size >= 1, "batch_size": self.batch_size >= 1,
            "max_model_len": self.max_model_len > self.max_new_tokens, "kv_cache_gib": self.kv_cache_gib >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid generation setting {bad[0]}={getattr(self, bad[0])!r}")


def plan_shards(prompts: list[Prompt], cfg: GenerationConfig) -> list[list[dict]]:
    """Rows to generate, grouped into shards in a fixed order."""
    tasks = []
    for p in prompts:
        n = cfg.train_samples if p.split == "train" else cfg.eval_samples
        tasks += [{**asdict(p), "sample_index": i} for i in range(n)]
    return [tasks[i : i + cfg.shard_size] for i in range(0, len(tasks), cfg.shard_size)]


def _processor(teacher, model_path: str, cfg: GenerationConfig, gpus: float):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    tp = int(teacher.engine.get("tensor_parallel_size", 1))
    # CPU engines need an explicit CPU bundle: the default asks for a GPU and waits forever.
    bundles = [{"GPU": 1, "CPU": 1}] * tp if gpus >= tp and teacher.gpu_memory_gib else [{"CPU": 1}]
    config = vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=engine.engine_kwargs(teacher, cfg.top_k, cfg.max_model_len, cfg.trust_remote_code),
        batch_size=cfg.batch_size,
        concurrency=1,
        placement_group_config={"bundles": bundles},
        runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib)}},
        # Prompts arrive already formatted (chat template or completion frame), so the
        # text the engine sees is recorded exactly; the engine tokenizes.
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
    )
    sampling = engine.sampling_dict(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k)

    def pre(row):
        return {"prompt": row["prompt_text"], "sampling_params": sampling, "task": row["task"]}

    def post(row):
        if row.get("__inference_error__"):
            raise RuntimeError(f"engine failed on a row: {row['__inference_error__']}")
        task = json.loads(row["task"])
        out = engine.schema_row(
            task, task["sample_index"], row["prompt"], row["prompt_token_ids"], row["generated_text"],
            row["generated_tokens"], row["logprobs"], cfg.top_k, teacher.id, sampling, task["fingerprint"],
        )
        return {"shard": task["shard"], "row": json.dumps(out)}

    return build_processor(config, preprocess=pre, postprocess=post)


def generate(teacher_id: str, prompts: list[Prompt], out_dir: Path, cfg: GenerationConfig) -> dict:
    """Generate every missing shard of `prompts` for one teacher into out_dir. Returns stats."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from ray_cluster.cluster import connect

    teacher = get_teacher(teacher_id)
    model_path = teacher.model_path()
    out_dir = Path(out_dir)
    shards = plan_shards(prompts, cfg)
    plan = {
        "teacher": teacher.id, "model": teacher.hub_id, "config": asdict(cfg),
        "shards": [[f"{t['prompt_id']}/{t['sample_index']}" for t in s] for s in shards],
    }
    plan_file = out_dir / "plan.json"
    if plan_file.exists():
        if json.loads(plan_file.read_text()) != plan:
            raise ValueError(
                f"{out_dir} holds a different generation plan (other prompts or settings); "
                "use a new run name or delete that folder"
            )
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = plan_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan, indent=1))
        tmp.replace(plan_file)

    pending = {i: s for i, s in enumerate(shards) if not (out_dir / f"{i:05d}.parquet").exists()}
    stats = {"teacher": teacher.id, "shards": len(shards), "shards_done_before": len(shards) - len(pending),
             "rows": 0, "generated_tokens": 0, "wall_s": 0.0}
    if not pending:
        return stats

    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    fingerprint = tokenizer_fingerprint(tok)
    items = []
    for i, shard in pending.items():
        for t in shard:
            p = Prompt(**{k: v for k, v in t.items() if k != "sample_index"})
            task = {**t, "shard": i, "fingerprint": fingerprint}
            items.append({"prompt_text": engine.format_prompt(teacher, p, tok), "task": json.dumps(task)})

    import ray

    t0 = time.perf_counter()
    cluster = connect()
    # One tqdm bar over fables says more than Ray Data's per-operator progress log.
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(items)
    processed = _processor(teacher, model_path, cfg, cluster["gpus"])(ds)
    buffers: dict[int, list[dict]] = {i: [] for i in pending}
    meta = {"teacher": teacher.id, "hub_id": teacher.hub_id, "top_k": cfg.top_k, "logprobs_mode": "raw_logprobs"}
    with tqdm(total=len(items), desc=f"generate {teacher.id}", unit="fable") as bar:
        for r in processed.iter_rows():
            i = int(r["shard"])
            row = json.loads(r["row"])
            buffers[i].append(row)
            stats["rows"] += 1
            stats["generated_tokens"] += len(row["token_ids"])
            bar.update(1)
            if len(buffers[i]) == len(pending[i]):
                order = {f"{t['prompt_id']}/{t['sample_index']}": n for n, t in enumerate(pending[i])}
                rows = sorted(buffers.pop(i), key=lambda x: order[f"{x['prompt_id']}/{x['sample_index']}"])
                write_table_atomic(rows, out_dir / f"{i:05d}.parquet", meta)
    stats["wall_s"] = time.perf_counter() - t0
    if buffers:
        missing = sum(len(pending[i]) - len(b) for i, b in buffers.items())
        raise RuntimeError(f"{teacher.id}: generation ended with {missing} rows missing in shards {sorted(buffers)}")
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="generate teacher fables with top-k logprobs on Ray")
    ap.add_argument("--teacher", action="append", required=True, help="teacher id (repeatable)")
    ap.add_argument("--out", required=True, help="folder; one sub-folder per teacher")
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--eval-samples", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=16)
    args = ap.parse_args(argv)
    try:
        teachers = [get_teacher(t) for t in args.teacher]
        cfg = GenerationConfig(top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                               eval_samples=args.eval_samples, shard_size=args.shard_size)
        train, ev = make_splits(args.n_train, args.n_eval, args.seed)
        for t in teachers:
            stats = generate(t.id, train + ev, Path(args.out) / t.id, cfg)
            print(json.dumps(stats))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
