"""Prompt formats: how an instruction becomes the exact text a teacher's engine receives.

Each format is data, copied from its model card:
  chat        the tokenizer's own chat template (SmolLM2, Qwen2.5, any model with one)
  llama2      Llama-2-chat: [INST] with a <<SYS>> block
  mistral     Mistral-Instruct: [INST] ... [/INST], no system turn
  falcon      Falcon-instruct: "User:" / "Falcon:" turns
  completion  a plain-text frame for base models, which continue text rather than chat

BOS once. vLLM tokenizes a text prompt with the tokenizer's special tokens on, so a
tokenizer that adds BOS itself (Llama-2, Mistral) would get a second one from any
template that writes `<s>` (both models' own chat templates do). `render` therefore
leaves the BOS to the tokenizer wherever the tokenizer adds it.
"""

from __future__ import annotations

from distill.settings import SettingError

SYSTEM = "You write short fables for children: a clear plot, simple words, and a moral at the end."

TEMPLATES = {
    "llama2": "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{instruction} [/INST]",
    "mistral": "[INST] {instruction} [/INST]",
    "falcon": "{system}\nUser: {instruction}\nFalcon:",
    "completion": "{instruction}\n\nHere is the fable.\n\n",
}
PROMPT_FORMATS = ("chat", *TEMPLATES)


def check_format(name: str) -> None:
    if name not in PROMPT_FORMATS:
        raise SettingError("prompt_format", f"{name!r} is not a prompt format; known: {', '.join(PROMPT_FORMATS)}")


def adds_bos(tokenizer) -> bool:
    """Whether tokenizing text (special tokens on, as vLLM does) puts BOS in front by itself."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def render(name: str, instruction: str, tokenizer) -> str:
    """The prompt text for one instruction; tokenized as vLLM does, it holds BOS at most once."""
    check_format(name)
    if name == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_format='chat' but the tokenizer has no chat template; "
                             f"pick one of {', '.join(TEMPLATES)}")
        text = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = TEMPLATES[name].format(system=SYSTEM, instruction=instruction)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and adds_bos(tokenizer):
        text = text[len(bos):]
    return text
