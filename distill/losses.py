"""Distillation losses: pure functions of logits, no I/O.

Every loss returns the mean over unmasked tokens (0, not NaN, when all are masked)
and upcasts to at least float32 before any softmax. Shapes: logits [B, T, V], mask [B, T]
(1 = a token that counts), sparse teacher [B, T, K].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.train_config import DIVERGENCES  # declared beside the setting, which is read without torch


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def _logprobs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(_up(logits) / temperature, dim=-1)


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


def _up(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64: the tests check identities to 1e-6 in it)."""
    return x if x.dtype == torch.float64 else x.float()


def bucket_divergence(s: torch.Tensor, t: torch.Tensor, live: torch.Tensor, divergence: str = "forward_kl",
                      beta: float = 0.5) -> torch.Tensor:
    """A divergence between two distributions over the same B buckets, per row ([N, B] -> [N]).

    s, t: the student's and teacher's log-probabilities of each bucket; live: the buckets that
    exist in the row (a bucket that is not live holds no mass on either side and adds nothing).
    "forward_kl" is KL(teacher || student), "reverse_kl" KL(student || teacher), "jsd" the
    generalized JSD of GKD with TRL's convention (mixture m = beta*t + (1-beta)*s; beta = 0 is
    forward KL, 1 reverse KL). Dead buckets are replaced by a finite value before any
    arithmetic, so neither the loss nor its gradient sees inf - inf."""
    zero = torch.zeros((), dtype=s.dtype)
    s, t = torch.where(live, s, zero), torch.where(live, t, zero)
    p, q = torch.where(live, t.exp(), zero), torch.where(live, s.exp(), zero)
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        per = p * (t - s)
    elif divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        per = q * (s - t)
    elif divergence == "jsd":
        b = torch.tensor(beta, dtype=s.dtype)
        m = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
        per = beta * p * (t - m) + (1 - beta) * q * (s - m)
    else:
        raise ValueError(f"unknown divergence {divergence!r}: one of {', '.join(DIVERGENCES)}")
    return torch.where(live, per, zero).sum(-1)


def _rest(logprobs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """log(1 - the live buckets' mass): the student's mass outside them, from the log-sum so it
    stays accurate near 1 (kept a hair above 0 where the live buckets are the whole vocabulary)."""
    tiny = 1e-12 if logprobs.dtype == torch.float64 else 1e-6
    # A dead entry is a finite -1e4 (exp = 0), not -inf: a row with none live keeps finite gradients.
    head = torch.logsumexp(torch.where(live, logprobs, torch.tensor(-1e4, dtype=logprobs.dtype)), dim=-1)
    return torch.log(-torch.expm1(head.clamp(max=-tiny)))


def _teacher_rest(topk_logprobs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """log of the teacher's mass outside its live top-k entries (its tail, and any entry the
    student has no token for); stored probabilities may sum a hair past 1: floored, not negative."""
    p = torch.where(live, topk_logprobs.exp(), torch.zeros((), dtype=topk_logprobs.dtype)).sum(-1)
    floor = 1e-30 if topk_logprobs.dtype == torch.float64 else 1e-12
    return torch.log((1.0 - p).clamp(min=floor))


def topk_divergence_per_token(s_topk: torch.Tensor, topk_logprobs: torch.Tensor, divergence: str = "forward_kl",
                              beta: float = 0.5, live: torch.Tensor | None = None) -> torch.Tensor:
    """The divergence when only the teacher's top-k is known ([N, K] -> [N]).

    The vocabulary is coarsened to K+1 buckets: the teacher's top-k tokens and one tail bucket
    holding everything else (teacher tail = 1 - sum of its top-k probabilities, student tail =
    1 - the student's mass on those k tokens). The divergence between the two coarsened
    distributions is exact, is a lower bound on the dense one for both KLs and JSD (the data
    processing inequality), and equals it when K = V. `live`: the top-k entries that take part
    (default all); the others join the tail on both sides (cross-tokenizer entries the student
    has no token for, distill/align.py)."""
    s_topk, t = _up(s_topk), _up(topk_logprobs)
    if live is None:
        live = torch.ones_like(t, dtype=torch.bool)
    s_b = torch.cat([s_topk, _rest(s_topk, live).unsqueeze(-1)], dim=-1)
    t_b = torch.cat([t, _teacher_rest(t, live).unsqueeze(-1)], dim=-1)
    live_b = torch.cat([live, torch.ones_like(live[..., :1])], dim=-1)
    return bucket_divergence(s_b, t_b, live_b, divergence, beta)


def topk_forward_kl(student_logits, topk_ids, topk_logprobs, mask) -> torch.Tensor:
    """KL(teacher || student) when only the teacher's top-k is known (topk_divergence_per_token)."""
    s = F.log_softmax(_up(student_logits), dim=-1).gather(-1, topk_ids.long())
    return _masked_mean(topk_divergence_per_token(s, topk_logprobs), mask)


def topk_divergence(student_logits, topk_ids, topk_logprobs, mask, divergence: str = "forward_kl",
                    beta: float = 0.5) -> torch.Tensor:
    """Any of DIVERGENCES between the student and the teacher's stored top-k with its tail."""
    s = F.log_softmax(_up(student_logits), dim=-1).gather(-1, topk_ids.long())
    return _masked_mean(topk_divergence_per_token(s, topk_logprobs, divergence, beta), mask)


def sorted_distance(s_all: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                    matched: torch.Tensor) -> torch.Tensor:
    """ULD's vocabulary-free term on what exact matching leaves over ([N, V], [N, K] -> [N]).

    Universal Logit Distillation (Boizard et al., arXiv 2402.12030) compares two distributions
    over different vocabularies by sorting each one's probabilities and taking the L1 distance
    rank by rank (the closed form of the Wasserstein distance under a uniform cost). GOLD (TRL's
    GOLDTrainer) uses it only for the tokens exact matching cannot pair, and a divergence for
    the rest; so does this. Here the teacher is known only by its top-k: its unmatched entries
    (rank order) are set against as many of the student's most probable tokens among those no
    matched entry names. With every entry matched, the term is 0."""
    s_all = _up(s_all)
    zero = torch.zeros((), dtype=s_all.dtype)
    named = torch.zeros_like(s_all).scatter_add(-1, topk_ids.long().clamp(min=0), matched.to(s_all.dtype)) > 0
    q = torch.where(named, zero, s_all.exp())
    K = topk_logprobs.shape[-1]
    p_un = torch.where(matched, zero, _up(topk_logprobs).exp()).sort(-1, descending=True).values
    q_top = q.topk(K, dim=-1).values
    keep = torch.arange(K).expand_as(p_un) < (~matched).sum(-1, keepdim=True)
    return torch.where(keep, (p_un - q_top).abs(), zero).sum(-1)


def token_cross_entropy(student_logits, labels, mask) -> torch.Tensor:
    """Cross-entropy of the student on the tokens the teacher actually wrote."""
    s = F.log_softmax(_up(student_logits), dim=-1)
    nll = -s.gather(-1, labels.long().clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return _masked_mean(nll, mask)


def kd_objective(student_logits, labels, topk_ids, topk_logprobs, mask, kd_weight: float,
                 divergence: str = "forward_kl", beta: float = 0.5, aligned=None, matched=None,
                 uld_weight: float = 1.0, weight=None) -> dict[str, torch.Tensor]:
    """The training objective over N positions: kd_weight * top-k divergence + (1 - kd_weight) * CE
    where the position carries a teacher distribution, CE alone where it does not, with the parts.

    mask [N]: positions that count (the teacher's generated tokens). aligned [N]: those that
    carry the teacher's top-k (default: all; across tokenizers, positions whose token spans the
    same characters as a teacher token, distill/align.py). matched [N, K]: top-k entries the
    student has a token for (default: all; the unmatched join the tail bucket and are compared
    by ULD's sorted distance, weighted uld_weight). weight [N]: per-position loss weight (a
    teacher's weight in a multi-teacher student). The loss is a sum over positions divided by
    their count, so the Trainer's grad-accumulation normalisation holds.

    One log-softmax and one gather (top-k ids and the label together) serve both parts: the
    [tokens, vocab] tensors dominate a step's memory, so a KD step costs about what a plain
    cross-entropy step does. kd_weight=0 is plain cross-entropy (SFT) and skips the divergence."""
    s_all = F.log_softmax(_up(student_logits), dim=-1)
    label = labels.long().clamp(min=0).unsqueeze(-1)
    mask = _up(mask)
    n = mask.sum().clamp(min=1.0)
    w = mask if weight is None else mask * _up(weight)
    if kd_weight == 0:
        ce_tok = -s_all.gather(-1, label).squeeze(-1)
        ce = (ce_tok * w).sum() / n
        return {"loss": ce, "ce": ce, "ce_tok": ce_tok.detach()}
    ids = topk_ids.long() if matched is None else torch.where(matched, topk_ids.long(), 0)
    picked = s_all.gather(-1, torch.cat([ids, label], dim=-1))
    ce_tok = -picked[..., -1]
    kd_tok = topk_divergence_per_token(picked[..., :-1], topk_logprobs, divergence, beta, live=matched)
    out = {}
    if matched is not None and uld_weight:
        uld_tok = sorted_distance(s_all, ids, topk_logprobs, matched)
        kd_tok = kd_tok + uld_weight * uld_tok
    a = mask if aligned is None else mask * _up(aligned)
    per = a * (kd_weight * kd_tok + (1.0 - kd_weight) * ce_tok) + (mask - a) * ce_tok
    if weight is not None:
        per = per * _up(weight)
    out.update(loss=per.sum() / n, kd=_masked_mean(kd_tok, a), ce=(ce_tok * w).sum() / n,
               kd_tok=kd_tok.detach(), ce_tok=ce_tok.detach())
    if matched is not None and uld_weight:
        out["uld"] = _masked_mean(uld_tok, a)
    return out
