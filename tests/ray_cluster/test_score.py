"""Scoring given text with prompt logprobs (Ray Data LLM + vLLM), checked against the
same model run by transformers: two engines must agree (vLLM's own kind of test)."""

import pytest
import torch

from tests.conftest import needs_models

pytestmark = [pytest.mark.e2e, needs_models]

TEXT = ("The fox looked at the grapes hanging high above her head. She jumped and jumped, but she "
        "could not reach them. At last she walked away and said the grapes were sour anyway.")


def test_teacher_scores_match_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ray_cluster.cluster import shutdown
    from ray_cluster.score import score
    from teacher.registry import get_teacher

    path = get_teacher("smollm2-135m").model_path()
    prompt = "Tell me a fable.\n"
    try:
        [s] = score("smollm2-135m", [{"prompt": prompt, "completion": TEXT}], top_k=5)
    finally:
        shutdown()
    tok = AutoTokenizer.from_pretrained(path)
    p_ids, c_ids = tok(prompt).input_ids, tok(TEXT, add_special_tokens=False).input_ids
    assert s["token_ids"] == c_ids
    assert len(s["topk_ids"]) == len(c_ids) and all(len(k) == 5 for k in s["topk_ids"])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        lp = model(input_ids=torch.tensor([p_ids + c_ids])).logits[0].log_softmax(-1)
    ref = lp[len(p_ids) - 1 : -1].gather(-1, torch.tensor(c_ids)[:, None]).squeeze(-1)
    diff = (torch.tensor(s["token_logprobs"]) - ref).abs()
    assert diff.mean() < 0.15  # vLLM runs bf16, transformers fp32
    top1 = lp[len(p_ids) - 1 : -1].argmax(-1).tolist()
    agree = sum(a == b[0] for a, b in zip(top1, s["topk_ids"])) / len(top1)
    assert agree > 0.8
