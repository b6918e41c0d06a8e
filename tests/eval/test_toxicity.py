"""The toxicity score and the training filter on it."""

from eval.toxicity import filter_toxic, toxicity


def test_toxicity_filter_removes_and_reports():
    rows = [{"prompt_id": "p0", "sample_index": 0, "text": "The gentle rabbit shared her carrots with the tired old owl."},
            {"prompt_id": "p1", "sample_index": 0,
             "text": "The rabbit hopped along. You stupid fucking idiot, shut the fuck up, said the fox. Then it rained."}]
    kept, removed = filter_toxic(rows, 0.5)
    assert [r["prompt_id"] for r in kept] == ["p0"]
    assert removed[0]["prompt_id"] == "p1" and removed[0]["toxicity"] > 0.5
    assert filter_toxic(rows, 1.0)[1] == []


def test_a_fable_scores_as_its_worst_window():
    clean = "The gentle rabbit shared her carrots with the tired old owl. " * 10
    dirty = clean + "You stupid fucking idiot, shut the fuck up. " + clean
    result = toxicity([clean, dirty])
    assert len(result["per_fable"]) == 2 and result["per_fable"][0] < 0.5 < result["per_fable"][1]
    assert result["worst"][0]["fable"] == 1 and "fuck" in result["worst"][0]["window"]
