"""Held-out metrics of a student against its teacher's samples: top-k KL and CE per token."""

from __future__ import annotations

import torch

from distill.data import Collator, RowDataset
from distill.losses import token_cross_entropy, topk_forward_kl


@torch.no_grad()
def heldout_metrics(model, pad_id: int, rows: list[dict], max_len: int = 512, batch_size: int = 4) -> dict:
    """Token-weighted means over all generated tokens of `rows`.

    Do not call this on a 4-bit student before or during training: an eval-mode
    no-grad forward corrupts its later gradients on AVX512-BF16 CPUs."""
    was_training = model.training
    model.eval()
    data, collate = RowDataset(rows, max_len), Collator(pad_id)
    tot = {"kl": 0.0, "ce": 0.0}
    n = 0.0
    for i in range(0, len(data), batch_size):
        b = collate([data[j] for j in range(i, min(i + batch_size, len(data)))])
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        sel = b["kd_mask"].bool()
        k = float(sel.sum())
        tot["kl"] += float(topk_forward_kl(logits[sel], b["topk_ids"][sel], b["topk_logprobs"][sel], b["kd_mask"][sel])) * k
        tot["ce"] += float(token_cross_entropy(logits[sel], b["labels"][sel], b["kd_mask"][sel])) * k
        n += k
    model.train(was_training)
    return {"kl": tot["kl"] / max(n, 1), "ce": tot["ce"] / max(n, 1), "tokens": int(n)}
