"""The TinyFabulist readers under any input: valid records or one error naming the file."""

import json
import math

import pytest

from hypothesis import HealthCheck, given, settings

from benchmarks.fuzz import jsonl_files
from eval.tinyfabulist import read_fables, read_tinyfabulist, tinyfabulist_elements
from tests.conftest import read_or_named_error

VERDICT = json.dumps({"llm_name": "m", "hash": "h1", "evaluation": {"grammar": 8, "creativity": 7,
                                                                    "moral_clarity": 6, "age_group": "B"}})
FABLE = json.dumps({"llm_name": "m", "hash": "h1", "prompt": "Write a fable.", "fable": "Once a fox..."})
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(content=jsonl_files(VERDICT))
@FUZZ
def test_any_verdict_file_reads_as_scores_in_range_or_one_error(tmp_path, content):
    path = tmp_path / "verdicts.jsonl"
    path.write_bytes(content)
    verdicts = read_or_named_error(read_tinyfabulist, path)
    assert verdicts is None or verdicts
    for v in verdicts or []:
        assert v["scores"] and all(isinstance(s, float) and math.isfinite(s) and 0 <= s <= 10
                                   for s in v["scores"].values())
        assert isinstance(v["model"], str) and isinstance(v["control"], bool)


@given(content=jsonl_files(FABLE))
@FUZZ
def test_any_fables_file_reads_as_text_or_one_error(tmp_path, content):
    path = tmp_path / "fables.jsonl"
    path.write_bytes(content)
    fables = read_or_named_error(read_fables, path)
    if fables is None:
        return
    assert fables and all(isinstance(f[k], str) for f in fables for k in ("model", "hash", "prompt", "fable"))
    assert all(f["fable"] != "None" for f in fables)  # a null is refused, not turned into text


def test_scores_off_the_scale_and_empty_or_folder_inputs_are_refused(tmp_path):
    import pytest

    bad = tmp_path / "v.jsonl"
    bad.write_text(VERDICT.replace('"grammar": 8', '"grammar": 1000') + "\n")
    with pytest.raises(ValueError, match="v.jsonl:1: not a TinyFabulist verdict.*grammar=1000 outside 0..10"):
        read_tinyfabulist(bad)
    for path in (tmp_path, "/dev/null"):
        with pytest.raises(ValueError, match=f"^{path}"):
            read_tinyfabulist(path)


def test_tinyfabulist_prompt_elements():
    prompt = ("Create a fable based on the following elements. Weave them naturally into a story:\n"
              "  - Main Character: a loyal wolf\n  - Setting: a desert where our story unfolds\n"
              "  - Challenge: stealing food\n  - Outcome: learns a lesson\n  - Teaching: honesty is the best policy\n"
              "The fable should:\n  - Begin with vivid scene-setting\n")
    assert tinyfabulist_elements(prompt) == {"character": "a loyal wolf", "setting": "a desert", "conflict": "stealing food",
                                             "resolution": "learns a lesson", "moral": "honesty is the best policy"}


def test_published_verdicts_with_best_age_group_read_and_aggregate(tmp_path):
    """TinyFabulist's later evaluation files: best_age_group, a letter, beside the four scores."""
    from eval.calibration import agree_files
    from eval.tinyfabulist import aggregate

    ev = {"type": "Fable Evaluation", "grammar": 8, "creativity": 7, "moral_clarity": 8, "adherence_to_prompt": 9,
          "best_age_group": "B", "explanation": ["fine", "fine"]}
    theirs = tmp_path / "evaluations.jsonl"
    theirs.write_text("".join(json.dumps({"llm_name": "m", "hash": f"h{i}", "evaluation": {**ev, "best_age_group": a}}) + "\n"
                              for i, a in enumerate("BCb")))
    rows = read_tinyfabulist(theirs)
    assert [r["age_group"] for r in rows] == ["B", "C", "B"]
    assert set(rows[0]["scores"]) == {"grammar", "creativity", "moral_clarity", "adherence_to_prompt"}
    assert aggregate(rows)["m"]["count"] == 3
    ours = tmp_path / "ours.jsonl"
    ours.write_text("".join(json.dumps({"llm_name": "m", "hash": f"h{i}", "evaluation": {**ev, "age_group": a}}) + "\n"
                            for i, a in enumerate("BCC")))
    result = agree_files([ours], [theirs])
    assert result["age_group_kappa"] is not None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"llm_name": "m", "hash": "h", "evaluation": {**ev, "best_age_group": 2}}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not a TinyFabulist verdict \(TypeError: best_age_group is 2"):
        read_tinyfabulist(bad)
