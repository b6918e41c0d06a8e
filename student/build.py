"""Students: the teacher pruned to fewer layers, a small model from the teacher's
config, or any HF checkpoint; LoRA or QLoRA (bitsandbytes nf4) through peft; merge and export.

A pruned or config student shares its teacher's token map, so its logits index the
teacher's stored top-k directly; a checkpoint student of another family gets the top-k
carried onto its tokens (distill/align.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from student import STUDENT_KINDS


def keep_layers(n_layers: int, n_keep: int) -> list[int]:
    """Evenly spaced layer indices, first and last always kept."""
    if not 1 <= n_keep <= n_layers:
        raise ValueError(f"student.layers={n_keep} must be between 1 and the teacher's {n_layers} layers")
    if n_keep == 1:
        return [n_layers - 1]
    return sorted({round(i * (n_layers - 1) / (n_keep - 1)) for i in range(n_keep)})


def decoder_layers(model) -> tuple[torch.nn.Module, str]:
    """(parent, attribute) of the model's stack of decoder layers: `model.layers` in
    Llama, Mistral, Qwen2, Gemma3; `transformer.h` in Falcon and GPT-2 style models."""
    n = model.config.num_hidden_layers
    for parent_name in ("model", "transformer", "gpt_neox", "decoder"):
        parent = getattr(model, parent_name, None)
        for attr in ("layers", "h", "blocks"):
            stack = getattr(parent, attr, None)
            if isinstance(stack, torch.nn.ModuleList) and len(stack) == n:
                return parent, attr
    arch = ", ".join(model.config.architectures or [type(model).__name__])
    raise ValueError(f"student_kind='pruned' cannot find the decoder layers of {arch}; "
                     "use student_kind='config' or 'checkpoint' for this teacher")


def prune_layers(model, n_keep: int):
    """Drop decoder layers in place, keeping evenly spaced ones; fix the config to match."""
    parent, attr = decoder_layers(model)
    layers = getattr(parent, attr)
    keep = keep_layers(len(layers), n_keep)
    setattr(parent, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    for new_idx, layer in enumerate(getattr(parent, attr)):
        # The KV cache is indexed by layer_idx (self_attn in Llama, self_attention in
        # Falcon); stale indices break generation.
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_idx
    keep_in_config(model.config, keep)
    return model


def keep_in_config(cfg, keep: list[int]) -> None:
    """A model config cut to the kept layers (their count, and per-layer attention types)."""
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    cfg.num_hidden_layers = len(keep)


def weight_files(path: str, load: dict | None = None) -> list[Path]:
    """The teacher's safetensors files: a local folder's, or the hub's at the pinned revision
    (from the cache when there). Pickled weights are never read."""
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path, revision=(load or {}).get("revision"),
                                        allow_patterns=["*.safetensors", "*.json"]))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights to build a pruned student from")
    return files


def load_pruned(teacher_path: str, n_keep: int | None = None, load: dict | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """The teacher pruned to n_keep evenly spaced layers (default half), built from its config
    and filled with only the kept layers' tensors, read one at a time from safetensors in
    `dtype` on `device`: the whole teacher is never in memory (a 7B teacher pruned to 8 of
    32 layers reads ~1.9B parameters' worth, not 7B in float32). The same model as loading
    the teacher and prune_layers, tensor for tensor."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    load = dict(load or {})
    cfg = AutoConfig.from_pretrained(teacher_path, **load)
    keep = keep_layers(cfg.num_hidden_layers, n_keep or max(1, cfg.num_hidden_layers // 2))
    small = copy.deepcopy(cfg)
    keep_in_config(small, keep)
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(small, dtype=dtype,
                                                 trust_remote_code=load.get("trust_remote_code", False))
    parent, attr = decoder_layers(model)
    stack = next(name for name, m in model.named_modules() if m is getattr(parent, attr))

    def teacher_key(key: str) -> str:
        if not key.startswith(stack + "."):
            return key
        i, rest = key[len(stack) + 1:].split(".", 1)
        return f"{stack}.{keep[int(i)]}.{rest}"

    params = model.state_dict()
    wanted = {teacher_key(k): k for k in params}
    filled = set()
    with torch.no_grad():
        for f in weight_files(teacher_path, load):
            with safe_open(str(f), framework="pt", device=str(device)) as st:
                for key in st.keys():
                    if key in wanted:
                        params[wanted[key]].copy_(st.get_tensor(key))
                        filled.add(wanted[key])
    tied = {k for k in params if k not in filled and getattr(cfg, "tie_word_embeddings", False)
            and k.startswith("lm_head.")}
    if missing := sorted(set(params) - filled - tied):
        raise ValueError(f"{teacher_path}: the checkpoint lacks {len(missing)} tensors the pruned student needs "
                         f"(first: {missing[0]}); use student_kind='config' or 'checkpoint' for this teacher")
    model.tie_weights()
    return model.eval()


def load_folder(path, trust_remote_code: bool = False):
    """(model, tokenizer) of an HF folder: float32 on CPU, weights from safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"trust_remote_code": trust_remote_code}
    return (AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True, **kw),
            AutoTokenizer.from_pretrained(path, **kw))


def build_student(kind: str, teacher_path: str, layers: int | None = None, checkpoint: str | None = None,
                  trust_remote_code: bool = False, teacher_load: dict | None = None):
    """Return (model, tokenizer) in float32 on CPU. `teacher_load`: the teacher's pinned
    revision, for a hub teacher (Teacher.load_kwargs)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if kind not in STUDENT_KINDS:
        raise ValueError(f"student.kind='{kind}' is not one of {', '.join(STUDENT_KINDS)}")
    kw = {"trust_remote_code": trust_remote_code, **(teacher_load or {})}
    if kind == "checkpoint":
        if not checkpoint:
            raise ValueError("student.kind='checkpoint' needs student.checkpoint")
        return load_folder(checkpoint, trust_remote_code)
    tok = AutoTokenizer.from_pretrained(teacher_path, **kw)
    if kind == "pruned":
        return load_pruned(teacher_path, layers, kw), tok
    cfg = AutoConfig.from_pretrained(teacher_path, **kw)
    cfg.num_hidden_layers = layers or max(1, cfg.num_hidden_layers // 4)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[: cfg.num_hidden_layers]
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32), tok


def apply_lora(model, r: int, alpha: int, dropout: float):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


FOUR_BIT_TRAP = (
    "a 4-bit student ran an eval-mode or no-grad forward before or during training: on CPUs with "
    "AVX512-BF16 that repacks its weights and silently corrupts every later gradient. Train first, "
    "then evaluate the merged model (the pipeline does this)"
)


def qlora_compute_dtype(precision: str = "auto"):
    """The dtype nf4 layers compute in: bf16 on a GPU when training runs in bf16 (train.precision
    "bf16", or "auto" where bf16 is fast), as QLoRA does; fp32 otherwise and always on CPU, where
    bitsandbytes' bf16 path has not been checked against the dequantized reference
    (tests/student/test_qlora.py) and AVX512-BF16 repacking already needs a guard."""
    from teacher.hardware import bf16_is_fast

    on_gpu = torch.cuda.is_available()
    wants_bf16 = precision == "bf16" or (precision == "auto" and bf16_is_fast())
    return torch.bfloat16 if on_gpu and wants_bf16 else torch.float32


def quantize_nf4(model, work_dir: Path, trust_remote_code: bool = False, precision: str = "auto"):
    """QLoRA's base: `model` reloaded with its linear layers in bitsandbytes nf4 (double
    quantization, compute in qlora_compute_dtype(precision)); embeddings and the output head
    stay in fp32.

    On CPU the returned model refuses eval-mode or no-grad forwards (see FOUR_BIT_TRAP)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    work_dir = Path(work_dir)
    model.save_pretrained(work_dir, safe_serialization=True)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=qlora_compute_dtype(precision))
    q = AutoModelForCausalLM.from_pretrained(work_dir, quantization_config=quant, dtype=torch.float32,
                                             use_safetensors=True, trust_remote_code=trust_remote_code)
    # Gradient checkpointing would recompute forwards under no_grad; the student is small.
    q = prepare_model_for_kbit_training(q, use_gradient_checkpointing=False)
    if not torch.cuda.is_available():
        guard_4bit(q)
    return q


def guard_4bit(model):
    """Make an eval-mode or no-grad forward of `model` raise instead of corrupting it."""

    def refuse(module, args, kwargs):
        if not module.training or not torch.is_grad_enabled():
            raise RuntimeError(FOUR_BIT_TRAP)

    return model.register_forward_pre_hook(refuse, with_kwargs=True)


def is_4bit(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(getattr(model, "base_model", None), "is_loaded_in_4bit", False))


def export(model, tokenizer, out_dir: Path, full_precision_base=None) -> dict[str, Path]:
    """Write the student: `merged/`, a safetensors model that vLLM and transformers load;
    for a LoRA student also `adapter/` and `base/`, the (pruned) model the adapter was
    trained on, so that the adapter loads anywhere:

        base = AutoModelForCausalLM.from_pretrained("<student>/base")
        model = PeftModel.from_pretrained(base, "<student>/adapter")

    or load_adapted("<student>/adapter"). The adapter names its base as "../base", relative,
    so the folder moves whole; AutoPeftModelForCausalLM resolves that from the working
    directory, so run it from inside <student>/adapter or use one of the two above.

    A QLoRA adapter is merged into `full_precision_base()` (the same student in fp32), not
    into the 4-bit weights: the merged model and the base are then ordinary checkpoints.
    Everything is written into a temporary folder and renamed into place at the end
    (distill.artifacts.staged_folders): a killed export leaves none of these folders."""
    from peft import PeftModel

    from distill.artifacts import staged_folders
    from distill.run_folder import ADAPTER, BASE, MERGED

    out_dir = Path(out_dir)
    names = [MERGED]
    with staged_folders(out_dir) as stage:
        full = model
        if isinstance(model, PeftModel):
            names += [ADAPTER, BASE]
            if is_4bit(model):
                if full_precision_base is None:
                    raise ValueError("exporting a QLoRA student needs its full-precision base")
                base = full_precision_base()
            else:
                base = copy.deepcopy(model).unload()  # LoRA never changes the base's weights
            base.save_pretrained(stage / BASE, safe_serialization=True)
            tokenizer.save_pretrained(stage / BASE)
            model.save_pretrained(stage / ADAPTER, safe_serialization=True)
            _name_base(stage / ADAPTER, out_dir / BASE)
            full = merge_adapter(base, stage / ADAPTER)
        full.save_pretrained(stage / MERGED, safe_serialization=True)
        tokenizer.save_pretrained(stage / MERGED)
    return {n: out_dir / n for n in names}


def merge_adapter(base, adapter_dir: Path):
    """`base` (a full-precision model, changed in place) with the LoRA adapter saved in
    `adapter_dir` folded into its weights: an ordinary model with no peft layers."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


BASE_FROM_ADAPTER = "../base"


def _name_base(adapter_dir: Path, base_dir: Path) -> None:
    """Point the adapter's config at the base saved beside it, as a path relative to the
    adapter folder, so the student folder can move (an absolute path broke every load after
    a run folder was moved or copied to another machine); peft records whatever the model
    was loaded from (the unpruned teacher's folder, for a pruned student)."""
    assert base_dir.name == Path(BASE_FROM_ADAPTER).name
    cfg_file = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = BASE_FROM_ADAPTER
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def load_adapted(adapter_dir: str | Path, **kwargs):
    """The student with its LoRA adapter, from `<student>/adapter` wherever the folder now is:
    the base named in adapter_config.json, a relative one resolved against the adapter folder
    (peft's AutoPeftModelForCausalLM resolves it against the working directory instead)."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = Path(adapter_dir)
    base = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    if not Path(base).is_absolute() and (adapter_dir / base).is_dir():
        base = str((adapter_dir / base).resolve())
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, **kwargs)
    return PeftModel.from_pretrained(model, str(adapter_dir))
