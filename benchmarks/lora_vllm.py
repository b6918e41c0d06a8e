"""The student engine's decoding with LoRA adapters: plain `vllm.LLM.generate`, no Ray.

    python -m benchmarks.lora_vllm --adapters 5 --n 16 --max-new-tokens 64

The write stage's shape: the 0.5B student serving several rank-16 adapters on all linear
layers (the KD and SFT students and the checkpoints), requests spread over them; with
--adapters 0 the base alone, in an engine without LoRA. KD_LORA_GROUPED=0 turns off the
grouped products (teacher/lora_cpu.py). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def make_adapters(base: str, n: int, rank: int, folder: Path) -> list[str]:
    """`n` random rank-`rank` adapters on every linear layer of `base`, small enough that the
    model still writes text."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for i in range(n):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        lora = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                                task_type="CAUSAL_LM", init_lora_weights=False))
        with torch.no_grad():
            for name, w in lora.named_parameters():
                if "lora_" in name:
                    w.mul_(0.01)
        lora.save_pretrained(folder / f"a{i}", safe_serialization=True)
        out.append(str(folder / f"a{i}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="qwen2.5-coder-0.5b")
    ap.add_argument("--adapters", type=int, default=5)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from teacher import engine
    from teacher.registry import get_teacher

    base = get_teacher(args.student).model_path()
    with tempfile.TemporaryDirectory() as d:
        adapters = make_adapters(base, args.adapters, args.rank, Path(d))
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        t0 = time.perf_counter()
        llm = LLM(model=base, **engine.student_engine_kwargs(1024, args.rank if adapters else 0, max(1, len(adapters))))
        t1 = time.perf_counter()
        from teacher.prompts import make_splits

        tok = llm.get_tokenizer()
        train, _ = make_splits(args.n, 50, 0)
        prompts = [{"prompt_token_ids": tok.apply_chat_template([{"role": "user", "content": p.instruction}],
                                                                 add_generation_prompt=True)} for p in train]
        lora = [LoRARequest(f"a{i % len(adapters)}", i % len(adapters) + 1, adapters[i % len(adapters)])
                for i in range(args.n)] if adapters else None
        # Every sequence the same length, so that both runs decode the same number of steps.
        sp = SamplingParams(max_tokens=args.max_new_tokens, min_tokens=args.max_new_tokens, temperature=1.0, top_p=0.95)
        outs = llm.generate(prompts, sp, lora_request=lora)
        t2 = time.perf_counter()
    print(json.dumps({"adapters": len(adapters), "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                      "engine_start_s": t1 - t0, "generate_s": t2 - t1}))


if __name__ == "__main__":
    main()
