"""Judge calibration: judge any fables, and measure how far a judge agrees with another.

    python -m eval.protocol score --input shared/data/tinyfabulist/fables-*.jsonl --format tinyfabulist --out runs/judge-cal
    python -m eval.protocol agree --ours runs/judge-cal/verdicts.jsonl --reference shared/data/tinyfabulist/judged-*.jsonl

`score` judges with the configured judge (the run config's [judge] table, `--set judge.X=…`)
and writes verdicts.jsonl in the TinyFabulist layout, plus a word-shuffled control of every
fable unless --no-controls. `agree` joins two judges' verdicts on (writer, hash) and reports,
per criterion, the Spearman correlation; the per-writer ranking agreement; age-group
agreement (Cohen's kappa) where both judges guess it; and the shuffled-control accuracy.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from distill import artifacts
from eval.controls import control_accuracy, shuffle_words
from eval.stats import spearman
from eval.tinyfabulist import read_fables, read_tinyfabulist, verdict_line

# Our rubric's criteria that measure what a TinyFabulist criterion measures (same name otherwise).
REFERENCE_NAMES = {"consistency": "adherence_to_prompt", "plot": "moral_clarity"}


def score(inputs: list[str], out: Path, judge_cfg, limit: int = 0, controls: bool = True) -> Path:
    """Judge every fable in `inputs` (at most `limit` per file when > 0); verdicts are cached
    in out/cache.sqlite, so a killed run resumes where it stopped."""
    from eval.judge import judge_all, judge_from_config
    from eval.rubric import rubric_for
    from eval.verdict_cache import VerdictCache
    from distill.run_folder import JudgeFolder
    from eval.endpoint import judge_endpoint
    from teacher.client import make_client

    items = []
    for path in inputs:
        fables = read_fables(path)
        for f in fables[:limit] if limit else fables:
            item = {**f, "prompt_id": f["hash"], "sample": 0, "role": "writer"}
            items.append(item)
            if controls:
                items.append({**item, "role": "control", "control_of": f["model"],
                              "fable": shuffle_words(f["fable"], f["hash"])})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rubric = rubric_for(judge_cfg)
    folder = JudgeFolder(out)  # the layout of a run's judge/ folder
    with judge_endpoint(judge_cfg, folder.server_log) as endpoint:
        judge = judge_from_config(make_client(endpoint(), max_retries=judge_cfg.retries), judge_cfg, rubric,
                                  VerdictCache(folder.cache))
        judged = judge_all(judge, items, workers=judge_cfg.workers)
        settings = judge.settings()
    lines = [verdict_line(j["model"], j["hash"], j["verdict"], settings, j["role"] == "control")
             for j in judged if j["verdict"]]
    artifacts.write_text_atomic(folder.verdicts, "".join(lines))
    failed = [{"model": j["model"], "hash": j["hash"], "reason": j["reason"]} for j in judged if not j["verdict"]]
    artifacts.write_json_atomic(out / "failures.json", failed)
    if not lines:
        raise ValueError(f"the judge gave no valid verdict for {len(judged)} fables; reasons in {out / 'failures.json'}")
    print(f"{len(lines)} verdicts, {len(failed)} failed (reasons in {out / 'failures.json'})")
    return folder.verdicts


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Agreement of two raters' labels beyond chance (nan without pairs or when chance is 1)."""
    if not a or len(a) != len(b):
        return float("nan")
    labels = sorted(set(a) | set(b))
    po = sum(x == y for x, y in zip(a, b)) / len(a)
    pe = sum((a.count(k) / len(a)) * (b.count(k) / len(b)) for k in labels)
    return float("nan") if pe == 1 else (po - pe) / (1 - pe)


def _overall(v: dict) -> float:
    return sum(v["scores"].values()) / len(v["scores"])


def agreement(ours: list[dict], reference: list[dict]) -> dict:
    """How far our verdicts agree with a reference judge's on the same (writer, hash)."""
    ref = {(v["model"], v["hash"]): v for v in reference}
    real = [v for v in ours if not v["control"]]
    pairs = [(v, ref[(v["model"], v["hash"])]) for v in real if (v["model"], v["hash"]) in ref]
    if not pairs:
        raise ValueError("no verdict of ours shares a (writer, hash) with the reference: nothing to compare")
    criteria = {}
    for c in pairs[0][0]["scores"]:
        rc = c if c in pairs[0][1]["scores"] else REFERENCE_NAMES.get(c)
        if rc in pairs[0][1]["scores"]:
            criteria[f"{c} ~ {rc}" if rc != c else c] = spearman([o["scores"][c] for o, _ in pairs],
                                                                  [r["scores"][rc] for _, r in pairs])
    criteria["overall"] = spearman([_overall(o) for o, _ in pairs], [_overall(r) for _, r in pairs])
    writers = sorted({o["model"] for o, _ in pairs})
    ours_mean = {w: float(np.mean([_overall(o) for o, _ in pairs if o["model"] == w])) for w in writers}
    ref_mean = {w: float(np.mean([_overall(r) for o, r in pairs if o["model"] == w])) for w in writers}
    duels = list(itertools.combinations(writers, 2))
    same = sum((ours_mean[a] - ours_mean[b]) * (ref_mean[a] - ref_mean[b]) > 0 for a, b in duels)
    ages = [(o["age_group"], r["age_group"]) for o, r in pairs if o.get("age_group") and r.get("age_group")]
    controls = [{"model": v["model"] + " (shuffled)", "role": "control", "control_of": v["model"],
                 "prompt_id": v["hash"], "sample": 0, "score": _overall(v)} for v in ours if v["control"]]
    real_items = [{"model": v["model"], "role": "writer", "prompt_id": v["hash"], "sample": 0, "score": _overall(v)}
                  for v in real]
    return {
        "pairs": len(pairs), "spearman": criteria,
        "writers": {"ours": ours_mean, "reference": ref_mean,
                    "pairs_in_same_order": same, "writer_pairs": len(duels)},
        "age_group_kappa": cohen_kappa([a for a, _ in ages], [b for _, b in ages]) if ages else None,
        "shuffled_control": control_accuracy(real_items + controls, lambda it: it["score"]) if controls else None,
    }


def render_agreement(result: dict) -> str:
    lines = [f"Joined verdicts: {result['pairs']}", "", "| criterion | Spearman with the reference |", "| --- | --- |"]
    lines += [f"| {c} | {r:.3f} |" for c, r in result["spearman"].items()]
    w = result["writers"]
    lines += ["", "| writer | our mean | reference mean |", "| --- | --- | --- |"]
    lines += [f"| {m} | {w['ours'][m]:.3f} | {w['reference'][m]:.3f} |" for m in w["ours"]]
    lines += ["", f"Writer pairs ranked in the same order: {w['pairs_in_same_order']} of {w['writer_pairs']}."]
    k = result["age_group_kappa"]
    lines.append("Age group (Cohen's kappa): " + ("n/a (one judge gives no age groups)" if k is None else f"{k:.3f}"))
    c = result["shuffled_control"]
    if c:
        lines.append(f"Shuffled control: real above shuffled in {c['real_above']} of {c['pairs']} pairs "
                     f"({c['ties']} ties), accuracy {c['accuracy']:.1%}.")
    return "\n".join(lines) + "\n"


def agree_files(ours: list[str], reference: list[str]) -> dict:
    return agreement([v for f in ours for v in read_tinyfabulist(f)], [v for f in reference for v in read_tinyfabulist(f)])
