"""Held-out metrics of a student against its teacher's samples: top-k KL and CE per token."""

from __future__ import annotations

import torch

from distill.data import Collator, encode_row, scored_logits
from distill.losses import token_cross_entropy, topk_divergence_per_token


@torch.no_grad()
def heldout_metrics(model, pad_id: int, rows: list[dict], max_len: int = 512, batch_size: int = 4,
                    encode=encode_row) -> dict:
    """Token-weighted means over all generated tokens of `rows`, and the same per fable
    (`per_fable`, in row order: what a paired comparison of two students needs).

    Do not call this on a 4-bit student before or during training: an eval-mode
    no-grad forward corrupts its later gradients on AVX512-BF16 CPUs."""
    was_training = model.training
    model.eval()
    data, collate = [encode(r, max_len) for r in rows], Collator(pad_id)
    tot = {"kl": 0.0, "ce": 0.0, "nats": 0.0, "bytes": 0}
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
            # Across tokenizers (distill/align.py) the KL is over the carried top-k at aligned
            # positions, entries the student has no token for in the tail: not comparable to a
            # same-tokenizer KL, and left out by the caller.
            ids = b["topk_ids"][r][sel]
            matched = ids >= 0
            s_topk = logits[r][sel].log_softmax(-1).gather(-1, ids.clamp(min=0))
            kl_tok = topk_divergence_per_token(s_topk, b["topk_logprobs"][r][sel],
                                               live=None if bool(matched.all()) else matched)
            aligned = b["kd_aligned"][r][sel]
            kl = float((kl_tok * aligned).sum() / aligned.sum().clamp(min=1.0))
            ce = float(token_cross_entropy(logits[r][sel], b["labels"][r][sel], b["kd_mask"][r][sel]))
            tot["kl"] += kl * k
            tot["ce"] += ce * k
            n += k
            # Nats per byte of the fable: comparable across tokenizers (a token is not a unit two
            # token maps share). Only where every token was scored (max_len cut none of them).
            nb = len(rows[j]["text"].encode()) if data[j]["complete"] else 0
            if nb:
                tot["nats"] += ce * k
                tot["bytes"] += nb
            per_fable.append({"prompt_id": rows[j]["prompt_id"], "sample_index": rows[j]["sample_index"],
                              "kl": kl, "ce": ce, "tokens": int(k), "bytes": nb,
                              "nats_per_byte": ce * k / nb if nb else None})
    model.train(was_training)
    return {"kl": tot["kl"] / max(n, 1), "ce": tot["ce"] / max(n, 1), "tokens": int(n),
            "ce_per_byte": tot["nats"] / tot["bytes"] if tot["bytes"] else None, "per_fable": per_fable}
