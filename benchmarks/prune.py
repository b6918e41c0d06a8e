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


def reset_peak() -> None:
    """Start the process's peak resident set (VmHWM) afresh from what it holds now (Linux),
    so that imports' transient peaks are not the baseline."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


class AnonPeak:
    """The peak of the process's anonymous resident memory (RssAnon), sampled every 5 ms: the
    memory a build needs, without the safetensors pages it reads through mmap, which the
    kernel can drop (VmHWM counts those too)."""

    def __init__(self):
        import threading

        self.base = self.peak = status_bytes("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, status_bytes("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_bytes("RssAnon"))
        return self.peak - self.base


def measure(path: str, way: str, keep: int = KEEP, device: str = "cpu") -> dict:
    """`whole`: the teacher loaded in float32 on the CPU, then pruned (the former way); `kept`:
    load_pruned, in bf16 on the GPU when device is cuda, else float32 on the CPU."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline, as by any caller)

    from student import build

    if device == "cuda":
        torch.zeros(1, device="cuda")  # the CUDA context is not the model's memory
    reset_peak()
    base, anon = status_bytes("VmRSS"), AnonPeak()
    if way == "whole":
        from transformers import AutoModelForCausalLM

        model = build.prune_layers(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), keep)
    else:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = build.load_pruned(path, keep, dtype=dtype, device=device)
    grew = anon.stop()
    student = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"way": way, "device": device, "peak_above_start": grew, "peak_rss_above_start": peak_bytes() - base,
            "student_bytes": student}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.prune")
    ap.add_argument("--make", type=Path)
    ap.add_argument("--path")
    ap.add_argument("--way", choices=("whole", "kept"))
    ap.add_argument("--keep", type=int, default=KEEP)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.make:
        print(json.dumps(make(args.make)))
    else:
        print(json.dumps(measure(args.path, args.way, args.keep, args.device)))


if __name__ == "__main__":
    sys.exit(main())
