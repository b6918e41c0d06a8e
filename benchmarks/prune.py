"""Peak memory of building a pruned student: load-then-prune against load_pruned.

    python -m benchmarks.prune --make DIR              # a random Llama of 16 layers (~270M parameters, bf16)
    python -m benchmarks.prune --path DIR --way whole  # one measurement, in its own process

A 7B teacher cannot be built here; a Llama scaled up from the tiny test architecture stands
in for it, pruned 16 -> 4 layers as production prunes 32 -> 8. Each way runs in a fresh
process, and its peak resident set above the process's start (torch and transformers
imported) is what building the student cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

LAYERS, KEEP = 16, 4


def make(out: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=LAYERS,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    return {"params": sum(p.numel() for p in model.parameters())}


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(path: str, way: str) -> dict:
    import torch
    import transformers  # noqa: F401  (imported before the baseline, as by any caller)

    from student import build

    base = peak_bytes()
    if way == "whole":
        from transformers import AutoModelForCausalLM

        model = build.prune_layers(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), KEEP)
    else:
        model = build.load_pruned(path, KEEP)
    student = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"way": way, "peak_above_start": peak_bytes() - base, "student_bytes": student}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.prune")
    ap.add_argument("--make", type=Path)
    ap.add_argument("--path")
    ap.add_argument("--way", choices=("whole", "kept"))
    args = ap.parse_args(argv)
    if args.make:
        print(json.dumps(make(args.make)))
    else:
        print(json.dumps(measure(args.path, args.way)))


if __name__ == "__main__":
    sys.exit(main())
