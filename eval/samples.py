"""Fables written by a student for evaluation prompts (transformers generate, sampled)."""

from __future__ import annotations

import torch

from distill.data import pad_id


@torch.no_grad()
def sample_fables(model, tokenizer, prompt_token_ids: list[list[int]], max_new_tokens: int, temperature: float,
                  top_p: float = 1.0, seed: int = 0, batch_size: int = 16) -> list[str]:
    """One completion per prompt, given as the exact token ids the teacher saw
    (BOS and chat markup included), left-padded so generation continues at the right edge;
    sampled as the teacher sampled (RunConfig.sampling)."""
    torch.manual_seed(seed)
    model.eval()
    pad = pad_id(tokenizer)
    out: list[str] = []
    for i in range(0, len(prompt_token_ids), batch_size):
        batch = prompt_token_ids[i : i + batch_size]
        L = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (L - len(p)) + list(p) for p in batch], device=model.device)
        attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in batch], device=model.device)
        gen = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                             do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                             top_p=top_p, top_k=0, pad_token_id=pad)
        out += tokenizer.batch_decode(gen[:, L:], skip_special_tokens=True)
    return out
