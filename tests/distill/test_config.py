import tomllib
from pathlib import Path

import pytest

from distill import config

ROOT_CONFIGS = ["configs/default.toml", "configs/tiny.toml", "configs/tiny-qwen.toml"]


@pytest.mark.parametrize("path", ROOT_CONFIGS)
def test_shipped_configs_load(path):
    cfg = config.load(path)
    assert cfg.teachers and cfg.eval_prompts == 50


def test_per_teacher_overrides_apply(tmp_path):
    # [teacher.X] wins over the top level for X only; a nested override keeps the other keys
    # of its section.
    f = tmp_path / "c.toml"
    f.write_text("""name = "t"
teachers = ["smollm2-135m", "gemma3-270m"]
n_train = 8
[generation]
max_new_tokens = 64
top_k = 10
[train]
steps = 5
lr = 2e-4
[teacher.gemma3-270m]
n_train = 3
generation = { max_new_tokens = 32 }
train = { steps = 2 }
""")
    cfg = config.load(f)
    smol, gemma = cfg.teachers
    assert (gemma.train.steps, gemma.n_train, gemma.generation.max_new_tokens) == (2, 3, 32)
    assert (smol.train.steps, smol.n_train, smol.generation.max_new_tokens) == (5, 8, 64)
    assert gemma.generation.top_k == smol.generation.top_k == 10 and gemma.train.lr == smol.train.lr == 2e-4


def test_the_default_run_distils_qwen_and_compares_three_teachers():
    cfg = config.load("configs/default.toml")
    assert [t.teacher for t in cfg.teachers] == ["qwen2.5-coder-1.5b", "smollm2-135m", "gemma3-270m"]
    qwen, smol, gemma = cfg.teachers
    assert cfg.objectives(qwen) == ["kd", "sft"] and qwen.train.student_checkpoint == "qwen2.5-coder-0.5b"
    assert cfg.objectives(smol) == cfg.objectives(gemma) == [] and smol.n_train == gemma.n_train == 0
    assert qwen.n_heldout == smol.n_heldout == gemma.n_heldout  # the same held-out prompts for the comparison


def test_distil_must_be_a_boolean_and_only_a_comparison_teacher_may_have_no_training_prompts():
    with pytest.raises(ValueError, match="distil='no' must be true or false"):
        config.load("configs/tiny.toml", ['teacher.smollm2-135m.distil="no"'])
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        config.load("configs/tiny.toml", ["n_train=0"])
    cfg = config.load("configs/tiny.toml", ["teacher.smollm2-135m.distil=false", "teacher.smollm2-135m.n_train=0"])
    assert cfg.objectives(cfg.teachers[0]) == [] and cfg.objectives(cfg.teachers[1]) == ["kd", "sft"]
    assert config.from_dict(config.to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "unknown setting train.stepz"),
    ('teachers=["nope"]', "unknown teacher 'nope'"),
    ("generation.top_p=2", "top_p=2"),
    ("train.kd_weight=1.5", "kd_weight=1.5"),
    ('train.objective="rl"', "objective='rl'"),
    ("n_heldout=80", "n_heldout"),
    ('name="a b"', "setting name="),
    ("teacher.falcon-7b-instruct.n_train=3", "not listed in teachers"),
    ("parallel_teachers=0", "setting parallel_teachers=0 must be a whole number >= 1"),
    ("generation.replicas=0", "replicas=0"),
    ("train.workers=0", "workers=0"),
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


def test_a_teacher_declared_in_the_config_travels_with_the_run(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    f = tmp_path / "c.toml"
    f.write_text(f"""name = "t"
teachers = ["my-mistral", "falcon-7b-instruct"]
pin_revisions = true
[teacher.my-mistral]
path = "{tmp_path / 'm'}"
prompt_format = "mistral"
n_train = 3
[teacher.falcon-7b-instruct]
revision = "{'b' * 40}"
""")
    cfg = config.load(f)
    mine, falcon = (tr.model for tr in cfg.teachers)
    assert (mine.source, mine.path, mine.prompt_format, cfg.teachers[0].n_train) == ("local", str(tmp_path / "m"), "mistral", 3)
    assert falcon.revision == "b" * 40 and falcon.prompt_format == "falcon"
    assert config.from_dict(config.to_dict(cfg)) == cfg  # what a resumed run reads from config.json
    with pytest.raises(ValueError, match="teacher.falcon-7b-instruct.revision='main' must be a 40-character commit"):
        config.load(f, ["teacher.falcon-7b-instruct.revision=\"main\""])
    with pytest.raises(ValueError, match="setting pin_revisions='yes' must be true or false"):
        config.load(f, ["pin_revisions=\"yes\""])
