"""What the local hardware computes fast: the one place that picks bf16 or fp32.

bf16 halves memory traffic where the hardware multiplies it natively (CUDA GPUs from
Ampere on; CPUs with AVX512-BF16 or AMX). Elsewhere it is emulated: on an AVX2-only
2-core EPYC, a bf16 matmul ran at 0.28 GFLOP/s against 95 in fp32, and a vLLM engine
in bf16 wrote 0.3 tokens/s. So engines and training use bf16 only where it is native.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# The GPUs a run config may name ([cluster] gpu), from NVIDIA's datasheets: dense bf16 tensor
# TFLOPS and memory bandwidth in GB/s, which the dry run scales throughputs by (distill/plan.py).
# The A10G is taken as the A10 of its datasheet.
GPU_SPECS = {
    "A10G": {"bf16_tflops": 125.0, "gb_s": 600.0},
    "A100-80G": {"bf16_tflops": 312.0, "gb_s": 2039.0},
    "H100": {"bf16_tflops": 989.0, "gb_s": 3350.0},
    "H200": {"bf16_tflops": 989.0, "gb_s": 4800.0},
}


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume emulated
        return False
    return any(f in flags.split() for f in NATIVE_BF16_CPU_FLAGS)


def bf16_is_fast() -> bool:
    """KD_BF16=1/0 overrides the detection (e.g. a CPU-only driver for GPU workers)."""
    forced = os.environ.get("KD_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def engine_eager() -> bool:
    """Skip vLLM's torch.compile warm-up on CPU: on 2 AVX2 cores it cost 159 s of a 218 s engine
    start for 22% more decoding speed (48 vs 39.5 tokens/s, Qwen2.5-0.5B fp32), which pays
    back only past ~35k generated tokens; the compile cache did not load on restart. GPUs
    keep compilation and CUDA graphs. KD_ENGINE_EAGER=1/0 overrides."""
    forced = os.environ.get("KD_ENGINE_EAGER")
    if forced in ("0", "1"):
        return forced == "1"
    import torch

    return not torch.cuda.is_available()


def engine_dtype() -> str:
    """vLLM's dtype for models that do not pin one (the embedded teachers)."""
    return "bfloat16" if bf16_is_fast() else "float32"


def on_accelerator(model):
    """A model for evaluation and sampling on the fastest device here: the GPU in bf16 where
    there is one (training ran there too), else unchanged (CPU, the dtype it was loaded in).
    Callers move their inputs to `model.device`."""
    import torch

    if not torch.cuda.is_available():
        return model
    return model.to(device="cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
