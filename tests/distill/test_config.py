import tomllib
from pathlib import Path

import pytest

from distill import config

ROOT_CONFIGS = ["configs/default.toml", "configs/tiny.toml"]


@pytest.mark.parametrize("path", ROOT_CONFIGS)
def test_shipped_configs_load(path):
    cfg = config.load(path)
    assert cfg.teachers and cfg.eval_prompts == 50


def test_per_teacher_overrides_apply():
    # Read the expectations from the file itself, so re-tuning the default run's sizes
    # does not break this test; what it checks is that [teacher.X] wins over the top level
    # for X only, and that a nested override keeps the other keys of its section.
    raw = tomllib.loads(Path("configs/default.toml").read_text())
    override = raw["teacher"]["gemma3-270m"]
    cfg = config.load("configs/default.toml")
    gemma = next(t for t in cfg.teachers if t.teacher == "gemma3-270m")
    smol = next(t for t in cfg.teachers if t.teacher == "smollm2-135m")
    assert override["train"]["steps"] != raw["train"]["steps"]
    assert gemma.train.steps == override["train"]["steps"]
    assert smol.train.steps == raw["train"]["steps"]
    assert gemma.n_train == override["n_train"] and smol.n_train == raw["n_train"]
    assert gemma.generation.max_new_tokens == override["generation"]["max_new_tokens"]
    assert smol.generation.max_new_tokens == raw["generation"]["max_new_tokens"]
    assert gemma.generation.top_k == smol.generation.top_k == raw["generation"]["top_k"]
    assert gemma.train.lr == smol.train.lr == raw["train"]["lr"]


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "unknown setting train.stepz"),
    ('teachers=["nope"]', "unknown teacher 'nope'"),
    ("generation.top_p=2", "top_p=2"),
    ("train.kd_weight=1.5", "kd_weight=1.5"),
    ('train.objective="rl"', "objective='rl'"),
    ("n_heldout=80", "n_heldout"),
    ('name="a b"', "setting name="),
    ("teacher.falcon-7b-instruct.n_train=3", "not listed in teachers"),
])
def test_bad_settings_are_named(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        config.load("configs/tiny.toml", [override])


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ValueError, match="cannot be read"):
        config.load(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        config.load(bad)
