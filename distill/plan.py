"""What a run will do and cost, from its config alone: no weights are loaded.

    python -m distill.pipeline --config configs/production.toml --dry-run

Stages in order, the resources each asks for, the disk the stored top-k takes, and a
GPU-hours estimate. Model sizes come from each teacher's config.json where one is on
disk (a local folder, models/, or the hub cache; nothing is downloaded), else from the
registry. Throughputs are stated assumptions, printed with the plan, not measurements
of the cluster it will run on.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.config import RunConfig, TeacherRun
from teacher.hardware import GPU_SPECS

# Stored top-k: 1.94 bytes per (id, logprob) entry measured on SmolLM2's top-20 (BENCHMARKS.md,
# storage section); rounded up.
TOPK_BYTES_PER_ENTRY = 2.0
# vLLM decoding a 7B-class model in bf16 on one H100 with a full batch: an assumption (vLLM does
# not run on the lent GPU machine, so it is not measured here); override with --assume-gen-tok-s.
GEN_TOKENS_PER_GPU_S = 2500.0
# A LoRA KD step of Qwen2.5-0.5B (494M parameters), 8 x 512 tokens in 0.132 s on one H200
# (benchmarks/results/gpu_step-2026-11-27.json): about 31,000 tokens/s; a student of P
# parameters is taken to train at 31,000 x 494M / P tokens/s.
TRAIN_TOKENS_PER_GPU_S_AT_05B = 31_000.0
REFERENCE_PARAMS = 494e6
# Other GPUs (teacher/hardware.py GPU_SPECS, NVIDIA's datasheets): training scales with dense
# bf16 TFLOPS from the H200 measured here, decoding with memory bandwidth from the H100 assumption.
GEN_REFERENCE_GPU, TRAIN_REFERENCE_GPU = "H100", "H200"
# Judge requests: the rubric file (~4 characters a token) plus the prompt (~120 tokens) and
# the fable; "ensemble" adds a completions request per fable that reads the fable alone.
PROMPT_TOKENS, CHARS_PER_TOKEN = 120, 4
# The KD sweep in BENCHMARKS.md (Qwen2.5-Coder 1.5B -> 0.5B, the default run's 24 fables): the
# held-out KL fell 6.2% after 7,200 trained teacher tokens (16 steps x 2 x ~224) and 8.9% after
# 21,500 (48 steps). A line in log(tokens) through those two points is the crude slope the
# dry run extrapolates a target drop from; two points on one student, so an order of magnitude.
SWEEP_POINTS = ((7_200, 0.062), (21_500, 0.089))


def gpu_rates(gpu: str, gen_tok_s: float = GEN_TOKENS_PER_GPU_S) -> dict:
    """Generated tokens/s per GPU and training tokens/s at 0.5B on `gpu` ("" = the references)."""
    if not gpu:
        return {"gen": gen_tok_s, "train": TRAIN_TOKENS_PER_GPU_S_AT_05B}
    spec = GPU_SPECS[gpu]
    return {"gen": gen_tok_s * spec["gb_s"] / GPU_SPECS[GEN_REFERENCE_GPU]["gb_s"],
            "train": TRAIN_TOKENS_PER_GPU_S_AT_05B * spec["bf16_tflops"] / GPU_SPECS[TRAIN_REFERENCE_GPU]["bf16_tflops"]}


def tokens_for_kl_drop(target: float) -> float:
    """Trained teacher tokens for a held-out KL drop of `target` (0.3 = 30%), on the sweep's line."""
    import math

    (t0, d0), (t1, d1) = SWEEP_POINTS
    slope = (d1 - d0) / math.log(t1 / t0)
    return t0 * math.exp((target - d0) / slope)


def params_from_config(c: dict) -> tuple[int, float]:
    """(layers, parameters) of a decoder-only transformer from its HF config, to within a few %."""
    h = c.get("hidden_size") or c.get("n_embd")
    layers = c.get("num_hidden_layers") or c.get("n_layer")
    heads = c.get("num_attention_heads") or c.get("n_head")
    kv = c.get("num_key_value_heads") or (1 if c.get("multi_query") else heads)
    gated = c.get("model_type") not in ("falcon", "gpt2", "gpt_neox")
    inter = c.get("intermediate_size") or c.get("ffn_hidden_size") or 4 * h
    attn = 2 * h * h + 2 * h * (h * kv // heads)
    mlp = (3 if gated else 2) * h * inter
    embed = c["vocab_size"] * h * (1 if c.get("tie_word_embeddings", True) else 2)
    return layers, float(layers * (attn + mlp) + embed)


def _local_config(tr: TeacherRun) -> dict | None:
    t = tr.model
    try:
        if t.source != "hub":
            return json.loads((Path(t.model_path()) / "config.json").read_text())
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(t.hub_id, "config.json", revision=t.revision)
        return json.loads(Path(hit).read_text()) if isinstance(hit, str) else None
    except (OSError, ValueError):
        return None


def teacher_shape(tr: TeacherRun) -> dict:
    c = _local_config(tr)
    if c:
        layers, params = params_from_config(c)
        return {"layers": layers, "params": params, "from": "config.json"}
    if tr.model.params_b and tr.model.layers:
        return {"layers": tr.model.layers, "params": tr.model.params_b * 1e9, "from": "registry"}
    return {"layers": 0, "params": 0.0, "from": "unknown"}


def student_params(tr: TeacherRun, shape: dict) -> float:
    """Parameters of the student as the config builds it (pruned: the kept share of the layers)."""
    t = tr.train
    if t.student_kind == "checkpoint" or not shape["layers"]:
        return 0.0
    kept = t.student_layers or max(1, shape["layers"] // (2 if t.student_kind == "pruned" else 4))
    return shape["params"] * kept / shape["layers"]


def _rubric_tokens(cfg: RunConfig) -> int:
    from eval.checklist import messages as checklist_messages
    from eval.rubric import rubric_for

    rubric = rubric_for(cfg.judge)
    if rubric.checklist:  # a request per question: the longest one, as an upper bound
        longest = max((q for _, q, _ in rubric.checklist), key=len) + "\n" + rubric.yes_no
        return sum(len(m["content"]) for m in checklist_messages(rubric, "", "", longest)) // CHARS_PER_TOKEN
    if rubric.pair:  # a request per criterion and order: the longest question
        from eval.pairwise import messages as pair_messages, questions

        longest = max((q for _, q in questions(rubric)), key=len)
        return sum(len(m["content"]) for m in pair_messages(rubric, "", "", "", longest)) // CHARS_PER_TOKEN
    return sum(len(m["content"]) for m in rubric.messages("", "")) // CHARS_PER_TOKEN


def judge_load(cfg: RunConfig) -> dict:
    """Verdicts, requests and tokens the judge stage makes, counted as eval/protocol.py builds
    its items: each teacher's and student's held-out fables, a copy of every teacher fable
    (and of judge.control_train_fables training fables per distilled teacher) per
    judge.controls (at most: a kind that cannot change a fable makes no copy), every saved KD
    checkpoint but the last (judge.checkpoints), and the student of several teachers (`mix`)."""
    j = cfg.judge
    if not j.enabled:
        return {"verdicts": 0, "requests": 0, "input_tokens": 0, "output_tokens": 0, "student_fables": 0,
                "checkpoint_fables": 0}
    teacher = student = checkpoint = last = 0
    distilled = [tr for tr in cfg.teachers if cfg.objectives(tr)]
    for tr in cfg.teachers:
        prompts = min(j.prompts, tr.n_heldout)
        teacher += prompts * min(j.samples, tr.generation.eval_samples)
        student += prompts * j.samples * len(cfg.objectives(tr))
    if cfg.mix:  # the student of several teachers, on the first mixed teacher's judged prompts
        from distill.train_stage import mix_teacher

        first = mix_teacher(cfg)
        student += min(j.prompts, first.n_heldout) * j.samples
    if distilled and j.checkpoints:  # the first distilled teacher's KD student (eval/protocol.py)
        tr = distilled[0]
        saved = tr.train.steps // tr.train.save_steps if tr.train.save_steps else 0
        checkpoint = min(j.prompts, tr.n_heldout) * j.samples * saved
        # The last checkpoint is the finished student: its fables and verdicts are the student's own.
        last = min(j.prompts, tr.n_heldout) * j.samples if saved else 0
    if j.controls:  # the distilled teachers' training fables judged as control sources
        teacher += sum(min(j.control_train_fables, tr.n_train) for tr in distilled)
    verdicts = teacher * (1 + len(j.controls)) + student + checkpoint
    asked = verdicts - last
    fable = max(j.max_new_tokens, max(tr.generation.max_new_tokens for tr in cfg.teachers))
    rubric = _rubric_tokens(cfg)
    if j.mode == "checklist":  # one request per question (all elements known) and the age question, one token out
        from eval.rubric import rubric_for

        per_fable = len(rubric_for(j).checklist) + 1 + (1 if j.fluency_gate else 0)
        input_tokens = asked * per_fable * (rubric + PROMPT_TOKENS + fable)
        return {"verdicts": verdicts, "requests": asked * per_fable, "input_tokens": input_tokens,
                "output_tokens": asked * per_fable, "student_fables": student, "checkpoint_fables": checkpoint - last}
    if j.mode == "likelihood":  # the fable alone, and after its prompt with a close and with a next line, echoed;
        from eval.likelihood import LIKELIHOOD_CRITERIA  # the other criteria's questions and the age question, one
        from eval.rubric import rubric_for  # token out

        asks = sum(1 for c, _, _ in rubric_for(j).checklist if c not in LIKELIHOOD_CRITERIA) + 1
        input_tokens = asked * (asks * (rubric + PROMPT_TOKENS + fable) + 2 * PROMPT_TOKENS + 3 * fable)
        return {"verdicts": verdicts, "requests": asked * (asks + 3), "input_tokens": input_tokens,
                "output_tokens": asked * (asks + 3), "student_fables": student, "checkpoint_fables": checkpoint - last}
    if j.mode == "pairwise":  # each criterion in both orders, two fables each, and the age question (at most:
        from eval.rubric import rubric_for  # the reference against itself asks no pair)

        pairs = 2 * len(rubric_for(j).criteria)
        per_fable = pairs + 1 + (1 if j.fluency_gate else 0)
        input_tokens = asked * (pairs * (rubric + PROMPT_TOKENS + 2 * fable) + (per_fable - pairs) * (rubric + PROMPT_TOKENS + fable))
        return {"verdicts": verdicts, "requests": asked * per_fable, "input_tokens": input_tokens,
                "output_tokens": asked * per_fable, "student_fables": student, "checkpoint_fables": checkpoint - last}
    per_fable = 2 if j.mode == "ensemble" else 1
    input_tokens = asked * (rubric + PROMPT_TOKENS + fable) + (asked * fable if per_fable == 2 else 0)
    return {"verdicts": verdicts, "requests": asked * per_fable, "input_tokens": input_tokens,
            "output_tokens": asked * j.max_tokens, "student_fables": student, "checkpoint_fables": checkpoint - last}


# Seconds a footprint engine holds its GPUs: a 7B engine's start on a GPU node (load, CUDA
# graphs) plus its few hundred tokens. An allowance, not measured here.
FOOTPRINT_ENGINE_S = 180


def student_stages(tr, objective: str, label: str, shape: dict, rates: dict, gpu: bool, heldout: int) -> tuple[dict, dict]:
    """One student's train and evaluate stages, priced from tr's [train] settings (a teacher's
    own student, or the student of several teachers under `label`)."""
    t = tr.train
    sp = student_params(tr, shape)
    train_tokens = t.steps * t.batch_size * t.max_len
    rate = rates["train"] * REFERENCE_PARAMS / sp if sp else 0.0
    h = train_tokens / rate / 3600 if rate and gpu else 0.0
    resources = "1 GPU" if gpu else "CPU"
    return ({"stage": f"train-{objective}", "teacher": label, "student": t.student_kind, "student_params": sp,
             "quantization": t.quantization, "lora_r": t.lora_r, "tokens": train_tokens, "resources": resources,
             # the exported student: float32 base/ and merged/ (adapters and checkpoints are small)
             "disk_bytes": 2 * 4 * sp, "gpu_hours": h},
            {"stage": f"evaluate-{objective}", "teacher": label, "rows": heldout, "resources": resources,
             "gpu_hours": 0.0})


def build(cfg: RunConfig, gen_tok_s: float = GEN_TOKENS_PER_GPU_S) -> dict:
    stages, gpu_h, disk = [], 0.0, 0.0
    rates = gpu_rates(cfg.cluster.gpu, gen_tok_s)
    gen_tok_s = rates["gen"]
    for tr in cfg.teachers:
        g = tr.generation
        tp = tr.model.tensor_parallel
        rows = tr.n_train * g.train_samples + tr.n_heldout * g.eval_samples
        tokens = rows * g.max_new_tokens  # an upper bound: fables may stop earlier
        topk_bytes = tokens * g.top_k * TOPK_BYTES_PER_ENTRY
        hours = tokens / gen_tok_s / 3600 * tp if tr.model.gpu_memory_gib else 0.0
        shape = teacher_shape(tr)
        weights = shape["params"] * 2 if tr.model.source == "hub" else 0.0  # bf16 safetensors in the hub cache
        stages.append({"stage": "generate", "teacher": tr.teacher, "model": tr.model.hub_id or tr.model.path,
                       "revision": tr.model.revision if tr.model.source == "hub" else "", "rows": rows,
                       "max_tokens": tokens, "topk_disk_bytes": topk_bytes, "disk_bytes": topk_bytes + weights,
                       "resources": f"{tp} GPU x {g.replicas} engine(s) ({tr.model.gpu_memory_gib:g} GiB)"
                       if tr.model.gpu_memory_gib else f"CPU x {g.replicas} engine(s)", "teacher_params": shape["params"], "gpu_hours": hours})
        gpu_h, disk = gpu_h + hours, disk + topk_bytes
        for objective in cfg.objectives(tr):
            train, evaluate = student_stages(tr, objective, tr.teacher, shape, rates, bool(tr.model.gpu_memory_gib),
                                             tr.n_heldout)
            stages += [train, evaluate]
            gpu_h += train["gpu_hours"]
    if cfg.mix:  # the student of several teachers (distill/train_stage.py stage_train_mix)
        from distill.train_stage import MIX, mix_teacher

        tr = mix_teacher(cfg)
        mixed = [r for r in cfg.teachers if r.teacher in cfg.mix]
        train, evaluate = student_stages(tr, "kd", MIX, teacher_shape(tr), rates,
                                         any(r.model.gpu_memory_gib for r in mixed), sum(r.n_heldout for r in mixed))
        stages += [train, evaluate]
        gpu_h += train["gpu_hours"]
    j = cfg.judge
    students = sum(len(cfg.objectives(tr)) for tr in cfg.teachers)
    load = judge_load(cfg)
    if students:  # every student's fables: the report's and, with the judge on, the judged ones and the checkpoints'
        completions = load["student_fables"] + load["checkpoint_fables"]
        reports = cfg.eval.student_samples * (students + sum(1 for tr in cfg.teachers if cfg.objectives(tr)))
        tokens = completions * j.max_new_tokens + reports * cfg.eval.max_new_tokens
        h = tokens / gen_tok_s / 3600 if any(tr.model.gpu_memory_gib for tr in cfg.teachers) else 0.0
        stages.append({"stage": "write", "student_completions": completions + reports, "max_tokens": tokens,
                       "resources": "1 GPU per base student" if h else "CPU", "gpu_hours": h})
        gpu_h += h
    if j.enabled:
        writers = sum(1 + len(cfg.objectives(tr)) for tr in cfg.teachers)
        where = j.base_url or ("OPENAI_BASE_URL" if j.model not in _embedded() else f"local vLLM server of {j.model}")
        price = cfg.cluster.judge_usd_per_mtok
        api = (load["input_tokens"] * price.get("input", 0) + load["output_tokens"] * price.get("output", 0)) / 1e6
        stages.append({"stage": "judge", "writers": writers, **load, "model": j.model, "endpoint": where,
                       "mode": j.mode, "resources": f"endpoint {where}", "gpu_hours": 0.0,
                       "api_usd": api if price else None})
    distilled = [tr for tr in cfg.teachers if cfg.objectives(tr)]
    if cfg.eval.footprint and distilled:  # the headline: the first distilled teacher and its students served alike
        tr = distilled[0]
        engines = 1 + len(cfg.objectives(tr))
        tokens = engines * cfg.eval.footprint_prompts * cfg.eval.footprint_new_tokens
        gpus = tr.model.tensor_parallel if tr.model.gpu_memory_gib else 0
        stages.append({"stage": "footprint", "teacher": tr.teacher, "engines": engines, "max_tokens": tokens,
                       "resources": f"{gpus} GPU, one engine at a time" if gpus else "CPU, one engine at a time",
                       # dominated by the engines' starts, not by the tokens
                       "gpu_hours": engines * gpus * FOOTPRINT_ENGINE_S / 3600})
        gpu_h += stages[-1]["gpu_hours"]
    stages.append({"stage": "compare", "resources": "CPU", "gpu_hours": 0.0})
    stages.append({"stage": "report", "resources": "CPU", "gpu_hours": 0.0})
    usd = cfg.cluster.usd_per_gpu_hour.get(cfg.cluster.gpu)
    for st in stages:
        st["usd"] = st["gpu_hours"] * usd + (st.get("api_usd") or 0.0) if usd is not None else st.get("api_usd")
    trained = max((st["tokens"] for st in stages if st["stage"].startswith("train-")), default=0)
    return {"name": cfg.name, "stages": stages, "topk_disk_bytes": disk, "gpu_hours": gpu_h,
            "disk_bytes": sum(st.get("disk_bytes", 0.0) for st in stages), "gpu": cfg.cluster.gpu,
            "usd": sum(st["usd"] or 0.0 for st in stages) if usd is not None or cfg.cluster.judge_usd_per_mtok else None,
            "trained_tokens": trained, "tokens_for_30pct": tokens_for_kl_drop(0.30),
            "assumptions": {"generation_tokens_per_gpu_s": gen_tok_s,
                            "train_tokens_per_gpu_s_at_0.5B": rates["train"],
                            "topk_bytes_per_entry": TOPK_BYTES_PER_ENTRY}}


def _embedded() -> set[str]:
    from teacher.registry import EMBEDDED

    return set(EMBEDDED)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return ""


def render(plan: dict) -> str:
    lines = [f"plan of run '{plan['name']}' (nothing loaded, nothing run)", ""]
    for s in plan["stages"]:
        who = f" [{s['teacher']}]" if s.get("teacher") else ""
        detail = []
        if s["stage"] == "generate":
            rev = f"@{s['revision'][:12]}" if s["revision"] else ""
            detail = [f"{s['model']}{rev}", f"{s['rows']} fables", f"<= {s['max_tokens']:,} tokens",
                      f"top-k on disk ~{_size(s['topk_disk_bytes'])}"]
            if s["teacher_params"]:
                detail.append(f"teacher ~{s['teacher_params'] / 1e9:.1f}B")
        elif s["stage"].startswith("train-"):
            size = f" ~{s['student_params'] / 1e9:.2f}B" if s["student_params"] else ""
            q = "QLoRA nf4" if s["quantization"] == "nf4" else "LoRA"
            detail = [f"{s['student']} student{size}", f"{q} r={s['lora_r']}", f"{s['tokens']:,} tokens"]
        elif s["stage"].startswith("evaluate-"):
            detail = [f"{s['rows']} held-out prompts"]
        elif s["stage"] == "write":
            detail = [f"{s['student_completions']:,} student completions (LoRA on one engine per base)",
                      f"<= {s['max_tokens']:,} tokens"]
        elif s["stage"] == "footprint":
            detail = [f"{s['engines']} engines served alike for the headline", f"{s['max_tokens']:,} tokens"]
        elif s["stage"] == "judge":
            detail = [f"{s['verdicts']:,} verdicts by {s['model']} ({s['mode']}, {s['requests']:,} requests, "
                      f"~{s['input_tokens'] / 1e6:.1f}M tokens in, <= {s['output_tokens'] / 1e6:.1f}M out)"]
        if s.get("disk_bytes"):
            detail.append(f"disk ~{_size(s['disk_bytes'])}")
        gpu = f"  ~{s['gpu_hours']:.2f} GPU-h" if s["gpu_hours"] else ""
        cost = f"  ~${s['usd']:,.0f}" if s.get("usd") else ""
        lines.append(f"  {s['stage']:<13}{who:<24} {s['resources']:<28} {', '.join(detail)}{gpu}{cost}")
    a = plan["assumptions"]
    on = f" on {plan['gpu']}" if plan["gpu"] else ""
    cost = f"   cost: ~${plan['usd']:,.0f}" if plan.get("usd") is not None else "   cost: set [cluster] gpu and prices"
    lines += ["", f"stored top-k: ~{_size(plan['topk_disk_bytes'])}   disk: ~{_size(plan['disk_bytes'])}   "
                  f"GPU-hours{on}: ~{plan['gpu_hours']:.2f}{cost}",
              f"assumed: vLLM {a['generation_tokens_per_gpu_s']:,.0f} generated tokens/s per GPU{on} (2,500 on an H100, "
              f"not measured here; other GPUs by memory bandwidth, NVIDIA datasheets); training "
              f"{a['train_tokens_per_gpu_s_at_0.5B']:,.0f} tokens/s at 0.5B parameters (31,000 measured on an H200, "
              "BENCHMARKS.md; other GPUs by bf16 TFLOPS), scaled by student size; "
              f"{a['topk_bytes_per_entry']} bytes per stored top-k entry (measured)",
              f"held-out KL -30%: ~{plan['tokens_for_30pct'] / 1e6:.0f}M trained teacher tokens on the KD sweep's slope "
              f"(BENCHMARKS.md; two points on one 0.5B student: an order of magnitude); this run trains "
              f"{plan['trained_tokens'] / 1e6:.1f}M per student"]
    return "\n".join(lines)
