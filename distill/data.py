"""From schema rows to training batches.

A row's sequence is prompt tokens + generated tokens. The logit at position i
predicts token i+1, so the teacher's top-k for generated token j sits at position
len(prompt) - 1 + j; every other position is masked out.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def pad_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end-of-sequence
    token (Llama-style tokenizers have no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

def encode_row(row: dict, max_len: int) -> dict:
    """A row as the arrays a batch is cut from: the sequence, where its first scored logit
    sits, and the generated tokens' labels and teacher top-k ([T, K]). Arrays, not lists:
    a buffered row costs its bytes, and Ray Data carries it as one tensor per field."""
    prompt, gen = np.asarray(row["prompt_token_ids"], np.int64), np.asarray(row["token_ids"], np.int64)
    if len(prompt) >= max_len:
        raise ValueError(f"prompt {row['prompt_id']} has {len(prompt)} tokens, over max_len={max_len}")
    T = min(len(gen), max_len - len(prompt))
    K = len(row["topk_ids"][0]) if T else 1
    return {
        "input_ids": np.concatenate([prompt, gen[:T]]),
        "start": len(prompt) - 1,
        "labels": gen[:T],
        "topk_ids": np.asarray(row["topk_ids"][:T], np.int32).reshape(T, K),  # most of a buffered row's bytes
        "topk_logprobs": np.asarray(row["topk_logprobs"][:T], np.float32).reshape(T, K),
        "complete": T == len(gen),  # max_len cut none of the fable
    }


class Collator:
    """Right-pads encoded rows into aligned tensors (what KDTrainer.compute_loss reads)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        B = len(items)
        L = max(len(x["input_ids"]) for x in items)
        K = max((x["topk_ids"].shape[1] for x in items if len(x["labels"])), default=1)  # a fable may be empty
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, L), dtype=torch.long)
        labels = torch.zeros((B, L), dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.float32)
        topk_ids = torch.zeros((B, L, K), dtype=torch.long)
        # Masked positions get a uniform top-k (sums to 1, tail 0) so the loss stays finite.
        topk_lp = torch.full((B, L, K), -math.log(K), dtype=torch.float32)
        # Positions that carry the teacher's top-k (all of a same-tokenizer row's; across
        # tokenizers, distill/align.py), and each position's loss weight (its teacher's).
        aligned = torch.zeros((B, L), dtype=torch.float32)
        weight = torch.ones((B, L), dtype=torch.float32)
        for b, x in enumerate(items):
            n, s, T = len(x["input_ids"]), x["start"], len(x["labels"])
            input_ids[b, :n] = torch.as_tensor(x["input_ids"])
            attention[b, :n] = 1
            if not T:
                continue
            labels[b, s : s + T] = torch.as_tensor(x["labels"])
            mask[b, s : s + T] = 1
            topk_ids[b, s : s + T] = torch.as_tensor(x["topk_ids"])
            topk_lp[b, s : s + T] = torch.as_tensor(x["topk_logprobs"])
            aligned[b, s : s + T] = torch.as_tensor(x["aligned"]) if "aligned" in x else 1.0
            weight[b, s : s + T] = float(x.get("weight", 1.0))
        prompt_len = torch.tensor([x["start"] + 1 for x in items])
        source = torch.tensor([int(x.get("source", 0)) for x in items])
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "prompt_len": prompt_len,
                "kd_mask": mask, "topk_ids": topk_ids, "topk_logprobs": topk_lp, "kd_aligned": aligned,
                "row_weight": weight, "source": source}


def scored_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's logits at the positions from the batch's first scored one on, and the
    batch's per-position tensors cut to the same positions. The prompt's positions predict
    nothing the loss reads: skipping their vocabulary projection (transformers'
    `logits_to_keep`) saves about a third of it and of the largest activation."""
    L = batch["input_ids"].shape[1]
    scored = batch["kd_mask"].any(dim=0).nonzero()
    first = int(scored[0]) if len(scored) else L - 1
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=L - first).logits
    cut = {k: batch[k][:, first:] for k in ("labels", "kd_mask", "topk_ids", "topk_logprobs", "kd_aligned", "row_weight")
           if k in batch}
    if "source" in batch:  # a row's teacher, one per position (for the loss per teacher)
        cut["source"] = batch["source"].unsqueeze(1).expand(-1, L - first)
    return logits, cut
