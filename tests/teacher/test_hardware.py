"""bf16 only where the hardware multiplies it natively."""

import pytest

from teacher import hardware


@pytest.mark.parametrize("forced, dtype", [("1", "bfloat16"), ("0", "float32")])
def test_the_environment_overrides_detection(monkeypatch, forced, dtype):
    monkeypatch.setenv("KD_BF16", forced)
    assert hardware.bf16_is_fast() is (forced == "1") and hardware.engine_dtype() == dtype


def test_cpu_flags_decide_without_cuda(monkeypatch, tmp_path):
    import torch

    monkeypatch.delenv("KD_BF16", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for flags, native in [("fpu avx2 fma", False), ("fpu avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True)]:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(hardware, "Path", lambda _p, f=cpuinfo: f)
        hardware.cpu_has_native_bf16.cache_clear()
        assert hardware.bf16_is_fast() is native
        assert hardware.engine_dtype() == ("bfloat16" if native else "float32")
    hardware.cpu_has_native_bf16.cache_clear()


def test_engines_skip_compilation_on_cpu_unless_told(monkeypatch):
    import torch

    from teacher.engine import engine_kwargs
    from teacher.registry import get_teacher

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("KD_ENGINE_EAGER", raising=False)
    assert engine_kwargs(get_teacher("smollm2-135m"), 20, 1024)["enforce_eager"] is True
    monkeypatch.setenv("KD_ENGINE_EAGER", "0")
    assert engine_kwargs(get_teacher("smollm2-135m"), 20, 1024)["enforce_eager"] is False
    # production teachers run on GPUs and pin their own engine settings
    kw = engine_kwargs(get_teacher("mistral-7b-instruct"), 20, 4096)
    assert kw["dtype"] == "bfloat16" and kw["enforce_eager"] is False
