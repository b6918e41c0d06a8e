import pytest

from benchmarks.kd_sweep import parse_variant
from benchmarks.render import render_sweep
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


def test_the_default_section_states_each_goal_and_the_generation_bounds():
    from benchmarks.render import render

    kl = {"q": {"before": 0.6, "after": 0.54, "ce_before": 2.3, "ce_after": 2.28}}
    default = {"process_s": 2400, "ray_heads_started": 1,
               "stages": [{"stage": "generate", "teacher": "q", "wall_s": 600, "engine_starts": 1, "engine_start_s": 110.0},
                          {"stage": "train-kd", "teacher": "q", "wall_s": 300}],
               "after_minus_before": {"q": {"mean": -0.046, "low": -0.06, "high": -0.032}},
               "kl": kl, "sft": {"q": {**kl["q"], "after": 0.56}},
               "kd_minus_sft": {"q": {"mean": -0.02, "low": -0.03, "high": -0.01, "a_lower": 10, "n": 10}},
               "elements_used": {"q": 0.7, "s": None}, "bandwidth_gbs": 11.6, "gflops": 95.0,
               "shuffled_control": {"pairs": 18, "accuracy": 1.0},
               "score_vs_loss": {"points": [1, 2, 3, 4], "spearman": -0.4, "spearman_low": -1.0, "spearman_high": 0.6},
               "generation": {"q": {"generated_tokens": 7000, "wall_s": 577, "params": 1.54e9, "dtype": "float32",
                                    "weight_bytes": 6.2e9, "rows": 34, "steps_per_s_bound": 1.87,
                                    "tokens_per_s_compute_bound": 33.0}}}
    text = render(None, default, None, None, None, None)
    assert "**40.0 min** against the 20-minute budget" in text
    assert ("held-out KL of the q student falls by **10%**, per fable after − before -0.0460 [-0.0600, -0.0320] "
            "(goal: interval excluding zero;") in text
    assert "| generate | q | 600.0 | 25% | 1 | 110.0 |" in text and "| train-kd | q | 300.0 | 12% |  |  |" in text
    assert "1 engine start(s) took 110 s; 1 Ray head(s) started for the whole run" in text
    assert "q uses **70%** of its prompts' elements (goal" in text and "s uses" not in text
    assert "in **100%** of 18 pairs" in text and "over 4 checkpoints: Spearman -0.40 [-1.00, 0.60]" in text
    assert "| q | 1.54B × float32 = 6.2 GB | 34 | 12.1 | 1.87 | 64 | 33 |" in text
