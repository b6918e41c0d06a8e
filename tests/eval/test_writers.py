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


def _trained_student(run, steps=(2, 4)):
    from distill.run_folder import Trained

    student = run.student("falcon", "kd")
    for step in steps:
        (student.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
    Trained(objective="kd", student_kind="pruned", quantization="none", rows=4, removed_as_toxic=[],
            steps=steps[-1], final_loss=1.0, history=[], train_runtime_s=1.0, resumed_from=None, workers=1,
            effective_batch=2, student_layers=2, params=10, trainable_params=1,
            merged=str(student.merged)).write(student.trained)
    return student


def test_a_checkpoint_whose_fables_are_written_is_neither_merged_nor_looked_up_again(tmp_path):
    # Looking up LoRA support imports vLLM (~16 s): a rerun that finds the fables written
    # must not pay it, nor merge the checkpoint again.
    from types import SimpleNamespace

    from distill.run_folder import RunFolder, StudentFables
    from eval.writers import checkpoint_writers

    run = RunFolder(tmp_path / "run")
    _trained_student(run)
    run.judge.path.mkdir(parents=True)
    StudentFables(label="falcon-kd@2", samples=[["A fable."]]).write(run.judge.fables("falcon-kd@2"))
    tr = SimpleNamespace(teacher="falcon", train=SimpleNamespace(objective="kd", lora_r=8))

    def asked():
        raise AssertionError("lora support looked up for fables already written")

    (w,) = checkpoint_writers(tr, run, "base", [[1, 2]], 1, 8, lora=asked)  # @4 is the finished student
    assert w.label == "falcon-kd@2" and not run.judge.merged_checkpoints.exists()
