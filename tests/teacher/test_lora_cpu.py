"""The grouped CPU LoRA ops compute what vLLM's per-token ones compute, and vLLM loads them."""

import importlib.metadata

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from teacher import lora_cpu


def _vllm_ops():
    from vllm.lora.ops.torch_ops import lora_ops

    # The originals, whether or not the plugin has already swapped them in this process.
    return {name: getattr(fn, "__wrapped__", None) or getattr(lora_ops, name) for name, fn in
            (("bgmv_shrink", lora_ops.bgmv_shrink), ("bgmv_expand", lora_ops.bgmv_expand),
             ("bgmv_expand_slice", lora_ops.bgmv_expand_slice))}


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(0, 9), loras=st.integers(1, 4), four_d=st.booleans(), data=st.data())
def test_grouped_products_equal_the_per_token_einsum(tokens, loras, four_d, data):
    indices = torch.tensor(data.draw(st.lists(st.integers(-1, loras - 1), min_size=tokens, max_size=tokens)),
                           dtype=torch.long)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    weights = torch.randn(loras, 6, 5, generator=g)
    if four_d:
        weights = weights.unsqueeze(1)
    inputs = torch.randn(tokens, 5, generator=g)
    selected = weights[indices].squeeze(1) if four_d else weights[indices]
    want = torch.einsum("bi, boi -> bo", inputs, selected)
    got = lora_cpu.grouped_products(inputs, weights, indices, torch.float32)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


def test_each_op_writes_what_vllms_writes():
    # Inputs in vLLM's shapes: shrink (tokens, hidden) -> (tokens, rank) with a 4-D stack of
    # A matrices; expand (tokens, rank) -> (tokens, out), added to what is there.
    original, g = _vllm_ops(), torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 2, 2, -1, 0, 1])
    x, a, b = torch.randn(6, 8, generator=g), torch.randn(3, 1, 4, 8, generator=g), torch.randn(3, 1, 10, 4, generator=g)
    for name, args in (("bgmv_shrink", (x, a, torch.zeros(6, 4), idx, 0.5)),
                       ("bgmv_expand", (x[:, :4], b, torch.ones(6, 10), idx, True)),
                       ("bgmv_expand", (x[:1, :4], b, torch.ones(3, 10), idx[:1], True)),
                       ("bgmv_expand_slice", (x[:, :4], b, torch.ones(6, 16), idx, 3, 10, True)),
                       ("bgmv_expand_slice", (x[:, :4], b, torch.ones(6, 16), idx, 0, 10, False))):
        want, got = args[2].clone(), args[2].clone()
        original[name](*args[:2], want, *args[3:])
        lora_cpu.GROUPED[name](*args[:2], got, *args[3:])
        assert torch.allclose(got, want, atol=1e-5), name


def test_vllm_loads_it_as_a_general_plugin_and_it_replaces_the_cpu_ops():
    plugins = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert [e.value for e in plugins if e.name == "fable_kd_lora_cpu"] == ["teacher.lora_cpu:register"]
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    lora_cpu.register()
    lora_cpu.register()  # vLLM may load a plugin more than once
    assert lora_ops.bgmv_expand is lora_cpu.bgmv_expand and punica_cpu.bgmv_shrink is lora_cpu.bgmv_shrink
    assert lora_ops.bgmv_expand.__wrapped__.__module__ == "vllm.lora.ops.torch_ops.lora_ops"
