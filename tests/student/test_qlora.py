"""QLoRA on CPU: bitsandbytes nf4 base + peft LoRA, with the AVX512-BF16 trap guarded.

Gradients through the 4-bit layers are checked against the same model with the nf4
weights dequantized into ordinary fp32 Linear layers."""

import pytest
import torch

from distill.train import TrainConfig, train
from student.build import FOUR_BIT_TRAP, apply_lora, export, is_4bit, quantize_nf4
from tests.distill.test_train import Tok, teacher_rows

bnb = pytest.importorskip("bitsandbytes")


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=48, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg)


def dequantized_copy(q, base):
    """`base` (fp32) with every nf4 Linear's weight replaced by its dequantized value."""
    ref = {n: m for n, m in base.named_modules()}
    count = 0
    for name, m in q.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).float()
            ref[name].weight.data.copy_(w.reshape(ref[name].weight.shape))
            count += 1
    assert count == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    return base


def same_lora_init(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    for n, p in sorted(model.named_parameters()):
        if "lora_" in n:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)


def lora_grads(model, batch):
    model.train()
    model.zero_grad()
    out = model(input_ids=batch, labels=batch)
    out.loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}, float(out.loss)


def test_qlora_gradients_match_dequantized_reference(tmp_path):
    q = quantize_nf4(tiny_llama(), tmp_path / "base")
    assert is_4bit(q)
    ref = dequantized_copy(q, tiny_llama())
    q, ref = apply_lora(q, 4, 8, 0.0), apply_lora(ref, 4, 8, 0.0)
    same_lora_init(q), same_lora_init(ref)
    batch = torch.randint(0, 48, (2, 12), generator=torch.Generator().manual_seed(5))
    gq, lq = lora_grads(q, batch)
    gr, lr = lora_grads(ref, batch)
    assert set(gq) == set(gr) and len(gq) == 2 * 2 * 7
    assert abs(lq - lr) < 1e-4
    for n in gr:
        err = (gq[n] - gr[n]).norm() / gr[n].norm().clamp(min=1e-12)
        assert err < 1e-3, f"{n}: relative gradient error {err:.2e}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the trap and its guard are CPU-only")
def test_eval_mode_forward_of_a_4bit_student_is_refused(tmp_path):
    q = apply_lora(quantize_nf4(tiny_llama(), tmp_path / "base"), 4, 8, 0.0)
    x = torch.tensor([[1, 2, 3]])
    q.eval()
    with pytest.raises(RuntimeError, match="4-bit student ran an eval-mode"):
        q(input_ids=x)
    q.train()
    with torch.no_grad(), pytest.raises(RuntimeError, match="no-grad forward"):
        q(input_ids=x)
    assert "AVX512-BF16" in FOUR_BIT_TRAP
    q(input_ids=x).logits.sum().backward()  # a training forward is allowed


def test_qlora_trains_with_the_trainer_and_exports_a_full_precision_merge(tmp_path):
    from transformers import AutoModelForCausalLM

    rows = teacher_rows()
    model = apply_lora(quantize_nf4(tiny_llama(), tmp_path / "base"), 4, 8, 0.0)
    # Every step the same eight rows (one pass of the stream): step 1's loss and step 6's compare.
    cfg = TrainConfig(steps=6, batch_size=8, lr=5e-3, warmup_steps=0, save_steps=3, logging_steps=1, lora_r=4,
                      quantization="nf4")
    result = train(model, Tok(), rows, tmp_path / "run", cfg)
    assert result["steps"] == 6
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    paths = export(model, SavingTok(), tmp_path / "run", full_precision_base=tiny_llama)
    back = AutoModelForCausalLM.from_pretrained(paths["merged"], use_safetensors=True)
    assert not is_4bit(back) and not list(paths["merged"].glob("*.bin"))
    # The merge equals the trained adapter applied to the fp32 student.
    from peft import PeftModel

    fp32 = PeftModel.from_pretrained(tiny_llama(), paths["adapter"]).eval()
    x = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(back(input_ids=x).logits, fp32(input_ids=x).logits, atol=1e-4)


class SavingTok(Tok):
    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("cuda, fast, precision, want", [
    (True, True, "auto", torch.bfloat16), (True, True, "bf16", torch.bfloat16), (True, False, "bf16", torch.bfloat16),
    (True, False, "auto", torch.float32), (True, True, "fp32", torch.float32),
    (False, True, "auto", torch.float32), (False, True, "bf16", torch.float32),
])
def test_nf4_layers_compute_in_bf16_on_a_gpu_training_in_bf16_and_fp32_on_cpu(monkeypatch, cuda, fast, precision, want):
    from student import build
    from teacher import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(hardware, "bf16_is_fast", lambda: fast)
    assert build.qlora_compute_dtype(precision) == want
