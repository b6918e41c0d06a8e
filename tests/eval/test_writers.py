"""Which students vLLM serves as LoRA adapters and which merged: Falcon declares no LoRA
support in vLLM, so its students (and their checkpoints) are served merged."""

import json

import pytest
import torch

from eval.writers import lora_served, merge_checkpoint
from tests.tiny_models import build


@pytest.mark.parametrize("arch, served", [("Qwen2ForCausalLM", True), ("LlamaForCausalLM", True),
                                          ("Gemma3ForCausalLM", True), ("FalconForCausalLM", False),
                                          ("NoSuchModelForCausalLM", False)])
def test_lora_is_served_only_where_vllm_declares_it(tmp_path, arch, served):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [arch]}))
    assert lora_served(str(tmp_path)) is served


def test_a_merged_checkpoint_computes_what_the_adapter_on_its_base_computes(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = build(tmp_path, "tiny-falcon")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["query_key_value"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "checkpoint-2", safe_serialization=True)
    out = tmp_path / "merged" / "tiny-falcon-kd@2"
    merge_checkpoint(str(base), tmp_path / "checkpoint-2", out)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert not list(out.parent.glob(".*.tmp"))  # written through a staged folder
    ids = torch.tensor([[1, 5, 9, 12]])
    fresh = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        want = PeftModel.from_pretrained(fresh, tmp_path / "checkpoint-2")(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)(ids).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, plain, atol=1e-3)
