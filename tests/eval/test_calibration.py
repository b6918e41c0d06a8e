"""Judge calibration: `score` any fables, `agree` with a reference judge (TinyFabulist layout)."""

import json

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
    ours += [_v(r["model"], r["hash"], {"grammar": 1, "consistency": 1}, control=True) for r in ref]
    ours.append(_v("w3", "0", {"grammar": 1, "consistency": 1}))  # no reference: not joined
    res = agreement(ours, ref)
    assert res["pairs"] == 6
    assert res["spearman"]["grammar"] == pytest.approx(1.0)
    assert res["spearman"]["consistency ~ adherence_to_prompt"] == pytest.approx(1.0)
    assert res["writers"]["pairs_in_same_order"] == 1 and res["writers"]["writer_pairs"] == 1
    assert res["age_group_kappa"] is None  # the reference gives no age groups
    assert res["shuffled_control"]["accuracy"] == 1.0 and res["shuffled_control"]["pairs"] == 6
    with pytest.raises(ValueError, match="nothing to compare"):
        agreement([_v("x", "y", {"grammar": 1})], ref)


@needs_shared
def test_reference_judges_agree_with_themselves_on_tinyfabulist(capsys):
    files = [str(p) for p in sorted(TF.glob("judged-*.jsonl"))]
    assert main(["agree", "--ours", *files, "--reference", *files, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 300 and res["spearman"]["overall"] == pytest.approx(1.0)
    assert res["writers"]["pairs_in_same_order"] == 3 and res["shuffled_control"] is None


@needs_shared
def test_score_judges_tinyfabulist_fables_with_controls_and_agree_reads_them(chat_server, tmp_path, capsys):
    FakeChat.replies = [json.dumps({"grammar": g, "creativity": 6, "consistency": 7, "plot": 8, "age_group": "C"})
                        for g in (9, 8, 9, 8)]
    fables = str(TF / "fables-mistral-7b-instruct-v0.3.jsonl")
    out = tmp_path / "cal"
    rc = main(["score", "--input", fables, "--out", str(out), "--limit", "2",
               "--set", f'judge.base_url="{chat_server}"', "--set", "judge.workers=1", "--set", 'judge.mode="form"'])
    assert rc == 0, capsys.readouterr().err
    assert len(FakeChat.requests) == 4  # 2 fables + their 2 shuffled copies
    verdicts = read_tinyfabulist(out / "verdicts.jsonl")
    assert sum(v["control"] for v in verdicts) == 2 and {v["model"] for v in verdicts} == {
        "mistralai/Mistral-7B-Instruct-v0.3"}
    assert aggregate(verdicts)["mistralai/Mistral-7B-Instruct-v0.3"]["count"] == 4
    capsys.readouterr()
    ref = str(TF / "judged-mistral-7b-instruct-v0.3.gpt-4o.jsonl")
    assert main(["agree", "--ours", str(out / "verdicts.jsonl"), "--reference", ref, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 2 and res["shuffled_control"]["pairs"] == 2


def test_agree_on_a_bad_file_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "v.jsonl"
    bad.write_text("5\n")
    assert main(["agree", "--ours", str(bad), "--reference", str(bad)]) == 2
    assert "v.jsonl:1: not a TinyFabulist verdict" in capsys.readouterr().err
