"""Judge calibration: judge any fables, and measure how far a judge agrees with another.

    python -m eval.protocol score --input shared/data/tinyfabulist/fables-*.jsonl --format tinyfabulist --out runs/judge-cal
    python -m eval.protocol agree --ours runs/judge-cal/verdicts.jsonl --reference shared/data/tinyfabulist/judged-*.jsonl

`score` judges with the configured judge (the run config's [judge] table, `--set judge.X=…`)
and writes verdicts.jsonl in the TinyFabulist layout, plus the judge.controls copies of every
fable that its prompt allows (eval/controls.py) unless --no-controls. `agree` joins two
judges' verdicts on (writer, hash) and reports, with bootstrap intervals, per criterion the
Spearman correlation over fables; over writers, Spearman and Kendall of their mean scores;
age-group agreement (Cohen's kappa) where both judges guess it; and each control's accuracy.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from distill import artifacts
from eval.controls import MISMATCH, control_accuracies, control_items
from eval.stats import kendall, percentile_interval, spearman, spearman_ci
from eval.tinyfabulist import read_fables, read_tinyfabulist, tinyfabulist_elements, verdict_line
from teacher.prompts import ELEMENTS

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
        items += [{**f, "prompt_id": f["hash"], "sample": 0, "role": "writer", **tinyfabulist_elements(f["prompt"])}
                  for f in (fables[:limit] if limit else fables)]
    if controls:  # judge.controls, less those these prompts cannot build
        items += control_items(items, tuple(k for k in judge_cfg.controls if _can_build(k, items)))
    if judge_cfg.mode == "pairwise" and items:  # every fable against the first file's for the same prompt
        from eval.pairwise import with_references

        items = with_references(items, items[0]["model"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rubric = rubric_for(judge_cfg)
    folder = JudgeFolder(out)  # the layout of a run's judge/ folder
    with judge_endpoint(judge_cfg, folder.server_log) as endpoint:
        judge = judge_from_config(make_client(endpoint(), max_retries=judge_cfg.retries), judge_cfg, rubric,
                                  VerdictCache(folder.cache))
        judged = judge_all(judge, items, workers=judge_cfg.workers)
        settings = judge.settings()
    lines = [verdict_line(j.get("control_of", j["model"]), j["hash"], j["verdict"], settings, j.get("control", False))
             for j in judged if j["verdict"]]
    artifacts.write_text_atomic(folder.verdicts, "".join(lines))
    failed = [{"model": j["model"], "hash": j["hash"], "reason": j["reason"]} for j in judged if not j["verdict"]]
    artifacts.write_json_atomic(out / "failures.json", failed)
    if not lines:
        raise ValueError(f"the judge gave no valid verdict for {len(judged)} fables; reasons in {out / 'failures.json'}")
    print(f"{len(lines)} verdicts, {len(failed)} failed (reasons in {out / 'failures.json'})")
    return folder.verdicts


def _can_build(kind: str, items: list[dict]) -> bool:
    """The prompt-based controls need every element of every prompt (TinyFabulist's prompts
    name five of our six: no trait), the text-based ones only the fable."""
    needs = {"templated retelling": ELEMENTS, "wrong prompt": MISMATCH}.get(kind, ())
    return all(k in it for it in items for k in needs)


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


def agreement(ours: list[dict], reference: list[dict], n_boot: int = 2000) -> dict:
    """How far our verdicts agree with a reference judge's on the same (writer, hash): per
    criterion, Spearman over fables; over writers, Spearman and Kendall of the writers' mean
    scores; each with a bootstrap 95% interval (fables resampled within each writer); age
    groups by Cohen's kappa; and our controls' accuracies (eval/controls.py)."""
    ref = {(v["model"], v["hash"]): v for v in reference if not v["control"]}
    real = [v for v in ours if not v["control"]]
    pairs = [(v, ref[(v["model"], v["hash"])]) for v in real if (v["model"], v["hash"]) in ref]
    if not pairs:
        raise ValueError("no verdict of ours shares a (writer, hash) with the reference: nothing to compare")
    criteria = {}
    for c in pairs[0][0]["scores"]:
        rc = c if c in pairs[0][1]["scores"] else REFERENCE_NAMES.get(c)
        if rc in pairs[0][1]["scores"]:
            criteria[f"{c} ~ {rc}" if rc != c else c] = _interval(spearman_ci(
                [o["scores"][c] for o, _ in pairs], [r["scores"][rc] for _, r in pairs], n_boot=n_boot))
    criteria["overall"] = _interval(spearman_ci([_overall(o) for o, _ in pairs], [_overall(r) for _, r in pairs],
                                                n_boot=n_boot))
    writers = sorted({o["model"] for o, _ in pairs})
    ours_by = {w: [_overall(o) for o, _ in pairs if o["model"] == w] for w in writers}
    ref_by = {w: [_overall(r) for o, r in pairs if o["model"] == w] for w in writers}
    ours_mean = {w: float(np.mean(v)) for w, v in ours_by.items()}
    ref_mean = {w: float(np.mean(v)) for w, v in ref_by.items()}
    duels = list(itertools.combinations(writers, 2))
    same = sum((ours_mean[a] - ours_mean[b]) * (ref_mean[a] - ref_mean[b]) > 0 for a, b in duels)
    ages = [(o["age_group"], r["age_group"]) for o, r in pairs if o.get("age_group") and r.get("age_group")]
    judged = [{"model": v["model"] + (f" ({v['control']})" if v["control"] else ""), "prompt_id": v["hash"],
               "sample": 0, "role": "control" if v["control"] else "writer", "control": v["control"] or None,
               "control_of": v["model"], "verdict": {"scores": v["scores"]}, "score": _overall(v)} for v in ours]
    return {
        "pairs": len(pairs), "spearman": criteria,
        "writers": {"ours": ours_mean, "reference": ref_mean, "pairs_in_same_order": same, "writer_pairs": len(duels),
                    "spearman": _interval(_writer_ci(spearman, ours_by, ref_by, n_boot)),
                    "kendall": _interval(_writer_ci(kendall, ours_by, ref_by, n_boot))},
        "age_group_kappa": cohen_kappa([a for a, _ in ages], [b for _, b in ages]) if ages else None,
        "controls": control_accuracies(judged, lambda it: it["score"]),
    }


def _interval(t: tuple[float, float, float]) -> dict:
    return {"rho": t[0], "low": t[1], "high": t[2]}


def _writer_ci(corr, ours_by: dict, ref_by: dict, n_boot: int, seed: int = 0) -> tuple[float, float, float]:
    """A rank correlation of writer means (ours against the reference) and its bootstrap
    interval: each writer's fables resampled with replacement, in pairs, within that writer."""
    writers = list(ours_by)
    point = corr([np.mean(ours_by[w]) for w in writers], [np.mean(ref_by[w]) for w in writers])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot if len(writers) >= 3 else 0):
        idx = {w: rng.integers(0, len(ours_by[w]), len(ours_by[w])) for w in writers}
        boots.append(corr([np.mean(np.asarray(ours_by[w])[idx[w]]) for w in writers],
                          [np.mean(np.asarray(ref_by[w])[idx[w]]) for w in writers]))
    return (point, *percentile_interval(boots))


def render_agreement(result: dict) -> str:
    def ci(d):
        return f"{d['rho']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    lines = [f"Joined verdicts: {result['pairs']}", "",
             "| criterion | Spearman with the reference, per fable [95% interval] |", "| --- | --- |"]
    lines += [f"| {c} | {ci(r)} |" for c, r in result["spearman"].items()]
    w = result["writers"]
    lines += ["", "| writer | our mean | reference mean |", "| --- | --- | --- |"]
    lines += [f"| {m} | {w['ours'][m]:.3f} | {w['reference'][m]:.3f} |" for m in w["ours"]]
    lines += ["", f"Writers ranked as the reference ranks them: Spearman {ci(w['spearman'])}, Kendall {ci(w['kendall'])} "
                  f"({w['pairs_in_same_order']} of {w['writer_pairs']} writer pairs in the same order)."]
    k = result["age_group_kappa"]
    lines.append("Age group (Cohen's kappa): " + ("n/a (one judge gives no age groups)" if k is None else f"{k:.3f}"))
    for kind, c in result["controls"].items():
        lines.append(f"Control {kind} ({c['criterion']}): real above the copy in {c['real_above']} of {c['pairs']} "
                     f"pairs ({c['ties']} ties, counted as half), accuracy {c['accuracy']:.1%}.")
    return "\n".join(lines) + "\n"


def agree_files(ours: list[str], reference: list[str]) -> dict:
    return agreement([v for f in ours for v in read_tinyfabulist(f)], [v for f in reference for v in read_tinyfabulist(f)])
