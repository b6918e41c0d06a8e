import pytest

from distill import config

ROOT_CONFIGS = ["configs/default.toml", "configs/tiny.toml"]


@pytest.mark.parametrize("path", ROOT_CONFIGS)
def test_shipped_configs_load(path):
    cfg = config.load(path)
    assert cfg.teachers and cfg.eval_prompts == 50


def test_per_teacher_overrides_apply():
    cfg = config.load("configs/default.toml")
    gemma = next(t for t in cfg.teachers if t.teacher == "gemma3-270m")
    smol = next(t for t in cfg.teachers if t.teacher == "smollm2-135m")
    assert gemma.train.steps == 24 and smol.train.steps == 40
    assert gemma.generation.max_new_tokens == 128 and smol.generation.top_k == 20


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
