"""GPU checks: a KD step on CUDA. Skipped cleanly where there is no GPU (CI never has one)."""

import pytest
import torch

from tests.conftest import needs_models

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@needs_models
def test_kd_step_on_cuda_lowers_the_loss():
    from distill.losses import topk_forward_kl
    from student.build import apply_lora, build_student
    from teacher.registry import get_teacher

    path = get_teacher("smollm2-135m").model_path()
    model, _ = build_student("pruned", path)
    model = apply_lora(model, 8, 16, 0.0).cuda()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (2, 32), generator=g).cuda()
    teacher_logits = torch.randn(2, 32, 49152, generator=g).cuda()
    top = teacher_logits.log_softmax(-1).topk(20, dim=-1)
    mask = torch.ones(2, 32, device="cuda")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(3):
        loss = topk_forward_kl(model(input_ids=ids).logits, top.indices, top.values, mask)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
