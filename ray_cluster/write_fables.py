"""Students' fables as one Ray Data LLM job per base model: the base student's engine starts
once and every trained student and checkpoint of it is served as a LoRA adapter (vLLM's
LoRA; PunicaWrapperCPU on CPU), instead of one merged model per writer in transformers.

Called by the pipeline's write stage (eval/writers.py says who writes what) and by the
judge when a fables file is missing. Each writer's fables are written atomically as soon
as all of them are back, so a killed job keeps every writer it finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from distill.redact import redact
from distill.run_folder import StudentFables
from ray_cluster.cluster import EngineStarts
from ray_cluster.generation_config import GenerationConfig

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class Writer:
    """One student writing: `samples` completions of each prompt (exact token ids)."""

    label: str
    out: Path  # the StudentFables record, written when every completion is back
    model: str  # the engine's model folder
    adapter: str | None  # a LoRA adapter folder on `model`; None: `model` itself writes
    prompts: list[list[int]]
    samples: int
    max_new_tokens: int


def written(out: Path, prompts: int, samples: int) -> bool:
    """Whether the fables record at `out` holds `samples` completions of at least `prompts`
    prompts. The judged prompts are always the first judge.prompts held-out ones, so a record
    of more is good for fewer; one of fewer (a re-judge with a larger judge.prompts or
    judge.samples) is written again, whole."""
    if not out.exists():
        return False
    got = StudentFables.read(out).samples
    return len(got) >= samples and all(len(texts) >= prompts for texts in got[:samples])


def check_adapter(w: Writer) -> None:
    """A missing model or an incomplete adapter stops the stage here, naming it, before any
    engine starts (an engine that cannot load its model is restarted by Ray without end)."""
    if not (Path(w.model) / "config.json").is_file():
        raise FileNotFoundError(f"{w.label}: no model at {w.model} (config.json missing); "
                                "delete the student's folder and rerun to train it again")
    if w.adapter is None:
        return
    missing = [f for f in ADAPTER_FILES if not (Path(w.adapter) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{w.label}: LoRA adapter {w.adapter} lacks {', '.join(missing)}; "
                                "delete the student's folder and rerun to train it again")


def write(writers: list[Writer], sampling: dict, gen: GenerationConfig, teacher, lora_rank: int,
          run_pass=None, starts: EngineStarts | None = None) -> list[str]:
    """Every writer whose record is missing, one engine per base model (counted in `starts`).
    Returns the labels written. `teacher` is the registry entry whose resources a student
    engine asks for (its GPU or CPU bundle, one rank); `run_pass(model, items, adapters)`
    replaces the Ray job in tests."""
    starts = starts if starts is not None else EngineStarts()
    todo = [w for w in writers if not written(w.out, len(w.prompts), w.samples)]
    for w in todo:
        check_adapter(w)
    for model in dict.fromkeys(w.model for w in todo):
        group = [w for w in todo if w.model == model]
        adapters = sorted({w.adapter for w in group if w.adapter})
        items = [{"task": json.dumps([i, s, j]), "tokenized_prompt": ids, "adapter": w.adapter or "",
                  "sampling": {**sampling, "max_tokens": w.max_new_tokens}}
                 for i, w in enumerate(group) for s in range(w.samples) for j, ids in enumerate(w.prompts)]
        texts = {i: [[None] * len(w.prompts) for _ in range(w.samples)] for i, w in enumerate(group)}
        left = {i: w.samples * len(w.prompts) for i, w in enumerate(group)}
        for r in starts.timed((run_pass or ray_pass(teacher, gen, lora_rank))(model, items, adapters)):
            i, s, j = json.loads(r["task"])
            if r["error"]:
                what = f"LoRA adapter {group[i].adapter}" if group[i].adapter else f"model {model}"
                raise RuntimeError(f"{group[i].label}: the engine failed on {what}: {r['error']}")
            if r["text"] is None:
                raise RuntimeError(f"{group[i].label}: the engine returned no text and no error")
            texts[i][s][j] = r["text"]
            left[i] -= 1
            if not left[i]:
                StudentFables(label=group[i].label, samples=texts[i]).write(group[i].out)
    return [w.label for w in todo]


def ray_pass(teacher, gen: GenerationConfig, lora_rank: int):
    """The real engine: a Ray Data LLM pipeline over one base model, streaming rows back."""

    def run(model: str, items: list[dict], adapters: list[str]):
        import ray
        from ray.data.llm import build_processor

        from ray_cluster.cluster import (bounded, connect, engine_failure, engine_processor_config, releasing_engines,
                                         request_started)
        from teacher import engine

        cluster = connect()
        kwargs = engine.student_engine_kwargs(gen.max_model_len, lora_rank if adapters else 0,
                                              max(1, min(len(adapters), 8)), gen.trust_remote_code)
        config = engine_processor_config(replace(teacher, engine={}), model, kwargs, gen.batch_size, gen.kv_cache_gib,
                                         cluster["gpus"], replicas=1, should_continue_on_error=True)

        def pre(row):
            # Every row names its model: the engine's own for the base (no LoRA), else the
            # adapter's folder. A batch mixing rows with and without the key gives the ones
            # without it None, which the engine took for an adapter and wrote nothing.
            return {"tokenized_prompt": row["tokenized_prompt"], "sampling_params": row["sampling"],
                    "task": row["task"], "model": row["adapter"] or model}

        def post(row):
            error = row.get("__inference_error__")
            return {"task": row["task"], "text": "" if error else row["generated_text"],
                    "error": redact(str(error))[:2000] if error else "", "started": request_started(row)}

        light = {"num_cpus": 0.25}  # as in ray_cluster/generate.py: never hold the engine's CPU
        processor = bounded(build_processor(config, preprocess=pre, postprocess=post, preprocess_map_kwargs=light,
                                            postprocess_map_kwargs=light))
        started = time.time()
        try:
            with releasing_engines():
                yield from processor(ray.data.from_items(items)).iter_rows()
        except ray.exceptions.RayError as e:  # the engine died past its restarts
            raise engine_failure(e, f"the student engine on {model}", started) from None

    return run
