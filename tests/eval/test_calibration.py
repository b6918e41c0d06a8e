"""Judge calibration: `score` any fables, `agree` with a reference judge (TinyFabulist layout)."""

import json

import numpy as np
import pytest

from eval.calibration import agreement, cohen_kappa
from eval.protocol import main
from eval.tinyfabulist import aggregate, read_tinyfabulist
from tests.conftest import SHARED, needs_shared
from tests.eval.conftest import FakeChat

TF = SHARED / "data" / "tinyfabulist"


def test_cohen_kappa_hand_computed():
    assert cohen_kappa(list("AABB"), list("AABB")) == 1.0
    # po = 0.5, pe = 0.5 -> 0
    assert cohen_kappa(list("AABB"), list("ABAB")) == 0.0
    # po = 0.75; pe = 0.5*0.75 + 0.5*0.25 = 0.5 -> 0.5
    assert cohen_kappa(list("AABB"), list("AAAB")) == pytest.approx(0.5)
    assert cohen_kappa([], []) != cohen_kappa([], [])  # nan


def _v(model, h, scores, control=False, age=None):
    return {"model": model, "hash": h, "scores": scores, "age_group": age, "control": control}


def test_agreement_joins_on_writer_and_hash_and_counts_controls():
    ref = [_v(m, str(i), {"grammar": g, "adherence_to_prompt": a})
           for m, rows in {"w1": [(9, 8), (7, 6), (5, 9)], "w2": [(4, 3), (6, 5), (2, 2)]}.items()
           for i, (g, a) in enumerate(rows)]
    ours = [_v(r["model"], r["hash"], {"grammar": r["scores"]["grammar"] / 2, "consistency": r["scores"]["adherence_to_prompt"]},
               age="B") for r in ref]
    ours += [_v(r["model"], r["hash"], {"grammar": 1, "consistency": 1}, control="shuffled words") for r in ref]
    # a grammar-error copy that lowers consistency but not grammar: the grammar control fails
    ours += [_v(r["model"], r["hash"], {"grammar": 9, "consistency": 0}, control="grammar errors") for r in ref]
    ours.append(_v("w3", "0", {"grammar": 1, "consistency": 1}))  # no reference: not joined
    res = agreement(ours, ref)
    assert res["pairs"] == 6
    assert res["spearman"]["grammar"]["rho"] == pytest.approx(1.0)
    assert res["spearman"]["consistency ~ adherence_to_prompt"]["rho"] == pytest.approx(1.0)
    assert res["writers"]["pairs_in_same_order"] == 1 and res["writers"]["writer_pairs"] == 1
    assert res["writers"]["kendall"]["rho"] != res["writers"]["kendall"]["rho"]  # two writers: no rank correlation
    assert res["age_group_kappa"] is None  # the reference gives no age groups
    assert res["controls"]["shuffled words"] == {"criterion": "overall", "what": "its words shuffled", "pairs": 6,
                                                 "real_above": 6, "ties": 0, "failed": 0, "accuracy": 1.0}
    assert res["controls"]["grammar errors"]["accuracy"] < 0.5
    with pytest.raises(ValueError, match="nothing to compare"):
        agreement([_v("x", "y", {"grammar": 1})], ref)


def test_writer_ranking_agreement_has_intervals_from_the_fables():
    """Four writers ranked alike by both judges: Spearman and Kendall 1. With many fables a
    writer apart, the interval stays at 1; with noisy fables it widens below 1."""
    ref, ours = [], []
    for w, level in [("a", 2), ("b", 4), ("c", 6), ("d", 8)]:
        for i in range(12):
            ref.append(_v(w, str(i), {"grammar": level + (i % 3) - 1}))
            ours.append(_v(w, str(i), {"grammar": level / 2 + (i % 2) * 0.5}))
    res = agreement(ours, ref, n_boot=300)
    for k in ("spearman", "kendall"):
        assert res["writers"][k] == {"rho": pytest.approx(1.0), "low": pytest.approx(1.0), "high": pytest.approx(1.0)}
    rng = np.random.default_rng(0)  # a weak writer signal under per-fable noise
    noisy = [_v(v["model"], v["hash"], {"grammar": v["scores"]["grammar"] * 0.3 + rng.normal(0, 2)}) for v in ours]
    res = agreement(noisy, ref, n_boot=300)
    assert res["writers"]["kendall"]["low"] < res["writers"]["kendall"]["rho"] <= res["writers"]["kendall"]["high"]
    assert res["writers"]["kendall"]["low"] < 0.5 and res["spearman"]["grammar"]["low"] < res["spearman"]["grammar"]["high"]
    with pytest.raises(ValueError, match="nothing to compare"):
        agreement([_v("x", "y", {"grammar": 1})], ref)


@needs_shared
def test_reference_judges_agree_with_themselves_on_tinyfabulist(capsys):
    files = [str(p) for p in sorted(TF.glob("judged-*.jsonl"))]
    assert main(["agree", "--ours", *files, "--reference", *files, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 300 and res["spearman"]["overall"]["rho"] == pytest.approx(1.0)
    assert res["writers"]["pairs_in_same_order"] == 3 and res["controls"] == {}
    assert res["writers"]["spearman"]["rho"] == pytest.approx(1.0) and res["writers"]["kendall"]["rho"] == pytest.approx(1.0)


@needs_shared
def test_score_judges_tinyfabulist_fables_with_controls_and_agree_reads_them(chat_server, tmp_path, capsys):
    FakeChat.replies = [json.dumps({"grammar": g, "creativity": 6, "consistency": 7, "plot": 8, "age_group": "C"})
                        for g in (9, 8, 9, 8)]
    fables = str(TF / "fables-mistral-7b-instruct-v0.3.jsonl")
    out = tmp_path / "cal"
    rc = main(["score", "--input", fables, "--out", str(out), "--limit", "2",
               "--set", f'judge.base_url="{chat_server}"', "--set", "judge.workers=1", "--set", 'judge.mode="form"',
               "--set", 'judge.controls=["shuffled words", "grammar errors"]'])
    assert rc == 0, capsys.readouterr().err
    assert len(FakeChat.requests) == 6  # 2 fables + their 2 shuffled and 2 grammar-error copies
    verdicts = read_tinyfabulist(out / "verdicts.jsonl")
    assert [v["control"] for v in verdicts].count("grammar errors") == 2 and {v["model"] for v in verdicts} == {
        "mistralai/Mistral-7B-Instruct-v0.3"}
    table = aggregate(verdicts)  # each control apart from the writer's own means
    assert table["mistralai/Mistral-7B-Instruct-v0.3"]["count"] == 2
    assert table["mistralai/Mistral-7B-Instruct-v0.3 (shuffled words)"]["count"] == 2
    capsys.readouterr()
    ref = str(TF / "judged-mistral-7b-instruct-v0.3.gpt-4o.jsonl")
    assert main(["agree", "--ours", str(out / "verdicts.jsonl"), "--reference", ref, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 2 and res["controls"]["shuffled words"]["pairs"] == 2
    assert res["controls"]["grammar errors"]["criterion"] == "grammar"


def test_agree_on_a_bad_file_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "v.jsonl"
    bad.write_text("5\n")
    assert main(["agree", "--ours", str(bad), "--reference", str(bad)]) == 2
    assert "v.jsonl:1: not a TinyFabulist verdict" in capsys.readouterr().err


@needs_shared
def test_score_builds_every_default_control_the_published_prompts_allow(chat_server, tmp_path, capsys):
    """As `make bench` runs it: the default config's controls on the shared files, whose
    prompts name no trait (the wrong-prompt control raised KeyError: 'trait' here)."""
    files = [str(TF / f"fables-{m}.jsonl") for m in ("mistral-7b-instruct-v0.3", "llama-3.1-8b-instruct")]
    out = tmp_path / "cal"
    rc = main(["score", "--input", *files, "--out", str(out), "--limit", "3", "--set", f'judge.base_url="{chat_server}"',
               "--set", 'judge.mode="form"', "--set", "judge.fluency_gate=false"])
    assert rc == 0, capsys.readouterr().err
    kinds = {v["control"] for v in read_tinyfabulist(out / "verdicts.jsonl")}
    assert {"wrong prompt", "shuffled words", "grammar errors"} <= kinds
