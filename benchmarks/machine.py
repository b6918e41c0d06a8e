"""The machine a figure was measured on, and what its memory bandwidth and arithmetic allow:
the bounds BENCHMARKS.md compares the measured decoding speed with."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except OSError:
        mem = 0
    from teacher.hardware import cpu_has_native_bf16

    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16 (AVX2)"
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {bf16}, {platform.system()} {platform.machine()}, no GPU"


def copy_bandwidth_gbs(mib: int = 512, repeats: int = 5) -> float:
    """Best-of-N memory copy bandwidth (bytes read + written per second), in GB/s."""
    import numpy as np

    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)

    def copy():
        dst[...] = src
    return 2 * src.nbytes / _best_time(copy, repeats) / 1e9


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-N float32 matrix-product throughput of this machine through torch, in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    return 2 * n**3 / _best_time(lambda: a @ b, repeats) / 1e9


def _best_time(fn, repeats: int) -> float:
    """The shortest of `repeats` timed calls: the least disturbed by a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def decoding_bound(teacher_id: str, bandwidth_gbs: float, gflops: float | None = None) -> dict:
    """Each decoding step reads every weight once: steps/s <= bandwidth / weight bytes. Each
    token costs 2 FLOPs per weight it multiplies (all but the input embedding, a lookup):
    tokens/s <= matmul throughput / FLOPs per token, however many rows are in flight."""
    from eval.footprint import tensor_numels
    from teacher.hardware import engine_dtype
    from teacher.registry import get_teacher

    numels = tensor_numels(Path(get_teacher(teacher_id).model_path()))
    params = sum(numels.values())
    embedding = sum(n for k, n in numels.items() if k.endswith("embed_tokens.weight"))
    weight_bytes = params * (2 if engine_dtype() == "bfloat16" else 4)
    flops = 2 * (params - embedding)
    return {"params": params, "dtype": engine_dtype(), "weight_bytes": weight_bytes,
            "steps_per_s_bound": bandwidth_gbs * 1e9 / weight_bytes, "flops_per_token": flops,
            **({"gflops": gflops, "tokens_per_s_compute_bound": gflops * 1e9 / flops} if gflops else {})}
