"""Score given texts under a teacher: per-token logprobs and top-k of text the teacher
did not write (student samples for on-policy distillation, other models' fables).

    python -m ray_cluster.score --teacher smollm2-135m --input fables.jsonl --out scores.jsonl

Input JSONL rows carry `prompt` (already formatted) and `completion`. vLLM returns
prompt logprobs only with prefix caching off, so the engine is started that way here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from teacher import engine
from teacher.registry import get_teacher


def score(teacher_id: str, pairs: list[dict], top_k: int = 20, max_model_len: int = 1024, kv_cache_gib: int | None = None) -> list[dict]:
    """For each {prompt, completion}: the completion's token ids, each token's logprob under
    the teacher and the teacher's top-k at that position (prompt tokens are not returned)."""
    import ray
    from ray.data.llm import build_processor
    from transformers import AutoTokenizer

    from ray_cluster.cluster import bounded, connect, engine_failure, engine_processor_config, releasing_engines

    teacher = get_teacher(teacher_id)
    path = teacher.model_path()
    tok = AutoTokenizer.from_pretrained(path)
    items = []
    for n, p in enumerate(pairs):
        prompt_ids = tok(p["prompt"]).input_ids
        completion_ids = tok(p["completion"], add_special_tokens=False).input_ids
        items.append({"n": n, "ids": prompt_ids + completion_ids, "start": len(prompt_ids)})
    kw = engine.engine_kwargs(teacher, top_k, max_model_len, model_path=path)
    kw["enable_prefix_caching"] = False  # vLLM computes no prompt logprobs for cached prefixes
    cluster = connect()
    config = engine_processor_config(teacher, path, kw, 16, kv_cache_gib, cluster["gpus"])

    def pre(row):
        return {"tokenized_prompt": list(row["ids"]), "n": row["n"], "start": row["start"],
                "sampling_params": {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": top_k}}

    def post(row):
        ids, start = [int(i) for i in row["prompt_token_ids"]], int(row["start"])
        entries = list(row["prompt_logprobs"])[start:]
        topk_ids, topk_lps, chosen = engine.topk_from_logprobs(entries, ids[start:], top_k)
        return {"n": row["n"], "out": json.dumps({"token_ids": ids[start:], "token_logprobs": chosen,
                                                  "topk_ids": topk_ids, "topk_logprobs": topk_lps})}

    processor = bounded(build_processor(config, preprocess=pre, postprocess=post))
    started = time.time()
    try:
        with releasing_engines():
            results = {int(r["n"]): json.loads(r["out"]) for r in processor(ray.data.from_items(items)).iter_rows()}
    except ray.exceptions.RayError as e:  # the engine died past its restarts
        raise engine_failure(e, f"teacher '{teacher.id}'", started) from None
    return [results[n] for n in range(len(pairs))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_cluster.score", description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--input", required=True, help="JSONL with prompt and completion fields")
    ap.add_argument("--out", required=True, help="JSONL, one scored row per input row")
    ap.add_argument("--top-k", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        pairs = []
        for n, line in enumerate(Path(args.input).read_text().splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    pairs.append({"prompt": str(rec["prompt"]), "completion": str(rec["completion"])})
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{args.input}, line {n}: needs prompt and completion ({e})") from None
        scored = score(args.teacher, pairs, args.top_k)
        from distill.artifacts import write_text_atomic

        write_text_atomic(Path(args.out), "".join(json.dumps(s) + "\n" for s in scored))
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m ray_cluster.score")())
