"""Held-out metrics of a student against its teacher's samples: top-k KL and CE per token."""

from __future__ import annotations

import torch

from distill.data import Collator, encode_row, scored_logits
from distill.losses import token_cross_entropy, topk_forward_kl


@torch.no_grad()
def heldout_metrics(model, pad_id: int, rows: list[dict], max_len: int = 512, batch_size: int = 4) -> dict:
    """Token-weighted means over all generated tokens of `rows`, and the same per fable
    (`per_fable`, in row order: what a paired comparison of two students needs).

    Do not call this on a 4-bit student before or during training: an eval-mode
    no-grad forward corrupts its later gradients on AVX512-BF16 CPUs."""
    was_training = model.training
    model.eval()
    data, collate = [encode_row(r, max_len) for r in rows], Collator(pad_id)
    tot = {"kl": 0.0, "ce": 0.0}
    n = 0.0
    per_fable = []
    for i in range(0, len(data), batch_size):
        idx = range(i, min(i + batch_size, len(data)))
        b = {k: v.to(model.device) for k, v in collate([data[j] for j in idx]).items()}
        # Metrics in float32 whatever the model's dtype (bf16 on a GPU).
        logits, b = scored_logits(model, b)
        logits = logits.float()
        for r, j in enumerate(idx):
            sel = b["kd_mask"][r].bool()
            k = float(sel.sum())
            kl = float(topk_forward_kl(logits[r][sel], b["topk_ids"][r][sel], b["topk_logprobs"][r][sel],
                                       b["kd_mask"][r][sel]))
            ce = float(token_cross_entropy(logits[r][sel], b["labels"][r][sel], b["kd_mask"][r][sel]))
            tot["kl"] += kl * k
            tot["ce"] += ce * k
            n += k
            per_fable.append({"prompt_id": rows[j]["prompt_id"], "sample_index": rows[j]["sample_index"],
                              "kl": kl, "ce": ce, "tokens": int(k)})
    model.train(was_training)
    return {"kl": tot["kl"] / max(n, 1), "ce": tot["ce"] / max(n, 1), "tokens": int(n), "per_fable": per_fable}
