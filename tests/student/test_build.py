import shutil

import pytest
import torch

from student import build
from tests.conftest import needs_models


def test_keep_layers_spreads_evenly_and_keeps_the_ends():
    assert build.keep_layers(30, 15)[0] == 0 and build.keep_layers(30, 15)[-1] == 29
    assert len(build.keep_layers(30, 15)) == 15
    assert build.keep_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="student.layers=40"):
        build.keep_layers(30, 40)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def test_pruned_model_runs_forward_and_cached_generation():
    model = build.prune_layers(tiny_llama(), 3)
    assert model.config.num_hidden_layers == 3
    assert [l.self_attn.layer_idx for l in model.model.layers] == [0, 1, 2]
    ids = torch.tensor([[1, 2, 3]])
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7)


def word_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(64)}, unk_token="t0")))


def test_lora_trains_only_adapters_and_the_export_loads_anywhere(tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    # A pruned student: the adapter fits its 3 layers, not the 6-layer model it came from.
    model = build.apply_lora(build.prune_layers(tiny_llama(), 3), r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # make the adapter non-trivial, then check every exported form computes the same function
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    paths = build.export(model, word_tokenizer(), tmp_path)
    assert sorted(paths) == ["adapter", "base", "merged"] and not list(tmp_path.glob(".*"))
    assert (paths["adapter"] / "adapter_model.safetensors").exists()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    ids = torch.tensor([[1, 2, 3, 4]])
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(paths["merged"], use_safetensors=True)
        base = AutoModelForCausalLM.from_pretrained(paths["base"], use_safetensors=True)
        assert base.config.num_hidden_layers == 3
        adapted = PeftModel.from_pretrained(base, paths["adapter"])
        # The student folder moves whole (to another run folder, another machine): the adapter
        # names its base relative to itself, never by the absolute path it was written at.
        moved = tmp_path / "elsewhere" / "student"
        shutil.move(str(tmp_path / "adapter"), str(tmp_path / "keep-adapter"))
        moved.mkdir(parents=True)
        for name, src in (("adapter", tmp_path / "keep-adapter"), ("base", paths["base"])):
            shutil.copytree(src, moved / name)
        assert str(tmp_path) not in (moved / "adapter" / "adapter_config.json").read_text()
        relocated = build.load_adapted(moved / "adapter")
        with monkeypatch.context() as m:
            m.chdir(moved / "adapter")
            by_name = AutoPeftModelForCausalLM.from_pretrained(".")  # base from adapter_config.json
        for other in (merged, adapted, relocated, by_name):
            torch.testing.assert_close(other(input_ids=ids).logits, want, atol=1e-4, rtol=1e-4)
        bare = AutoModelForCausalLM.from_pretrained(paths["base"], use_safetensors=True)  # peft wrapped `base` in place
        assert not torch.allclose(bare(input_ids=ids).logits, want, atol=1e-3)  # the adapter matters


EXPORT_THEN_HANG = """
import sys, time
from pathlib import Path
from student import build
from tests.student.test_build import tiny_llama, word_tokenizer
tok = word_tokenizer()
save = tok.save_pretrained
def save_then_hang(path, *a, **k):
    save(path, *a, **k)
    if Path(path).name == "merged":  # the last write: weights and all are on disk, unrenamed
        print("HANGING", flush=True)
        time.sleep(600)
tok.save_pretrained = save_then_hang
model = build.apply_lora(tiny_llama(), r=4, alpha=8, dropout=0.0)
build.export(model, tok, Path(sys.argv[1]))
"""


def test_a_killed_export_leaves_nothing_that_counts_as_done(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from distill.artifacts import remove_partial_writes
    from tests.conftest import ROOT

    out = tmp_path / "student"
    proc = subprocess.Popen([sys.executable, "-c", EXPORT_THEN_HANG, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "HANGING"
    [stage] = out.glob(".stage.*.tmp")
    assert (stage / "merged" / "model.safetensors").exists() and (stage / "adapter").is_dir()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p.name for p in out.iterdir()] == [stage.name]  # no adapter/, base/ or merged/ to mistake for done
    assert remove_partial_writes(tmp_path, recursive=True) == [stage] and not list(out.iterdir())
    paths = build.export(build.apply_lora(tiny_llama(), r=4, alpha=8, dropout=0.0), word_tokenizer(), out)
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "base", "merged"] == sorted(paths)


@needs_models
def test_students_of_embedded_teachers_and_vocab_check():
    from distill.schema import tokenizer_fingerprint
    from teacher.registry import get_teacher

    smol, gemma = get_teacher("smollm2-135m"), get_teacher("gemma3-270m")
    model, tok = build.build_student("pruned", smol.model_path())
    assert model.config.num_hidden_layers == 15
    # Built from the kept layers' tensors alone, with its tied embeddings: the teacher loaded and pruned.
    from transformers import AutoModelForCausalLM

    full = build.prune_layers(AutoModelForCausalLM.from_pretrained(smol.model_path(), dtype=torch.float32), 15)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in full.state_dict().items())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    from transformers import AutoTokenizer

    # a pruned student reads its teacher's token map (its logits index the teacher's top-k directly)
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(AutoTokenizer.from_pretrained(smol.model_path()))
    assert tokenizer_fingerprint(tok) != tokenizer_fingerprint(AutoTokenizer.from_pretrained(gemma.model_path()))
    with pytest.raises(ValueError, match="student.kind='tiny'"):
        build.build_student("tiny", smol.model_path())


@needs_models
def test_converted_gemma_tokenizer_keeps_its_bos_rule():
    from transformers import AutoTokenizer

    from teacher.registry import get_teacher

    tok = AutoTokenizer.from_pretrained(get_teacher("gemma3-270m").model_path())
    assert tok("Once upon a time").input_ids[0] == tok.bos_token_id


@pytest.mark.parametrize("arch", ["llama", "mistral", "falcon"])
def test_each_production_architecture_prunes_and_generates_with_its_cache(arch):
    from tests.tiny_models import build_model

    model = build.prune_layers(build_model(arch, vocab=96, bos=1, eos=2).float(), 2)
    parent, attr = build.decoder_layers(model)
    assert (parent, attr) == ((model.transformer, "h") if arch == "falcon" else (model.model, "layers"))
    assert len(getattr(parent, attr)) == model.config.num_hidden_layers == 2
    idx = [m.layer_idx for layer in getattr(parent, attr) for m in layer.modules()
           if isinstance(getattr(m, "layer_idx", None), int)]
    assert idx and sorted(set(idx)) == [0, 1]
    out = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7)


def test_pruning_an_unknown_layout_names_the_architecture():
    from types import SimpleNamespace

    odd = torch.nn.Module()
    odd.config = SimpleNamespace(num_hidden_layers=2, architectures=["OddForCausalLM"])
    odd.stack = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="cannot find the decoder layers of OddForCausalLM"):
        build.prune_layers(odd, 1)


@pytest.mark.parametrize("arch", ["llama", "mistral", "falcon"])
def test_a_pruned_student_built_from_the_kept_layers_equals_loading_and_pruning(arch, tmp_path):
    """load_pruned reads only the kept layers' tensors: the same weights, tensor for tensor,
    and the same logits as loading the whole teacher and dropping layers (the former path)."""
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import build_model

    teacher = build_model(arch, vocab=96, bos=1, eos=2)
    teacher.config.num_hidden_layers = 4
    teacher.save_pretrained(tmp_path, safe_serialization=True)
    full = build.prune_layers(AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32), 3).eval()
    small = build.load_pruned(str(tmp_path), 3)
    a, b = full.state_dict(), small.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.equal(full(ids).logits, small(ids).logits)
    assert small.config.num_hidden_layers == 3 and small.dtype == torch.float32
    half = build.load_pruned(str(tmp_path), 3, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half.state_dict()[next(iter(b))], b[next(iter(b))].bfloat16())


def test_a_pruned_student_needs_safetensors_and_every_kept_tensor(tmp_path):
    from tests.tiny_models import build_model

    teacher = build_model("llama", vocab=96, bos=1, eos=2)
    teacher.config.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors weights"):
        build.load_pruned(str(tmp_path), 2)
    from safetensors.torch import save_file

    sd = {k: v for k, v in teacher.state_dict().items() if "layers.3." not in k}
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lacks .* tensors the pruned student needs \\(first: model.layers.1"):
        build.load_pruned(str(tmp_path), 2)
