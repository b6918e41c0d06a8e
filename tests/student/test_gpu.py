"""GPU checks: KD steps on CUDA. Skipped cleanly where there is no GPU (CI never has one).

The models are built from configs (random weights), so these run on a GPU machine with no
model hub and no `make models`: tiny Llama (as Llama-2-chat), Mistral and Falcon, the three
production architectures, with heads 64 wide.
"""

import pytest
import torch

from tests.conftest import needs_models

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

VOCAB = 4096


def tiny(arch: str):
    from transformers import FalconConfig, FalconForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    common = dict(vocab_size=VOCAB, hidden_size=256, num_attention_heads=4)
    if arch == "falcon":
        cfg = FalconConfig(num_hidden_layers=4, new_decoder_architecture=False, multi_query=True, **common)
        return FalconForCausalLM(cfg)
    cls, cfg_cls = (LlamaForCausalLM, LlamaConfig) if arch == "llama" else (MistralForCausalLM, MistralConfig)
    return cls(cfg_cls(num_hidden_layers=4, intermediate_size=512, num_key_value_heads=2, **common))


def kd_steps(model, steps: int = 5, dtype=torch.bfloat16) -> list[float]:
    from distill.losses import kd_objective

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 64), generator=g).cuda()
    top = (torch.randn(2, 64, VOCAB, generator=g) * 3).log_softmax(-1).topk(20, dim=-1)
    labels = torch.roll(ids, -1, dims=1)
    mask = torch.ones(2, 64, device="cuda")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=dtype):
            logits = model(input_ids=ids).logits
        out = kd_objective(logits, labels, top.indices.cuda(), top.values.cuda(), mask, kd_weight=0.5)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(out["loss"].item())
    return losses


@pytest.mark.parametrize("arch", ["llama", "mistral", "falcon"])
def test_lora_kd_in_bf16_lowers_the_loss_on_each_production_architecture(arch):
    from student.build import apply_lora

    torch.manual_seed(0)
    model = apply_lora(tiny(arch), 8, 16, 0.0).cuda()
    losses = kd_steps(model)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_topk_kl_matches_between_cuda_and_cpu():
    from distill.losses import topk_forward_kl

    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 16, 512, generator=g)
    top = torch.randn(3, 16, 512, generator=g).log_softmax(-1).topk(20, dim=-1)
    mask = torch.ones(3, 16)
    cpu = topk_forward_kl(s, top.indices, top.values, mask)
    gpu = topk_forward_kl(s.cuda(), top.indices.cuda(), top.values.cuda(), mask.cuda())
    assert torch.allclose(cpu, gpu.cpu(), rtol=1e-4, atol=1e-5)


@needs_models
def test_kd_step_on_the_embedded_student_lowers_the_loss():
    from distill.losses import topk_forward_kl
    from student.build import apply_lora, build_student
    from teacher.registry import get_teacher

    path = get_teacher("smollm2-135m").model_path()
    model, _ = build_student("pruned", path)
    model = apply_lora(model, 8, 16, 0.0).cuda()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (2, 32), generator=g).cuda()
    top = torch.randn(2, 32, 49152, generator=g).log_softmax(-1).topk(20, dim=-1)
    mask = torch.ones(2, 32, device="cuda")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(3):
        loss = topk_forward_kl(model(input_ids=ids).logits, top.indices.cuda(), top.values.cuda(), mask)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_held_out_metrics_run_on_the_gpu_and_match_the_cpu():
    """Evaluation moves the student to the GPU in bf16 (teacher.hardware.on_accelerator);
    its KL and CE must match the fp32 CPU figures to bf16 precision."""
    import copy

    from eval.logit_metrics import heldout_metrics
    from teacher.hardware import on_accelerator
    from tests.distill.test_train import teacher_rows, tiny_student

    cpu = tiny_student().merge_and_unload()
    gpu = on_accelerator(copy.deepcopy(cpu))
    assert gpu.device.type == "cuda" and gpu.dtype in (torch.bfloat16, torch.float16)
    rows = [{**r, "sample_index": 0} for r in teacher_rows()]
    want, got = heldout_metrics(cpu, 0, rows, 32), heldout_metrics(gpu, 0, rows, 32)
    assert got["kl"] == pytest.approx(want["kl"], rel=0.05) and got["ce"] == pytest.approx(want["ce"], rel=0.05)


def test_a_7b_shaped_teacher_prunes_into_bf16_on_the_gpu_without_a_float32_cpu_copy(tmp_path):
    """student_kind = "pruned" as production builds it: Mistral-7B's shape (random weights,
    14.5 GB of bf16 shards) pruned to 8 of 32 layers straight into bf16 on the GPU. The
    process's resident memory grows by far less than loading the teacher in float32 and pruning,
    the former way, measured in the same run (both written to $OUT/prune-7b.json)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from transformers import MistralConfig

    from benchmarks.prune import write_random_checkpoint
    from student import build
    from tests.conftest import ROOT

    cfg = MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                        tie_word_embeddings=False)
    teacher_bytes = write_random_checkpoint(cfg, tmp_path, device="cuda")
    # Each way in a fresh process, so that its peak resident set is its own (benchmarks/prune.py).
    ways = {}
    for way, device in (("kept", "cuda"), ("whole", "cpu")):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.prune", "--path", str(tmp_path), "--way", way,
                               "--keep", "8", "--device", device], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        ways[way] = json.loads(proc.stdout.strip().splitlines()[-1])
    figures = {"teacher_bf16_bytes": teacher_bytes, "ways": ways}
    print(json.dumps(figures))
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "prune-7b.json").write_text(json.dumps(figures, indent=1))
    # nowhere near the float32 copy of the teacher that the former way holds
    assert ways["kept"]["peak_above_start"] < ways["whole"]["peak_above_start"] / 4
    assert ways["kept"]["student_bytes"] == ways["whole"]["student_bytes"] / 2  # bf16 against float32
    model = build.load_pruned(str(tmp_path), 8, dtype=torch.bfloat16, device="cuda")
    assert model.config.num_hidden_layers == 8 and next(model.parameters()).device.type == "cuda"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(torch.tensor([[1, 5, 7]], device="cuda")).logits
    assert out.shape == (1, 3, 32000) and torch.isfinite(out).all()
