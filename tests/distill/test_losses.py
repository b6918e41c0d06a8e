import math

import pytest
import torch
import torch.nn.functional as F

from distill import losses as L


def rand(B=2, T=5, V=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g) * 2


def topk_of(teacher_logits, k):
    lp = F.log_softmax(teacher_logits, -1)
    vals, ids = lp.topk(k, dim=-1)
    return ids, vals


def test_kl_of_a_distribution_with_itself_is_zero():
    x, m = rand(), torch.ones(2, 5)
    for fn in (L.forward_kl, L.reverse_kl):
        assert fn(x, x, m).item() == pytest.approx(0.0, abs=1e-6)
    assert L.generalized_jsd(x, x, m, beta=0.5).item() == pytest.approx(0.0, abs=1e-6)
    ids, vals = topk_of(x, 4)
    assert L.topk_forward_kl(x, ids, vals, m).item() == pytest.approx(0.0, abs=1e-5)


def test_forward_kl_hand_computed():
    # teacher p = (0.5, 0.5), student q = (0.25, 0.75): KL = 0.5 ln2 + 0.5 ln(2/3)
    t = torch.log(torch.tensor([[[0.5, 0.5]]]))
    s = torch.log(torch.tensor([[[0.25, 0.75]]]))
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert L.forward_kl(s, t, torch.ones(1, 1)).item() == pytest.approx(expected, rel=1e-6)
    assert L.reverse_kl(s, t, torch.ones(1, 1)).item() == pytest.approx(
        0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)


def test_topk_hand_computed_tail_bucket():
    # V=3, teacher (0.6, 0.3, 0.1), k=1: buckets teacher (0.6 | 0.4), student (0.2, 0.5, 0.3) -> (0.2 | 0.8)
    t = torch.log(torch.tensor([[[0.6, 0.3, 0.1]]]))
    s = torch.log(torch.tensor([[[0.2, 0.5, 0.3]]]))
    ids, vals = topk_of(t, 1)
    expected = 0.6 * math.log(0.6 / 0.2) + 0.4 * math.log(0.4 / 0.8)
    assert L.topk_forward_kl(s, ids, vals, torch.ones(1, 1)).item() == pytest.approx(expected, rel=1e-5)


def test_topk_with_k_equal_v_is_dense_and_smaller_k_is_a_lower_bound():
    s, t, m = rand(seed=1), rand(seed=2), torch.ones(2, 5)
    dense = L.forward_kl(s, t, m).item()
    ids, vals = topk_of(t, 11)
    assert L.topk_forward_kl(s, ids, vals, m).item() == pytest.approx(dense, rel=1e-5)
    for k in (1, 3, 7):
        ids, vals = topk_of(t, k)
        assert L.topk_forward_kl(s, ids, vals, m).item() <= dense + 1e-6


def test_all_masked_is_zero_not_nan():
    s, t, m = rand(), rand(seed=3), torch.zeros(2, 5)
    ids, vals = topk_of(t, 3)
    for value in (L.forward_kl(s, t, m), L.reverse_kl(s, t, m), L.generalized_jsd(s, t, m),
                  L.topk_forward_kl(s, ids, vals, m), L.token_cross_entropy(s, ids[..., 0], m)):
        assert value.item() == 0.0


def test_mask_excludes_tokens():
    s, t = rand(seed=4), rand(seed=5)
    m = torch.ones(2, 5)
    m[:, 3:] = 0
    assert L.forward_kl(s, t, m).item() == pytest.approx(L.forward_kl(s[:, :3], t[:, :3], torch.ones(2, 3)).item(), rel=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_generalized_jsd_equals_trl(beta):
    from trl.experimental.gkd import GKDTrainer

    s, t = rand(seed=6), rand(seed=7)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, :2] = -100
    mask = (labels != -100).float()
    ref = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=1.0)
    ours = L.generalized_jsd(s, t, mask, beta=beta)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_objective_mixes_parts_with_the_weight():
    s, t, m = rand(seed=8), rand(seed=9), torch.ones(2, 5)
    ids, vals = topk_of(t, 4)
    labels = ids[..., 0]
    out = L.kd_objective(s, labels, ids, vals, m, kd_weight=0.7)
    assert out["loss"].item() == pytest.approx(0.7 * out["kd"].item() + 0.3 * out["ce"].item(), rel=1e-6)
    # the fused gather gives exactly what the separate losses give
    assert out["kd"].item() == pytest.approx(L.topk_forward_kl(s, ids, vals, m).item(), rel=1e-6)
    assert out["ce"].item() == pytest.approx(L.token_cross_entropy(s, labels, m).item(), rel=1e-6)
    sft = L.kd_objective(s, labels, ids, vals, m, kd_weight=0.0)
    assert "kd" not in sft and sft["loss"].item() == pytest.approx(out["ce"].item(), rel=1e-6)


def test_gradients_flow_and_are_finite():
    s = rand(seed=10).requires_grad_()
    ids, vals = topk_of(rand(seed=11), 3)
    L.topk_forward_kl(s, ids, vals, torch.ones(2, 5)).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# --- every divergence over the stored top-k with its tail; cross-tokenizer parts ---------------

from hypothesis import given, settings, strategies as st  # noqa: E402

DENSE = {"forward_kl": lambda s, t, m, b: L.forward_kl(s, t, m), "reverse_kl": lambda s, t, m, b: L.reverse_kl(s, t, m),
         "jsd": lambda s, t, m, b: L.generalized_jsd(s, t, m, beta=b)}


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.1), ("jsd", 0.5),
                                             ("jsd", 0.9), ("jsd", 0.0), ("jsd", 1.0)])
def test_topk_divergence_with_k_equal_v_is_the_dense_loss_and_trls(divergence, beta):
    from trl.experimental.gkd import GKDTrainer

    s, t = rand(seed=20).double(), rand(seed=21).double()
    m = torch.ones(2, 5, dtype=torch.float64)
    ids, vals = topk_of(t, 11)
    ours = L.topk_divergence(s, ids, vals, m, divergence, beta).item()
    assert ours == pytest.approx(DENSE[divergence](s, t, m, beta).item(), abs=1e-9)
    trl_beta = {"forward_kl": 0.0, "reverse_kl": 1.0}.get(divergence, beta)
    ref = GKDTrainer.generalized_jsd_loss(s.float(), t.float(), labels=torch.zeros(2, 5, dtype=torch.long),
                                          beta=trl_beta, temperature=1.0)
    assert ours == pytest.approx(ref.item(), rel=1e-4, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 10), divergence=st.sampled_from(["forward_kl", "reverse_kl", "jsd"]),
       beta=st.floats(0.05, 0.95))
def test_topk_divergence_is_a_lower_bound_on_the_dense_one(seed, k, divergence, beta):
    # The coarsening into top-k + tail is a deterministic map of both distributions: by the data
    # processing inequality no f-divergence grows under it.
    s, t = rand(seed=seed).double(), rand(seed=seed + 1).double()
    m = torch.ones(2, 5, dtype=torch.float64)
    ids, vals = topk_of(t, k)
    assert L.topk_divergence(s, ids, vals, m, divergence, beta).item() <= DENSE[divergence](s, t, m, beta).item() + 1e-9


def test_objective_across_tokenizers_with_every_entry_matched_is_the_same_tokenizer_objective():
    s, t, m = rand(seed=22), rand(seed=23), torch.ones(2, 5)
    ids, vals = topk_of(t, 4)
    labels = ids[..., 0]
    same = L.kd_objective(s, labels, ids, vals, m, kd_weight=0.9)
    cross = L.kd_objective(s, labels, ids, vals, m, kd_weight=0.9, aligned=torch.ones(2, 5),
                           matched=torch.ones(2, 5, 4, dtype=torch.bool), uld_weight=1.0)
    assert cross["uld"].item() == 0.0
    for k in ("loss", "kd", "ce"):
        assert cross[k].item() == pytest.approx(same[k].item(), abs=1e-6)


def test_unmatched_entries_join_the_tail_and_are_compared_sorted():
    # teacher top-2 (0.5, 0.3), tail 0.2; student q = (0.1, 0.2, 0.3, 0.4) over 4 ids.
    t = torch.log(torch.tensor([[0.5, 0.3]], dtype=torch.float64))
    s = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64))
    ids = torch.tensor([[2, -1]])  # the teacher's first entry is the student's id 2; its second has no match
    matched = ids >= 0
    out = L.kd_objective(s, torch.tensor([2]), ids, t, torch.ones(1, dtype=torch.float64), kd_weight=1.0,
                         matched=matched, uld_weight=1.0)
    # buckets: the matched token (0.5 vs 0.3) and the rest (0.5 vs 0.7)
    kl = 0.5 * math.log(0.5 / 0.3) + 0.5 * math.log(0.5 / 0.7)
    # the unmatched entry 0.3 against the student's most probable token no matched entry names: 0.4
    assert out["uld"].item() == pytest.approx(0.1, abs=1e-12)
    assert out["kd"].item() == pytest.approx(kl + 0.1, abs=1e-12)


def test_unaligned_positions_are_left_to_cross_entropy_and_weights_scale_positions():
    s, t, m = rand(seed=24), rand(seed=25), torch.ones(2, 5)
    ids, vals = topk_of(t, 3)
    labels = ids[..., 0]
    aligned = torch.ones(2, 5)
    aligned[0, 1:3] = 0
    out = L.kd_objective(s, labels, ids, vals, m, kd_weight=0.6, aligned=aligned)
    kd_tok, ce_tok = out["kd_tok"], out["ce_tok"]
    want = (aligned * (0.6 * kd_tok + 0.4 * ce_tok) + (1 - aligned) * ce_tok).sum() / 10
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert out["kd"].item() == pytest.approx((kd_tok * aligned).sum().item() / 8, rel=1e-6)
    w = torch.tensor([[2.0] * 5, [1.0] * 5])
    weighted = L.kd_objective(s, labels, ids, vals, m, kd_weight=0.6, aligned=aligned, weight=w)
    per = aligned * (0.6 * kd_tok + 0.4 * ce_tok) + (1 - aligned) * ce_tok
    assert weighted["loss"].item() == pytest.approx((per * w).sum().item() / 10, rel=1e-6)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_gradients_stay_finite_with_unmatched_entries_and_rows_with_none_matched(divergence):
    s = rand(seed=26).requires_grad_()
    ids, vals = topk_of(rand(seed=27), 3)
    matched = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) > 0.5
    matched[0, 0] = False  # nothing the student can name at this position
    out = L.kd_objective(s, ids[..., 0], torch.where(matched, ids, -1), vals, torch.ones(2, 5), kd_weight=0.9,
                         divergence=divergence, matched=matched)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
