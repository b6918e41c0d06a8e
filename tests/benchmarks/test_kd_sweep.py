import pytest

from benchmarks.kd_sweep import parse_variant
from benchmarks.run import render_sweep
from distill.train import TrainConfig


def test_a_variant_changes_only_the_settings_it_names():
    base = TrainConfig(steps=16, lr=5e-4)
    name, cfg = parse_variant("lr=2e-3,kd_weight=1.0,steps=48,objective=sft", base)
    assert name == "lr=2e-3,kd_weight=1.0,steps=48,objective=sft"
    assert (cfg.lr, cfg.kd_weight, cfg.steps, cfg.objective) == (2e-3, 1.0, 48, "sft")
    assert cfg.batch_size == base.batch_size and cfg.max_len == base.max_len
    assert parse_variant("", base) == ("run", base)


@pytest.mark.parametrize("bad", ["lr", "nope=1", "lr=abc", "steps=0"])
def test_a_bad_variant_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="lr|nope|steps"):
        parse_variant(bad, TrainConfig())


def test_the_sweep_table_pairs_each_variant_with_the_default():
    fables = lambda *kl: [{"kl": k} for k in kl]
    sweep = {"teacher": "t", "before": {"kl": 0.6, "ce": 2.3, "per_fable": fables(0.6, 0.6)},
             "variants": [{"variant": "run", "kl": 0.5, "ce": 2.2, "train_s": 200, "final_loss": 0.4, "per_fable": fables(0.5, 0.5)},
                          {"variant": "lr=2e-3", "kl": 0.7, "ce": 2.4, "train_s": 210, "final_loss": 0.9, "per_fable": fables(0.7, 0.7)}]}
    text = "\n".join(render_sweep(sweep))
    assert "| run | 0.500 | -17% |" in text and "| lr=2e-3 | 0.700 | +17% |" in text and "+0.200 [+0.200, +0.200]" in text
