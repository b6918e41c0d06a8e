"""Training with the real transformers Trainer + peft on a tiny model and synthetic teacher rows."""

import dataclasses

import pytest
import torch
from transformers import TrainerCallback

from distill import train as T
from student.build import apply_lora


def tiny_student():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return apply_lora(LlamaForCausalLM(cfg), r=4, alpha=8, dropout=0.0)


def teacher_rows(n=8, T_=6, K=4, V=48, lengths=None):
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        logits = torch.randn(lengths[i] if lengths else T_, V, generator=g) * 3
        lp = logits.log_softmax(-1)
        top = lp.topk(K, dim=-1)
        rows.append({"prompt_id": f"p{i}", "prompt_token_ids": [1, 2 + i % 5],
                     "token_ids": top.indices[:, 0].tolist(), "topk_ids": top.indices.tolist(),
                     "topk_logprobs": top.values.tolist()})
    return rows


class Tok:
    pad_token_id = 0
    eos_token_id = 0


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt  # a kill right after a checkpoint was written


def lora_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_kd_training_lowers_loss_and_logs_both_parts(tmp_path):
    cfg = T.TrainConfig(steps=12, batch_size=4, lr=1e-2, save_steps=100, logging_steps=4, max_len=32)
    result = T.train(tiny_student(), Tok(), teacher_rows(), tmp_path, cfg)
    hist = result["history"]
    assert result["steps"] == 12 and len(hist) == 3
    assert hist[-1]["train_kd"] < hist[0]["train_kd"]
    for h in hist:
        assert h["loss"] == pytest.approx(0.9 * h["train_kd"] + 0.1 * h["train_ce"], rel=2e-3)
    assert list((tmp_path / "checkpoints").glob("runs/*/events.out.tfevents.*"))  # TensorBoard


def test_killed_training_resumes_from_its_checkpoint_with_the_same_result(tmp_path):
    cfg = T.TrainConfig(steps=6, batch_size=2, lr=1e-2, save_steps=2, logging_steps=1, max_len=32)
    rows = teacher_rows()
    whole = tiny_student()
    T.train(whole, Tok(), rows, tmp_path / "whole", cfg)

    killed = tiny_student()
    original_init = T.KDTrainer.__init__

    def init_with_kill(self, *a, **kw):
        original_init(self, *a, **kw)
        self.add_callback(StopAt(3))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.KDTrainer, "__init__", init_with_kill)
        with pytest.raises(KeyboardInterrupt):
            T.train(killed, Tok(), rows, tmp_path / "killed", cfg)
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-2").exists()

    resumed = tiny_student()  # a fresh process would rebuild the student like this
    result = T.train(resumed, Tok(), rows, tmp_path / "killed", cfg)
    assert result["resumed_from"] == "checkpoint-2" and result["steps"] == 6
    a, b = lora_weights(whole), lora_weights(resumed)
    assert a.keys() == b.keys()
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-5), n


class GradsAtStep(TrainerCallback):
    """The LoRA gradients the optimizer is about to apply (accumulated, clipped)."""

    def __init__(self):
        self.grads = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("objective", ["kd", "sft"])
def test_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path, objective):
    """grad_accum=2 x batch 2 against batch 4 on the same 4 rows, one optimizer step. The
    fables differ in length (3 and 11 tokens per micro-batch pair), so a mean of the two
    micro-batch means would weight the short fables more than one batch of 4 does.

    Compared where the claim lives, in the gradient the optimizer applies: AdamW's first step
    is lr * g / (|g| + eps), which turns float rounding in a near-zero gradient element into
    up to ~1e-5 of weight (a make test run once saw 2.9e-6 on one element of 256)."""
    rows = teacher_rows(n=4, lengths=[2, 9, 1, 10])
    base = T.TrainConfig(steps=1, lr=5e-2, warmup_steps=0, save_steps=100, logging_steps=1, max_len=32,
                         precision="fp32", objective=objective)
    whole, accumulated = tiny_student(), tiny_student()
    seen = {}
    original_init = T.KDTrainer.__init__

    def init_watching(self, *a, **kw):
        original_init(self, *a, **kw)
        seen[len(seen)] = GradsAtStep()
        self.add_callback(seen[len(seen) - 1])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.KDTrainer, "__init__", init_watching)
        a = T.train(whole, Tok(), rows, tmp_path / "whole", dataclasses.replace(base, batch_size=4, grad_accum=1))
        b = T.train(accumulated, Tok(), rows, tmp_path / "acc", dataclasses.replace(base, batch_size=2, grad_accum=2))
    assert a["effective_batch"] == b["effective_batch"] == 4
    assert b["history"][0]["loss"] == pytest.approx(a["history"][0]["loss"], rel=1e-5)
    g_whole, g_acc = seen[0].grads, seen[1].grads
    assert g_whole and g_whole.keys() == g_acc.keys()
    for name, g in g_whole.items():
        torch.testing.assert_close(g_acc[name], g, atol=1e-7, rtol=1e-5)
    assert any(g.abs().max() > 1e-4 for g in g_whole.values())  # a gradient worth comparing
    start = lora_weights(tiny_student())
    for name, w in lora_weights(whole).items():
        torch.testing.assert_close(lora_weights(accumulated)[name], w, atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(w, start[n]) for n, w in lora_weights(whole).items())  # the step did move them


def test_sft_objective_is_cross_entropy_only(tmp_path):
    cfg = T.TrainConfig(steps=2, batch_size=4, objective="sft", save_steps=100, logging_steps=1, max_len=32)
    result = T.train(tiny_student(), Tok(), teacher_rows(), tmp_path, cfg)
    h = result["history"][0]
    assert h["loss"] == pytest.approx(h["train_ce"], rel=2e-3) and "train_kd" not in h  # no KL computed at all


def test_gradient_checkpointing_trades_compute_and_changes_no_step(tmp_path):
    cfg = T.TrainConfig(steps=3, batch_size=4, lr=1e-2, save_steps=100, logging_steps=1, max_len=32, precision="fp32")
    plain, ckpt = tiny_student(), tiny_student()
    a = T.train(plain, Tok(), teacher_rows(), tmp_path / "a", cfg)
    b = T.train(ckpt, Tok(), teacher_rows(), tmp_path / "b", dataclasses.replace(cfg, gradient_checkpointing=True))
    assert ckpt.base_model.model.model.gradient_checkpointing and not plain.base_model.model.model.gradient_checkpointing
    assert [h["loss"] for h in b["history"]] == pytest.approx([h["loss"] for h in a["history"]], rel=1e-5)
    for name, w in lora_weights(plain).items():
        torch.testing.assert_close(lora_weights(ckpt)[name], w, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd"])
def test_a_student_of_two_teachers_logs_its_loss_per_teacher(tmp_path, divergence):
    """Rows of two teachers (the second weighted 0.5) through the real Trainer: the loss per
    teacher is logged beside the total, with the configured divergence."""
    rows = teacher_rows()
    for i, r in enumerate(rows):
        r["source"], r["weight"] = i % 2, (1.0, 0.5)[i % 2]

    from distill.data import encode_row

    encoded = [dict(encode_row(r, 32), source=r["source"], weight=r["weight"]) for r in rows]
    cfg = T.TrainConfig(steps=4, batch_size=4, lr=1e-2, save_steps=100, logging_steps=2, max_len=32,
                        divergence=divergence, **({"jsd_beta": 0.3} if divergence == "jsd" else {}))
    result = T.train(tiny_student(), Tok(), _Passes(encoded, ("alpha", "beta")), tmp_path, cfg)
    assert result["divergence"] == divergence
    for h in result["history"]:
        assert {"train_kd_alpha", "train_kd_beta", "train_ce_alpha", "train_ce_beta"} <= set(h)


class _Passes:
    """Passes over already-encoded rows, carrying the teachers' names as TrainingShards does."""

    def __init__(self, rows, names):
        self.rows, self.source_names = rows, names

    def __call__(self, epoch):
        return iter(self.rows)
