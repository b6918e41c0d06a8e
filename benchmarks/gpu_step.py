"""A KD training step on a GPU against a plain cross-entropy step, in one process:

    python -m benchmarks.gpu_step --out gpu_step.json   # what benchmarks/gpu_check.sh runs

The student is the default student's architecture (Qwen2.5-0.5B: 24 blocks, hidden 896,
151,936-token vocabulary) built from its config with random weights, in bf16 with LoRA r=16
on every linear layer, so it needs no model hub. Each variant runs the same batch through
distill.losses; the figures are ratios to the SFT step, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

QWEN_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)


def step_fn(variant: str, model, batch: dict):
    from distill.losses import forward_kl, kd_objective

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=batch["ids"]).logits
        if variant == "kd-dense":
            loss = forward_kl(logits, batch["dense"], batch["mask"])
        else:
            loss = kd_objective(logits, batch["labels"], batch["topk_ids"], batch["topk_lp"], batch["mask"],
                                kd_weight=0.0 if variant == "sft" else 0.5)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def measure(variant: str, model, batch: dict, steps: int) -> dict:
    step = step_fn(variant, model, batch)
    step()  # warm-up: kernels chosen, allocator primed
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from student.build import apply_lora

    torch.manual_seed(0)
    model = apply_lora(Qwen2ForCausalLM(Qwen2Config(**QWEN_05B)).to(torch.bfloat16), 16, 32, 0.0).cuda()
    v, r, s = QWEN_05B["vocab_size"], args.rows, args.seq
    ids = torch.randint(0, v, (r, s), device="cuda")
    top = torch.randn(r, s, 20, device="cuda").log_softmax(-1).sort(-1, descending=True)
    batch = {"ids": ids, "labels": torch.roll(ids, -1, 1), "mask": torch.ones(r, s, device="cuda"),
             "topk_ids": torch.randint(0, v, (r, s, 20), device="cuda"), "topk_lp": top.values - 1.0}
    rows = {}
    for variant in ("sft", "kd-topk", "kd-dense"):
        if variant == "kd-dense":
            batch["dense"] = torch.randn(r, s, v, device="cuda", dtype=torch.bfloat16)
        rows[variant] = measure(variant, model, batch, args.steps)
    base = rows["sft"]
    for row in rows.values():
        row["time_vs_sft"] = row["median_s"] / base["median_s"]
        row["memory_vs_sft"] = row["peak_gib"] / base["peak_gib"]
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": args.rows,
              "seq": args.seq, "steps": args.steps, "variants": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
