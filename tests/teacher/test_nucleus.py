"""The sort-free nucleus keeps exactly the tokens vLLM's own top-p keeps, and is what vLLM runs."""

import importlib.metadata

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from teacher import nucleus

vllm_ops = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")
# vLLM's function as shipped, whether or not the plugin has patched the module in this process.
VLLM_TOP_P = getattr(vllm_ops.apply_top_k_top_p_pytorch, "__wrapped__", vllm_ops.apply_top_k_top_p_pytorch)


def near_boundary(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Tokens whose mass ranked strictly above them is within float rounding of p: the only
    tokens the two ways of summing may disagree on."""
    probs = logits.double().softmax(-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    above = sorted_probs.cumsum(-1) - sorted_probs
    close = (above - p.double().unsqueeze(1)).abs() < 1e-5
    return torch.zeros_like(close).scatter_(1, order, close)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 6), vocab=st.sampled_from([7, 300, 5000, 151936]),
       scale=st.sampled_from([0.1, 1.0, 3.0, 8.0]), p=st.floats(0.05, 1.0), prefilter=st.sampled_from([1, 4, 64, 1024]))
def test_kept_tokens_match_vllms_sorting_top_p(seed, rows, vocab, scale, p, prefilter):
    """Peaked rows (covered by the prefilter) and flat ones (vLLM's own path) alike, small
    vocabularies where the prefilter is the whole row, and p = 1."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * scale
    ps = torch.full((rows,), p)
    want = VLLM_TOP_P(logits.clone(), None, ps, True)
    got = nucleus.prefiltered(VLLM_TOP_P, prefilter)(logits.clone(), None, ps, True)
    differ = torch.isinf(want) != torch.isinf(got)
    assert not (differ & ~near_boundary(logits, ps)).any()
    kept = ~torch.isinf(got)
    assert torch.equal(got[kept], logits[kept])  # kept logits pass through unchanged
    assert kept.any(dim=-1).all()


def test_a_sampling_top_k_keeps_vllms_path():
    logits = torch.randn(3, 50)
    k, p = torch.tensor([5, 5, 5]), torch.tensor([0.9, 0.9, 0.9])
    got = nucleus.prefiltered(VLLM_TOP_P)(logits.clone(), k, p, True)
    assert torch.equal(got, VLLM_TOP_P(logits.clone(), k, p, True))


def test_vllm_loads_it_as_a_general_plugin():
    plugins = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert [e.value for e in plugins if e.name == "fable_kd_nucleus"] == ["teacher.nucleus:register"]
