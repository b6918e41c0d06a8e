"""On-policy distillation with the real Trainer and a tiny student; the teacher is a
scorer function here (its endpoint wire format is tested in tests/teacher/test_client.py,
the real served teacher in tests/ray_cluster/test_serve.py)."""

import pytest
import torch

from distill.onpolicy import OnPolicy, endpoint_scorer, sample
from distill.train import TrainConfig, train
from tests.distill.test_train import Tok, teacher_rows, tiny_student


class CountingScorer:
    """A teacher that prefers token 3 everywhere: the student should learn to follow it."""

    def __init__(self, k=4, vocab=48):
        self.calls, self.k, self.vocab = [], k, vocab

    def __call__(self, prompt, completion):
        self.calls.append((list(prompt), list(completion)))
        lp = torch.full((self.vocab,), -8.0)
        lp[3] = 0.0
        top = lp.log_softmax(-1).topk(self.k)
        return [top.indices.tolist()] * len(completion), [top.values.tolist()] * len(completion)


def test_sample_stops_at_eos_and_decisions_depend_only_on_the_step():
    model = tiny_student()
    model.generation_config.eos_token_id = 1
    torch.manual_seed(0)
    out = sample(model, torch.tensor([2, 5, 7]), 10, 1.0, pad_id=0)
    assert 1 <= len(out) <= 10 and (1 not in out[:-1])
    op = OnPolicy(0.5, CountingScorer(), 8, pad_id=0, seed=3)
    picks = [op.use_now(s) for s in range(200)]
    assert picks == [op.use_now(s) for s in range(200)] and 60 < sum(picks) < 140
    assert not any(OnPolicy(0.0, None, 8, 0).use_now(s) for s in range(50))


def test_on_policy_training_scores_student_samples_and_moves_toward_the_teacher(tmp_path):
    rows = teacher_rows()
    scorer = CountingScorer()
    model = tiny_student()
    cfg = TrainConfig(steps=8, batch_size=4, lr=2e-2, warmup_steps=0, save_steps=4, logging_steps=1, lora_r=4,
                      on_policy=1.0, on_policy_max_new_tokens=6)
    result = train(model, Tok(), rows, tmp_path, cfg, scorer=scorer)
    assert result["steps"] == 8
    assert len(scorer.calls) == 8 * 4  # every row of every step was sampled by the student, then scored
    prompts = {tuple(r["prompt_token_ids"]) for r in rows}
    assert all(tuple(p) in prompts and 1 <= len(c) <= 6 for p, c in scorer.calls)
    assert all(h.get("train_on_policy") == 1.0 for h in result["history"])
    kd = [h["train_kd"] for h in result["history"]]
    assert kd[-1] < kd[0]


def test_on_policy_needs_a_scorer_and_the_kd_objective(tmp_path):
    with pytest.raises(ValueError, match="needs the served teacher"):
        train(tiny_student(), Tok(), teacher_rows(), tmp_path, TrainConfig(steps=1, on_policy=0.5, lora_r=4))
    with pytest.raises(ValueError, match="on_policy: 0.5 needs objective='kd'"):
        TrainConfig(on_policy=0.5, objective="sft")


def test_unreachable_endpoint_names_the_fix():
    with pytest.raises(ValueError, match="make serve"):
        endpoint_scorer("smollm2-135m", 20, base_url="http://127.0.0.1:9/v1")
