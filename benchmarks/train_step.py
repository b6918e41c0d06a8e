"""One training step of the default student, measured: KD (top-k or dense teacher) against plain CE.

    python -m benchmarks.train_step --variant kd-topk   # or sft, kd-dense; prints one JSON line

Runs in its own process per variant (what `make bench` does), so peak memory is that
variant's alone. The batch is synthetic with real shapes: the pruned SmolLM2 student with
LoRA r=16, 4 rows of 256 tokens of which 216 are teacher tokens, top-20 or the full
49,152-way teacher distribution. The KD and CE steps go through KDTrainer.training_step,
the code `make distill` trains with.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import threading
import time

import torch

VARIANTS = ("sft", "kd-topk", "kd-dense")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the process's resident memory every few milliseconds while active."""

    def __enter__(self):
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def batch(vocab: int, rows: int, seq: int, prompt: int, k: int, dense: bool, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, seq), generator=g)
    mask = torch.zeros(rows, seq)
    mask[:, prompt - 1 : seq - 1] = 1
    labels = torch.roll(ids, -1, dims=1)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "kd_mask": mask}
    teacher = torch.randn(rows, seq, vocab, generator=g) * 2 if dense else None
    if dense:
        out["teacher_logits"] = teacher
    else:
        lp = torch.randn(rows, seq, vocab // 64, generator=g).log_softmax(-1).topk(k, dim=-1)
        out["topk_ids"] = torch.randint(0, vocab, (rows, seq, k), generator=g)
        out["topk_logprobs"] = lp.values
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=40)
    ap.add_argument("--top-k", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)

    from transformers import TrainingArguments

    from distill.losses import forward_kl
    from distill.train import KDTrainer
    from student.build import apply_lora, build_student
    from teacher.registry import get_teacher

    model, tok = build_student("pruned", get_teacher("smollm2-135m").model_path())
    model = apply_lora(model, 16, 32, 0.0)
    vocab = model.config.vocab_size
    kd_weight = 0.0 if args.variant == "sft" else 0.9

    class DenseKD(KDTrainer):
        """The same step with the full teacher distribution instead of its top-k."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            sel = inputs["kd_mask"].bool()
            s = out.logits[sel]
            kd = forward_kl(s, inputs["teacher_logits"][sel], inputs["kd_mask"][sel])
            ce = torch.nn.functional.cross_entropy(s.float(), inputs["labels"][sel])
            return kd_weight * kd + (1 - kd_weight) * ce

    cls = DenseKD if args.variant == "kd-dense" else KDTrainer
    targs = TrainingArguments(output_dir="/tmp/kd-bench-unused", use_cpu=not torch.cuda.is_available(), report_to=[],
                              learning_rate=1e-4, max_steps=args.steps + 1)
    trainer = cls(model=model, args=targs, kd_weight=kd_weight)
    trainer.create_optimizer_and_scheduler(num_training_steps=args.steps + 1)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()'s loop, which this skips
    b = batch(vocab, args.rows, args.seq, args.prompt, args.top_k, args.variant == "kd-dense")

    def step():
        trainer.training_step(model, b)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    step()  # warm-up: allocator pools and optimizer state exist from here on
    base = rss_bytes()
    times = []
    with PeakRSS() as mem:
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"variant": args.variant, "step_s": statistics.median(times), "steps": args.steps,
                      "step_times": times, "rss_before_steps": base, "peak_rss": max(mem.peak, base),
                      "peak_rss_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "step_extra_bytes": max(mem.peak, base) - base, "teacher_tokens": int(b["kd_mask"].sum()),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
