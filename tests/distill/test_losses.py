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
