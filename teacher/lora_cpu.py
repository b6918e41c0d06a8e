"""LoRA on vLLM's CPU engines without copying each adapter's weights once per token: a vLLM
plugin for the student engines of the write stage.

vLLM's CPU LoRA ops (`vllm.lora.ops.torch_ops`, used by `PunicaWrapperCPU`) gather every
token's own copy of its adapter's A or B matrix (`weights[indices]`: tokens x out x rank)
and multiply token by token (`einsum("bi, boi -> bo")`). A prompt of 90 tokens through the
0.5B student's MLP copies 90 x 4864 x 16 floats per layer, and a decoding step one copy per
sequence per projection: on 2 AVX2 cores the 0.5B decoded 16 fables at 13.1 tokens/s with
one adapter against 32.3 without (2.5x slower), for matrices of rank 16.

A batch holds a few adapters, not one per token. Grouping the tokens by adapter index and
multiplying each group by its adapter's matrix once gives the same products (same weights,
same index semantics, -1 included) with one matrix product per adapter. The functions keep
vLLM's signatures and everything after the product unchanged.

Registered as a `vllm.general_plugins` entry point (pyproject.toml), loaded in every engine
process. KD_LORA_GROUPED=0 turns it off (the benchmark measures both).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def grouped_products(inputs, weights, indices, dtype):
    """`einsum("bi, boi -> bo", inputs, weights[indices])` (with vLLM's squeeze of a 4-D
    stack), computed as one product per distinct index. Pure."""
    import torch

    stack = weights.squeeze(1) if weights.dim() == 4 else weights  # (loras, out, in)
    inputs = inputs.to(dtype=dtype)
    if indices.numel() == 0:
        return inputs.new_zeros((0, stack.shape[1]))
    first = indices[0]
    if bool((indices == first).all()):
        return inputs @ stack[first].to(dtype=dtype).t()
    out = inputs.new_empty((inputs.shape[0], stack.shape[1]))
    for i in indices.unique().tolist():
        rows = (indices == i).nonzero().squeeze(1)
        out[rows] = inputs[rows] @ stack[i].to(dtype=dtype).t()
    return out


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    outputs = grouped_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    outputs = grouped_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    outputs = grouped_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


GROUPED = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}


def register() -> None:
    """The plugin's entry point: swap the CPU LoRA ops' per-token products for grouped ones,
    where vLLM's CPU punica wrapper and the sgmv ops (which call the bgmv ones) look them up.
    Loaded by vLLM in each of its processes, possibly more than once."""
    if os.environ.get("KD_LORA_GROUPED", "1") == "0":
        return
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
        from vllm.platforms import current_platform
    except ImportError:  # another vLLM layout: keep its own ops
        return
    if not current_platform.is_cpu() or hasattr(lora_ops.bgmv_shrink, "__wrapped__"):  # already swapped
        return
    if not all(hasattr(lora_ops, name) for name in GROUPED):
        return
    for name, fn in GROUPED.items():
        fn.__wrapped__ = getattr(lora_ops, name)
        setattr(lora_ops, name, fn)
        if hasattr(punica_cpu, name):
            setattr(punica_cpu, name, fn)
    log.info("LoRA on CPU: one product per adapter (teacher/lora_cpu.py)")
