"""Baseline for the generation benchmark: plain `vllm.LLM.generate`, no Ray.

    python -m benchmarks.plain_vllm --teacher smollm2-135m --n 64 --max-new-tokens 160

Same prompts, engine settings and sampling as the Ray job; prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (teacher/nucleus.py; KD_NUCLEUS_PREFILTER=0 sorts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump", help="write the float32 top-k (logical rows) here as JSON, for the storage benchmark")
    args = ap.parse_args()
    t0 = time.perf_counter()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from teacher import engine
    from teacher.prompts import make_splits
    from teacher.registry import get_teacher

    teacher = get_teacher(args.teacher)
    path = teacher.model_path()
    tok = AutoTokenizer.from_pretrained(path)
    train, _ = make_splits(args.n, 50, args.seed)
    prompts = [engine.format_prompt(teacher, p, tok) for p in train]
    llm = LLM(model=path, **engine.engine_kwargs(teacher, args.top_k, 1024))
    t1 = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(**engine.sampling_dict(args.max_new_tokens, 1.0, args.top_p, args.top_k)))
    t2 = time.perf_counter()
    rows = [engine.topk_from_logprobs(o.outputs[0].logprobs, list(o.outputs[0].token_ids), args.top_k) for o in outs]
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    if args.dump:
        dump = [{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids),
                 "topk_ids": ids, "topk_logprobs": lps, "prompt_id": p.prompt_id}
                for o, (ids, lps, _), p in zip(outs, rows, train)]
        with open(args.dump, "w") as f:
            json.dump(dump, f)
    # The engine is seeded: two runs that sample alike write the same tokens.
    digest = hashlib.sha256(json.dumps([list(o.outputs[0].token_ids) for o in outs]).encode()).hexdigest()[:16]
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outs)
    print(json.dumps({"tokens": tokens, "prompt_tokens": prompt_tokens, "rows": len(rows), "engine_start_s": t1 - t0, "generate_s": t2 - t1,
                      "total_s": time.perf_counter() - t0, "tokens_digest": digest}))


if __name__ == "__main__":
    main()
