"""The toxicity score and the training filter on it."""

import pytest

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


def tiny_toxigen(folder):
    """A RoBERTa sequence classifier shaped like tomh/toxigen_roberta (LABEL_0 benign,
    LABEL_1 toxic), random and tiny, saved as safetensors with a tokenizer: the hub's
    classifier cannot be fetched here."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from tests.tiny_models import build_tokenizer

    tok = build_tokenizer("falcon")
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=520, num_labels=2,
                        id2label={0: "LABEL_0", 1: "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1},
                        pad_token_id=tok.pad_token_id)
    RobertaForSequenceClassification(cfg).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def test_toxigen_roberta_scores_fables_and_the_comparison_names_it(tmp_path, monkeypatch):
    """compare.toxicity = "toxigen-roberta" through the real transformers classifier path
    (a tiny stand-in in the repository's layout): probabilities of the toxic class, and the
    report says which classifier measured them."""
    from eval import compare
    from eval import toxicity as tox

    monkeypatch.setattr(tox, "TOXIGEN", (str(tiny_toxigen(tmp_path / "toxigen")), None))
    tox._toxigen.cache_clear()
    texts = ["The fox shared the grapes with the crow.", "word " * 120]
    got = tox.toxicity(texts, classifier="toxigen-roberta")
    assert got["classifier"] == "toxigen-roberta" and len(got["per_fable"]) == 2
    assert all(0 < p < 1 for p in got["per_fable"])
    recs = [{"text": t, "elements": {}, "tokens": None, "seconds": None, "cost_per_hour": None,
             "prompt_id": str(i), "sample_index": 0} for i, t in enumerate(texts)]
    result = compare.compare({"a": recs}, classifier="toxigen-roberta")
    assert result["toxicity_classifier"] == "toxigen-roberta"
    report = compare.save(result, {"a": recs}, tmp_path / "cmp").read_text()
    assert "ToxiGen RoBERTa (tomh/toxigen_roberta)" in report and "alt-profanity-check" not in report
    tox._toxigen.cache_clear()


def test_toxigen_roberta_without_the_hub_stops_at_preflight_naming_the_fix(monkeypatch, tmp_path):
    from distill import config
    from eval import toxicity as tox

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(tox, "TOXIGEN", ("tomh/toxigen_roberta", "refs/pr/1"))
    tox._toxigen.cache_clear()
    with pytest.raises(FileNotFoundError, match=r"compare.toxicity='toxigen-roberta'.*hf download tomh/toxigen_roberta"):
        tox.check_classifier("toxigen-roberta")
    with pytest.raises(config.SettingError, match="compare.toxicity: .* must be one of profanity, toxigen-roberta"):
        config.parse({"name": "x", "teachers": ["smollm2-135m"], "compare": {"toxicity": "perspective"}})
