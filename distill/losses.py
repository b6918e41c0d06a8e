"""Distillation losses: pure functions of logits, no I/O.

Every loss returns the mean over unmasked tokens (0, not NaN, when all are masked)
and upcasts to float32 before any softmax. Shapes: logits [B, T, V], mask [B, T]
(1 = a token that counts), sparse teacher [B, T, K].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def _logprobs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def forward_kl(student_logits, teacher_logits, mask, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student): mass-covering, the classic KD objective."""
    s, t = _logprobs(student_logits, temperature), _logprobs(teacher_logits, temperature)
    return _masked_mean((t.exp() * (t - s)).sum(-1), mask)


def reverse_kl(student_logits, teacher_logits, mask, temperature: float = 1.0) -> torch.Tensor:
    """KL(student || teacher): mode-seeking."""
    s, t = _logprobs(student_logits, temperature), _logprobs(teacher_logits, temperature)
    return _masked_mean((s.exp() * (s - t)).sum(-1), mask)


def generalized_jsd(student_logits, teacher_logits, mask, beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Generalized JSD of GKD (Agarwal et al.), with TRL's convention: the mixture is
    m = beta*teacher + (1-beta)*student, loss = beta*KL(t||m) + (1-beta)*KL(s||m);
    beta=0 is forward KL(teacher||student), beta=1 reverse KL(student||teacher)."""
    s, t = _logprobs(student_logits, temperature), _logprobs(teacher_logits, temperature)
    if beta == 0:
        per_tok = (t.exp() * (t - s)).sum(-1)
    elif beta == 1:
        per_tok = (s.exp() * (s - t)).sum(-1)
    else:
        b = torch.tensor(beta, dtype=s.dtype)
        m = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
        per_tok = beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)
    return _masked_mean(per_tok, mask)


def topk_forward_kl(student_logits, topk_ids, topk_logprobs, mask) -> torch.Tensor:
    """KL(teacher || student) when only the teacher's top-k is known.

    The vocabulary is coarsened to K+1 buckets: the teacher's top-k tokens and one tail
    bucket holding everything else (teacher tail = 1 - sum of its top-k probabilities).
    This is the exact KL between the two coarsened distributions, a lower bound on the
    dense KL that equals it when K = V.
    """
    s = F.log_softmax(student_logits.float(), dim=-1).gather(-1, topk_ids.long())
    return _masked_mean(_topk_kl_per_token(s, topk_logprobs), mask)


def _topk_kl_per_token(s: torch.Tensor, topk_logprobs: torch.Tensor) -> torch.Tensor:
    """The coarsened KL from the student's logprobs `s` at the teacher's top-k ids."""
    t = topk_logprobs.float()
    p = t.exp()
    head = (p * (t - s)).sum(-1)
    p_tail = (1.0 - p.sum(-1)).clamp(min=0.0)
    # log(1 - sum q_topk) computed from the log-sum so it stays accurate near 1.
    q_head = torch.logsumexp(s, dim=-1).clamp(max=-1e-6)
    log_q_tail = torch.log(-torch.expm1(q_head))
    return head + torch.xlogy(p_tail, p_tail) - p_tail * log_q_tail


def token_cross_entropy(student_logits, labels, mask) -> torch.Tensor:
    """Cross-entropy of the student on the tokens the teacher actually wrote."""
    s = F.log_softmax(student_logits.float(), dim=-1)
    nll = -s.gather(-1, labels.long().clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return _masked_mean(nll, mask)


def kd_objective(student_logits, labels, topk_ids, topk_logprobs, mask, kd_weight: float) -> dict[str, torch.Tensor]:
    """The training objective: kd_weight * top-k KL + (1 - kd_weight) * CE, with both parts.

    One log-softmax and one gather (top-k ids and the label together) serve both parts:
    the [tokens, vocab] tensors dominate a step's memory, so a KD step costs about what a
    plain cross-entropy step does. kd_weight=0 is plain cross-entropy (SFT) and skips the KL."""
    s_all = F.log_softmax(student_logits.float(), dim=-1)
    label = labels.long().clamp(min=0).unsqueeze(-1)
    if kd_weight == 0:
        ce = _masked_mean(-s_all.gather(-1, label).squeeze(-1), mask)
        return {"loss": ce, "ce": ce}
    picked = s_all.gather(-1, torch.cat([topk_ids.long(), label], dim=-1))
    kd = _masked_mean(_topk_kl_per_token(picked[..., :-1], topk_logprobs), mask)
    ce = _masked_mean(-picked[..., -1], mask)
    return {"loss": kd_weight * kd + (1.0 - kd_weight) * ce, "kd": kd, "ce": ce}
