"""Measurement: the judge model's own likelihoods as criterion inputs, on the judge's controls.

    .venv/bin/python -m benchmarks.judge_likelihood runs/default models/qwen2.5-coder-0.5b out.json [per-writer limit]
    .venv/bin/python -m benchmarks.judge_likelihood tf models/qwen2.5-coder-0.5b out.json 30   # the TinyFabulist sample

For every held-out teacher fable of a finished run (or of ../shared/data/tinyfabulist) and
its control copies (eval/controls.py), three prompt-logprob passes through vLLM: the fable's
nats/token alone (u), after its prompt as plain text (p), and after its prompt in the chat
template (c, with the end-of-turn token's logprob after it). It prints, per control, how often
each measure put the real fable above its copy. After GPTScore (arXiv 2302.04166) and
BARTScore (arXiv 2106.11520). The prototype of `judge.mode = "likelihood"` (eval/likelihood.py),
which reads u and p through a served judge; what only this script measures is the chat
template's c and P(end of turn), candidates for the cut-short control not yet in the mode.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

MEASURES = {"u (alone)": lambda it: -it["u"], "p (after prompt)": lambda it: -it["p"],
            "c (chat)": lambda it: -it["c"], "PMI u-p": lambda it: it["u"] - it["p"], "P(end)": lambda it: it["end"]}


def real_items(source: str, limit: int) -> list[dict]:
    from eval.protocol import _item

    items = []
    if source == "tf":
        from eval.tinyfabulist import read_fables, tinyfabulist_elements

        for path in sorted(glob.glob("../shared/data/tinyfabulist/fables-*.jsonl")):
            items += [{**f, "prompt_id": f["hash"], "sample": 0, "role": "teacher", **tinyfabulist_elements(f["prompt"])}
                      for f in read_fables(path)]
    else:
        from distill import artifacts
        from distill.config import from_dict
        from distill.run_folder import RunFolder
        from distill.schema import read_rows

        run = RunFolder(Path(source))
        for tr in from_dict(artifacts.read_json(run.config)).teachers:
            items += [_item(r, f"{tr.teacher} (teacher)", "teacher", tr.teacher, r["sample_index"], r["text"])
                      for r in read_rows(run.teacher(tr.teacher), split="eval")]
    items = [it for it in items if it["fable"].strip()]
    per: dict[str, int] = defaultdict(int)
    kept = []
    for it in items:
        per[it["model"]] += 1
        if not limit or per[it["model"]] <= limit:
            kept.append(it)
    return kept


def score(items: list[dict], model: str) -> None:
    """Adds u, p, c and end to every item, in place (one batched vLLM pass)."""
    from teacher.engine import cpu_env
    from teacher.hardware import engine_dtype

    os.environ.update(cpu_env())  # the product's engine settings for a CPU, set before vLLM is imported
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=model, dtype=engine_dtype(), enforce_eager=True, max_model_len=2048)
    tok = llm.get_tokenizer()
    end = tok.convert_tokens_to_ids("<|im_end|>")  # the Qwen chat template's end of turn
    reqs, meta = [], []
    for n, it in enumerate(items):
        fids = tok(it["fable"].strip(), add_special_tokens=False)["input_ids"]
        chat = tok(tok.apply_chat_template([{"role": "user", "content": it["prompt"].strip()}], tokenize=False,
                                           add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        plain = tok(it["prompt"].strip() + "\n\n", add_special_tokens=False)["input_ids"]
        for kind, prefix, suffix in (("u", [], []), ("c", chat, [end]), ("p", plain, [])):
            reqs.append(TokensPrompt(prompt_token_ids=prefix + fids + suffix))
            meta.append((n, kind, max(len(prefix), 1), len(prefix) + len(fids)))
    outs = llm.generate(reqs, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
    for (n, kind, a, b), o in zip(meta, outs):
        ids, lps = o.prompt_token_ids, o.prompt_logprobs
        vals = [lps[i][ids[i]].logprob for i in range(a, b)]
        items[n][kind] = -sum(vals) / len(vals)
        if kind == "c":
            items[n]["end"] = lps[b][ids[b]].logprob


def accuracies(items: list[dict]) -> dict[str, dict[str, tuple[float, int]]]:
    """Per control kind and measure: the share of pairs with the real fable above its copy
    (ties half; eval/controls.py:control_accuracy) and the number of pairs."""
    from eval.controls import control_accuracy

    kinds = dict.fromkeys(it["control"] for it in items if it["role"] == "control")
    return {k: {m: (r["accuracy"], r["pairs"]) for m, f in MEASURES.items()
                for r in [control_accuracy(items, f, k)]} for k in kinds}


def main(argv: list[str]) -> int:
    from eval.calibration import _can_build
    from eval.controls import KINDS, control_items

    source, model, out = argv[:3]
    items = real_items(source, int(argv[3]) if len(argv) > 3 else 0)
    items += control_items(items, tuple(k for k in KINDS if _can_build(k, items)))
    score(items, model)
    Path(out).write_text(json.dumps(items))
    for kind, ms in accuracies(items).items():
        print(f"{kind:20s} " + " | ".join(f"{m} {100 * a:.0f}% of {n}" for m, (a, n) in ms.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
