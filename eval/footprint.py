"""What distillation buys, measured: the report's headline.

For the distilled teacher and each of its students: parameters and bytes of weights on
disk, and tokens/s and peak memory when each is served alone by vLLM, one after another, with
the same engine settings, the same prompts and the same number of new tokens (`ignore_eos`,
so no writer stops early and looks fast). Each is served in a process of its own, so its peak
memory is that process tree's resident set, sampled; on a GPU the figure is the CUDA memory
torch reserved, which includes vLLM's KV-cache reservation (gpu_memory_utilization).

The headline itself (`headline`) is a pure function of these figures, the judge's summary
and the held-out KL: "the student keeps X% of the teacher's judge score at Y× the speed and
Z× less memory".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULT = "FOOTPRINT "  # the served process's result line (vLLM logs to stdout too)


def tensor_numels(folder: Path) -> dict[str, int]:
    """Every tensor's element count in a folder's safetensors files, read from their headers
    (no weights loaded)."""
    from safetensors import safe_open

    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            out.update({name: math.prod(st.get_slice(name).get_shape()) for name in st.keys()})
    return out


def weights(model: str, revision: str | None = None) -> dict:
    """Parameters and bytes of the safetensors weights in a model folder (or a hub model's
    cached snapshot), read from the files' headers; {} where no weights are on this machine."""
    folder = Path(model)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, revision=revision, local_files_only=True,
                                            allow_patterns=["*.safetensors", "*.json"]))
        except Exception:  # not cached here: the engine ran on another node
            return {}
    files = list(folder.glob("*.safetensors"))
    if not files:
        return {}
    return {"params": sum(tensor_numels(folder).values()), "weight_bytes": sum(f.stat().st_size for f in files)}


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def serve_once(model: str, prompts: list[list[int]], new_tokens: int, sampling: dict, engine: dict,
               env: dict | None = None, timeout_s: float = 1800) -> dict:
    """Serve `model` in a process of its own (`python -m eval.footprint`), write `new_tokens`
    for every prompt, and return its figures with the process tree's peak resident memory."""
    spec = json.dumps({"model": model, "prompts": prompts, "new_tokens": new_tokens, "sampling": sampling,
                       "engine": engine})
    proc = subprocess.Popen([sys.executable, "-m", "eval.footprint"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(spec, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"serving {model} for the footprint took over {timeout_s:.0f} s") from None
    finally:
        done.set()
        sampler.join()
    lines = [line for line in out.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise RuntimeError(f"serving {model} for the footprint failed (exit {proc.returncode}): {tail}")
    return {**json.loads(lines[-1][len(RESULT):]), "peak_rss_bytes": peak[0]}


def _serve(spec: dict) -> dict:
    """In the served process: start the engine, write, report."""
    t0 = time.perf_counter()
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=spec["model"], **spec["engine"])
    t1 = time.perf_counter()
    params = SamplingParams(max_tokens=spec["new_tokens"], ignore_eos=True, **spec["sampling"])
    outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in spec["prompts"]], params, use_tqdm=False)
    t2 = time.perf_counter()
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    result = {"tokens": tokens, "prompts": len(outs), "engine_start_s": t1 - t0, "generate_s": t2 - t1,
              "tokens_per_s": tokens / (t2 - t1) if t2 > t1 else None}
    try:
        import torch

        if torch.cuda.is_available():
            result["peak_gpu_bytes"] = int(torch.cuda.max_memory_reserved())
    except Exception:  # a torch without CUDA: host memory is the figure
        pass
    return result


def measure(cfg, run, starts=None) -> dict:
    """The footprint of the first distilled teacher and its students (RunConfig `cfg`,
    RunFolder `run`): each served once, counted in `starts`. A teacher that needs GPUs is
    served, with its students, by a Ray task holding as many GPUs as its engine spans; on
    CPU the driver serves them one after another, every core to each."""
    from distill.schema import read_rows, tokenizer_fingerprint
    from eval.writers import prompt_ids
    from student.initial import student_tokenizer
    from teacher.engine import cpu_env, student_engine_kwargs
    from teacher.prompts import heldout_prompts

    tr = next(t for t in cfg.teachers if cfg.objectives(t))
    teacher, fc = tr.model, cfg.eval
    rows = heldout_prompts(read_rows(run.teacher(tr.teacher), split="eval"))[: fc.footprint_prompts]
    stok = student_tokenizer(tr)
    context = max(len(r["prompt_token_ids"]) for r in rows) + fc.footprint_new_tokens
    base = student_engine_kwargs(context)
    gpus = teacher.tensor_parallel if teacher.gpu_memory_gib else 0
    env = cpu_env(tr.generation.kv_cache_gib, gpus)
    served = [(teacher.id, teacher.model_path(), [list(r["prompt_token_ids"]) for r in rows],
               {**base, **teacher.load_kwargs(), **({"tensor_parallel_size": gpus} if gpus > 1 else {})})]
    ids = prompt_ids(rows, stok, tokenizer_fingerprint(stok))
    served += [(f"{tr.teacher}-{o}", str(run.student(tr.teacher, o).merged), ids, base) for o in cfg.objectives(tr)]
    sampling = cfg.sampling
    one = serve_once
    if gpus:
        import ray

        one = lambda *a, **k: ray.get(ray.remote(num_gpus=gpus, num_cpus=1)(serve_once).remote(*a, **k))  # noqa: E731
    figures = []
    for label, model, prompts, engine in served:
        fig = one(model, prompts, fc.footprint_new_tokens, sampling, engine, env)
        if starts is not None:
            starts.add(fig["engine_start_s"])
        figures.append({"label": label, "model": model, **weights(model, engine.get("revision")), **fig})
    return {"settings": {"prompts": len(rows), "new_tokens": fc.footprint_new_tokens, "sampling": sampling,
                         "kv_cache_gib": int(env["VLLM_CPU_KVCACHE_SPACE"]), "gpus": gpus,
                         "dtype": base["dtype"], "max_model_len": context},
            "writers": figures}


def served_memory(fig: dict) -> int | None:
    """The memory a writer held while served: CUDA's where it ran on a GPU, else host RSS."""
    return fig.get("peak_gpu_bytes") or fig.get("peak_rss_bytes") or None


def headline(writers: list[dict]) -> dict:
    """The ratios of each student to the teacher (the first writer). Each writer: label,
    params, weight_bytes, tokens_per_s, memory (bytes), judge ({mean, low, high} or None), kl.
    A ratio is None where either side lacks its figure."""
    teacher, students = writers[0], writers[1:]

    def ratio(a, b):
        return a / b if a is not None and b else None

    out = []
    for s in students:
        judge_s, judge_t = (s.get("judge") or {}).get("mean"), (teacher.get("judge") or {}).get("mean")
        out.append({"label": s["label"],
                    "judge_kept": ratio(judge_s, judge_t),
                    "speedup": ratio(s.get("tokens_per_s"), teacher.get("tokens_per_s")),
                    "memory_less": ratio(teacher.get("memory"), s.get("memory")),
                    "params_less": ratio(teacher.get("params"), s.get("params")),
                    "disk_less": ratio(teacher.get("weight_bytes"), s.get("weight_bytes"))})
    return {"teacher": teacher["label"], "students": out}


def sentence(h: dict) -> str:
    """The headline in words, for the first student (the distilled one)."""
    if not h["students"]:
        return ""
    s = h["students"][0]

    def x(v, fmt):
        return format(v, fmt) if v is not None else "an unmeasured"

    return (f"{s['label']} keeps {x(s['judge_kept'], '.0%')} of {h['teacher']}'s judge score at "
            f"{x(s['speedup'], '.1f')}× the speed and {x(s['memory_less'], '.1f')}× less memory "
            f"({x(s['params_less'], '.1f')}× fewer parameters).")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m eval.footprint",
                            description="serve one model for the footprint: a JSON spec on stdin, "
                                        "one result line on stdout (eval.footprint.serve_once)").parse_args(argv)
    print(RESULT + json.dumps(_serve(json.loads(sys.stdin.read()))), flush=True)
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m eval.footprint")())
