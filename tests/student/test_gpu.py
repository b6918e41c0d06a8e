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


def default_student_shape():
    """Qwen2.5-Coder-0.5B-Instruct's architecture (the default student), random weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True))


def synthetic_rows(n: int = 16, prompt: int = 48, generated: int = 200, k: int = 20, vocab: int = 151936):
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        T = generated - 7 * (i % 5)  # unequal lengths
        top = (torch.randn(T, 512, generator=g) * 3).log_softmax(-1).topk(k, dim=-1)
        ids = torch.randint(0, vocab - 512, (1,), generator=g).item() + top.indices
        rows.append({"prompt_id": f"p{i}", "prompt_token_ids": torch.randint(0, vocab, (prompt,), generator=g).tolist(),
                     "token_ids": ids[:, 0].tolist(), "topk_ids": ids.tolist(), "topk_logprobs": top.values.tolist()})
    return rows


def fill_row(r: dict) -> dict:
    """A synthetic row with the schema's other fields."""
    T = len(r["token_ids"])
    return {**r, "character": "fox", "trait": "sly", "setting": "wood", "conflict": "c", "resolution": "r", "moral": "m",
            "variant": 0, "instruction": "Write.", "sample_index": 0, "prompt_text": "Write.", "text": "A fable.",
            "token_logprobs": [lp[0] for lp in r["topk_logprobs"]][:T], "teacher_id": "synthetic", "sampling": "{}",
            "tokenizer_fingerprint": "synthetic"}


@pytest.mark.parametrize("objective", ["kd", "sft"])
def test_the_train_entry_runs_kd_and_sft_in_bf16_on_the_default_students_shape_and_resumes(tmp_path, objective):
    """distill.train.train, as the pipeline calls it, with LoRA on the GPU in bf16: the loss
    falls, a run killed after its first checkpoint resumes from it and ends where the
    uninterrupted run ends."""
    import json
    import os
    from pathlib import Path

    from transformers import TrainerCallback

    from distill import train as T
    from student.build import apply_lora

    class Tok:
        pad_token_id = eos_token_id = 151643

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise KeyboardInterrupt

    cfg = T.TrainConfig(steps=8, batch_size=4, grad_accum=2, lr=2e-3, save_steps=4, logging_steps=1, max_len=256,
                        precision="bf16", objective=objective, kd_weight=0.9 if objective == "kd" else 0.0)
    rows, source = synthetic_rows(), "rows in memory (no pyarrow on this machine)"
    try:  # synthetic shards, written by the schema's writer and streamed, where pyarrow is installed
        from distill.schema import write_table_atomic
        from distill.stream import TrainingShards

        for s in range(0, len(rows), 4):
            write_table_atomic([{**fill_row(r), "split": "train"} for r in rows[s:s + 4]], tmp_path / "shards" / f"{s:05d}.parquet",
                               vocab_size=151936)
        rows = TrainingShards(files=tuple(str(f) for f in sorted((tmp_path / "shards").glob("*.parquet"))),
                              rows=len(rows), max_len=cfg.max_len)
        source = "synthetic shards, streamed"
    except ImportError:
        pass

    def student():
        return apply_lora(default_student_shape(), 16, 32, 0.0).cuda()

    whole = student()
    torch.cuda.reset_peak_memory_stats()
    result = T.train(whole, Tok(), rows, tmp_path / "whole", cfg)
    peak = torch.cuda.max_memory_allocated()
    assert result["steps"] == 8 and result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert next(whole.parameters()).is_cuda
    killed = student()
    init = T.KDTrainer.__init__
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.KDTrainer, "__init__", lambda self, *a, **kw: (init(self, *a, **kw), self.add_callback(StopAt()))[0])
        with pytest.raises(KeyboardInterrupt):
            T.train(killed, Tok(), rows, tmp_path / "killed", cfg)
    resumed = student()
    again = T.train(resumed, Tok(), rows, tmp_path / "killed", cfg)
    assert again["resumed_from"] == "checkpoint-4" and again["steps"] == 8
    assert [h["step"] for h in again["history"]] == list(range(1, 9))
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        if "lora_" in n:
            torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=2e-2, msg=n)  # bf16 kernels
    out = Path(os.environ.get("OUT", tmp_path))  # benchmarks/gpu_check.sh collects it for BENCHMARKS.md
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train-{objective}.json").write_text(json.dumps({
        "objective": objective, "device": torch.cuda.get_device_name(), "data": source, "steps": result["steps"],
        "loss_first": result["history"][0]["loss"], "loss_last": result["history"][-1]["loss"],
        "train_runtime_s": result["train_runtime_s"], "peak_gpu_bytes": peak, "resumed_from": again["resumed_from"]}))
