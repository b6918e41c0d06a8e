"""On-policy distillation, as in TRL's GKD: on a fraction of steps the student writes the
completions itself and the teacher scores them, through a served endpoint's logprobs.

Training only on the teacher's own fables teaches the student to continue text it would
never have written; on its own samples it learns from the mistakes it actually makes
(Agarwal et al., "On-Policy Distillation of Language Models", 2024). The teacher here is
any OpenAI-compatible vLLM endpoint (`make serve`, or OPENAI_BASE_URL): it scores the
student's tokens with prompt logprobs, so no teacher weights live in the training process.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from distill.data import Collator, encode_row

Scorer = Callable[[list[int], list[int]], tuple[list[list[int]], list[list[float]]]]


@dataclass
class OnPolicy:
    fraction: float  # share of steps on student samples (GKD's lambda)
    scorer: Scorer  # (prompt ids, completion ids) -> teacher top-k ids and logprobs per completion token
    max_new_tokens: int
    pad_id: int
    max_len: int = 512
    temperature: float = 1.0
    seed: int = 0

    def use_now(self, step: int) -> bool:
        """Whether this optimizer step trains on student samples; a function of the step
        alone, so a resumed run makes the same choices."""
        return random.Random(self.seed * 1_000_003 + step).random() < self.fraction

    def rebatch(self, model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's prompts, completed by the student and scored by the teacher."""
        rows = []
        for b in range(inputs["input_ids"].shape[0]):
            prompt = inputs["input_ids"][b, : int(inputs["prompt_len"][b])]
            completion = sample(model, prompt, self.max_new_tokens, self.temperature, self.pad_id)
            ids, lps = self.scorer(prompt.tolist(), completion)
            rows.append({"prompt_id": f"on-policy-{b}", "prompt_token_ids": prompt.tolist(), "token_ids": completion,
                         "topk_ids": ids, "topk_logprobs": lps})
        batch = Collator(self.pad_id)([encode_row(r, self.max_len) for r in rows])
        return {k: v.to(inputs["input_ids"].device) for k, v in batch.items()}


def sample(model, prompt: torch.Tensor, max_new_tokens: int, temperature: float, pad_id: int) -> list[int]:
    """One completion of `prompt` by `model`, up to and including its end-of-sequence token."""
    out = model.generate(input_ids=prompt[None], attention_mask=torch.ones_like(prompt)[None], do_sample=True,
                         temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                         pad_token_id=pad_id)
    completion = out[0, prompt.shape[0] :].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) - {None}
    for i, t in enumerate(completion):
        if t in eos:
            return completion[: i + 1]
    return completion or [pad_id]


def endpoint_scorer(model_name: str, top_k: int, base_url: str | None = None) -> Scorer:
    """A Scorer backed by the served teacher; fails at once, naming the fix, when the
    endpoint is down or does not serve `model_name`."""
    from teacher.client import make_client, score_topk

    client = make_client(base_url)
    try:
        served = {m.id for m in client.models.list().data}
    except Exception as e:  # connection refused, bad URL, auth: all end here
        raise ValueError(f"on-policy distillation needs the teacher served at {client.base_url} ({type(e).__name__}): "
                         "start it with `make serve` or set OPENAI_BASE_URL") from None
    if model_name not in served:
        raise ValueError(f"on-policy distillation: {client.base_url} serves {sorted(served)}, not '{model_name}'")
    return lambda prompt, completion: score_topk(client, model_name, prompt, completion, top_k)
