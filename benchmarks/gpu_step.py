"""A KD training step on a GPU against a plain cross-entropy step, in one process:

    python -m benchmarks.gpu_step --shape llama2-7b --out gpu_step-llama2-7b.json   # what gpu_check.sh runs
    python -m benchmarks.gpu_step --shape qwen2.5-0.5b --out gpu_step.json

Models are built from a config with random weights, in bf16, so no model hub is needed:
`llama2-7b` is Llama-2-7B's shape (32 blocks, hidden 4096, 32,000-token vocabulary), whose
steps take gradients for every weight (sft, kd-topk, kd-dense; sft-adamw also steps AdamW)
and then for LoRA r=16 adapters only (lora-sft, lora-kd-topk, lora-sft-adamw); `qwen2.5-0.5b` is the default student's shape with LoRA on every variant, as
the first runs measured. Each variant runs the same batch through distill.losses; the
figures are ratios to the first (plain cross-entropy) step, measured in the same run.
`--shape tiny --device cpu` is the same code at toy size, for the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

QWEN_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
# shape: (config class name, config, variants measured on every weight, LoRA variants)
SHAPES = {
    "qwen2.5-0.5b": ("Qwen2", QWEN_05B, (), ("sft", "kd-topk", "kd-dense")),
    "llama2-7b": ("Llama", LLAMA2_7B, ("sft", "kd-topk", "kd-dense", "sft-adamw"),
                  ("lora-sft", "lora-kd-topk", "lora-sft-adamw")),
    "tiny": ("Llama", TINY, ("sft", "kd-topk", "kd-dense", "sft-adamw"), ("lora-sft", "lora-kd-topk", "lora-sft-adamw")),
}


def step_fn(variant: str, model, batch: dict):
    """One training step of `variant`: forward and backward; with the -adamw suffix also an
    AdamW step over the trainable weights (its state is what full fine-tuning pays for and
    LoRA does not)."""
    from distill.losses import forward_kl, kd_objective

    opt = None
    if variant.endswith("-adamw"):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, foreach=False)
    variant = variant.removeprefix("lora-").removesuffix("-adamw")
    device = batch["ids"].device.type

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = model(input_ids=batch["ids"]).logits
        if variant == "kd-dense":
            loss = forward_kl(logits, batch["dense"], batch["mask"])
        else:
            loss = kd_objective(logits, batch["labels"], batch["topk_ids"], batch["topk_lp"], batch["mask"],
                                kd_weight=0.0 if variant == "sft" else 0.5)["loss"]
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)
    return step


def measure(variant: str, model, batch: dict, steps: int) -> dict:
    cuda = batch["ids"].is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step = step_fn(variant, model, batch)
    step()  # warm-up: kernels chosen, allocator primed
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"median_s": statistics.median(times), "peak_gib": peak}


def build(shape: str, device: str):
    import transformers

    kind, config, _, _ = SHAPES[shape]
    cfg = getattr(transformers, f"{kind}Config")(**config)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the device itself: seconds for 7B on a GPU
        return getattr(transformers, f"{kind}ForCausalLM")(cfg).to(torch.bfloat16)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_step")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args(argv)

    from student.build import apply_lora

    _, config, full, lora = SHAPES[args.shape]
    dev = torch.device(args.device)
    model = build(args.shape, args.device)
    v, r, s = config["vocab_size"], args.rows, args.seq
    g = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(0, v, (r, s), device=dev, generator=g)
    top = torch.randn(r, s, 20, device=dev, generator=g).log_softmax(-1).sort(-1, descending=True)
    batch = {"ids": ids, "labels": torch.roll(ids, -1, 1), "mask": torch.ones(r, s, device=dev),
             "topk_ids": torch.randint(0, v, (r, s, 20), device=dev, generator=g), "topk_lp": top.values - 1.0}
    rows = {}
    for variant in full + lora:
        if variant == lora[0]:
            batch.pop("dense", None)  # the dense logits count only against the variant that reads them
            model = apply_lora(model, 16, 32, 0.0)
        if variant == "kd-dense":
            batch["dense"] = torch.randn(r, s, v, device=dev, dtype=torch.bfloat16, generator=g)
        try:
            rows[variant] = measure(variant, model, batch, args.steps)
        except torch.OutOfMemoryError:  # full AdamW at 7B needs ~76 GiB: recorded, not fatal
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            rows[variant] = {"median_s": float("nan"), "peak_gib": float("nan"), "out_of_memory": True}
    base = rows[(full or lora)[0]]
    for row in rows.values():
        row["time_vs_sft"] = row["median_s"] / base["median_s"]
        row["memory_vs_sft"] = row["peak_gib"] / base["peak_gib"]
    result = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "shape": args.shape, "params": sum(p.numel() for p in model.parameters()),
              "rows": args.rows, "seq": args.seq, "steps": args.steps, "variants": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
