"""Peak memory of building a pruned student: load-then-prune against load_pruned.

    python -m benchmarks.prune --make DIR              # a random Llama of 16 layers (~270M parameters, bf16)
    python -m benchmarks.prune --path DIR --way whole  # one measurement, in its own process

A 7B teacher cannot be built here; a Llama scaled up from the tiny test architecture stands
in for it, pruned 16 -> 4 layers as production prunes 32 -> 8 (the GPU check prunes a
Mistral-7B-shaped one, tests/student/test_gpu.py). Each way runs in a fresh process; what
building the student cost is its peak anonymous memory above the start (torch and
transformers imported; AnonPeak), beside the peak resident set, which also counts the
safetensors pages read through mmap.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LAYERS, KEEP = 16, 4


def write_random_checkpoint(cfg, folder: Path, device: str = "cpu", shard_bytes: int = 4 << 30) -> int:
    """A random checkpoint of cfg's shape in bf16 safetensors shards, written tensor by tensor
    (at most a shard in memory, never the whole model), with its index; returns its bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    cfg.save_pretrained(folder)
    shards, shard, size, total = [], {}, 0, 0
    for name, p in meta.state_dict().items():
        shard[name] = (torch.randn(p.shape, device=device, dtype=torch.bfloat16) * 0.02).cpu()
        size += shard[name].numel() * 2
        if size >= shard_bytes:
            shards.append(shard)
            total, shard, size = total + size, {}, 0
    shards.append(shard)
    total += size
    index = {}
    for i, sd in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sd, folder / fname, metadata={"format": "pt"})
        index.update({k: fname for k in sd})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": index}))
    return total


def make(out: Path) -> dict:
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=LAYERS,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048,
                      tie_word_embeddings=False)
    return {"params": write_random_checkpoint(cfg, Path(out)) // 2}


def reset_peak() -> None:
    """Start the process's peak resident set (VmHWM) afresh from what it holds now (Linux),
    so that imports' transient peaks are not the baseline."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


class AnonPeak:
    """The peak of the process's anonymous resident memory (RssAnon), sampled every 5 ms: the
    memory a build needs, without the safetensors pages it reads through mmap, which the
    kernel can drop (VmHWM counts those too). With `shared`, shared-memory pages too
    (RssShmem): a Ray worker reads its rows in place from the object store's shared memory."""

    def __init__(self, shared: bool = False):
        import threading

        self.fields = ("RssAnon", "RssShmem") if shared else ("RssAnon",)
        self.base = self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _now(self) -> int:
        return sum(status_bytes(f) for f in self.fields)

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._now())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())
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
    return {"way": way, "device": device, "peak_above_start": grew, "peak_rss_above_start": status_bytes("VmHWM") - base,
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
