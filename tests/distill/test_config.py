import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.fuzz import TOML_VALUES
from distill import config
from tests.conftest import ROOT

ROOT_CONFIGS = ["configs/default.toml", "configs/tiny.toml", "configs/tiny-qwen.toml", "configs/three-teachers.toml",
                "configs/cross-tokenizer.toml"]


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
    # every writer, teachers and students, samples the same way
    assert cfg.sampling == {"temperature": 1.0, "top_p": 0.95}
    assert {(t.generation.temperature, t.generation.top_p) for t in cfg.teachers} == {(1.0, 0.95)}


def test_a_run_recorded_with_its_own_student_temperature_still_reads():
    """config.json of runs from before the shared sampling (eval/judge had a temperature)."""
    d = config.to_dict(config.load("configs/tiny.toml"))
    d["eval"]["temperature"] = d["judge"]["temperature"] = 0.7
    assert config.from_dict(d) == config.load("configs/tiny.toml")


def test_a_run_recorded_with_the_shuffled_control_switch_reads_as_all_controls_or_none():
    d = config.to_dict(config.load("configs/tiny.toml"))
    del d["judge"]["controls"]
    from eval.controls import KINDS

    assert config.from_dict({**d, "judge": {**d["judge"], "shuffled_control": True}}).judge.controls == list(KINDS)
    assert config.from_dict({**d, "judge": {**d["judge"], "shuffled_control": False}}).judge.controls == []
    assert config.load("configs/tiny.toml", ['judge.controls=["cut short"]']).judge.controls == ["cut short"]


def test_distil_must_be_a_boolean_and_only_a_comparison_teacher_may_have_no_training_prompts():
    with pytest.raises(ValueError, match="teacher.smollm2-135m.distil: expected true or false, got 'no'"):
        config.load("configs/tiny.toml", ['teacher.smollm2-135m.distil="no"'])
    with pytest.raises(ValueError, match=r"teacher.smollm2-135m.n_train: 0 must be >= 1 \(>= 0 with distil = false\)"):
        config.load("configs/tiny.toml", ["n_train=0"])
    cfg = config.load("configs/tiny.toml", ["teacher.smollm2-135m.distil=false", "teacher.smollm2-135m.n_train=0"])
    assert cfg.objectives(cfg.teachers[0]) == [] and cfg.objectives(cfg.teachers[1]) == ["kd", "sft"]
    assert config.from_dict(config.to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "train.stepz: unknown setting"),
    ('teachers=["nope"]', "teachers: unknown teacher 'nope'"),
    ("generation.top_p=2", "generation.top_p: 2 must be in (0, 1]"),
    ("train.kd_weight=1.5", "train.kd_weight: 1.5 must be in [0, 1]"),
    ('train.objective="rl"', "train.objective: 'rl' must be 'kd' or 'sft'"),
    ("n_heldout=80", "teacher.smollm2-135m.n_heldout: 80 must be within 1..50 (eval_prompts)"),
    ('name="a b"', "name: 'a b' must be"),
    ("teacher.falcon-7b-instruct.n_train=3", "teacher.falcon-7b-instruct: configures a teacher not listed in teachers"),
    ("parallel_teachers=0", "parallel_teachers: 0 must be >= 1"),
    ("generation.replicas=0", "generation.replicas: 0 must be >= 1"),
    ("train.workers=0", "train.workers: 0 must be >= 1"),
    ('judge.controls=["louder"]', "judge.controls: ['louder'] must be a list of distinct controls from"),
    ('judge.controls="grammar errors"', "judge.controls: expected"),
    ("judge.control_train_fables=-1", "judge.control_train_fables: -1 must be >= 0"),
    ('train.divergence="kl"', "train.divergence: 'kl' must be one of 'forward_kl', 'reverse_kl', 'jsd'"),
    ("train.jsd_beta=1.5", "train.jsd_beta: 1.5 must be in [0, 1]"),
    ("train.jsd_beta=0.2", "train.jsd_beta: 0.2 applies only with divergence = 'jsd'"),
    ("train.uld_weight=-1", "train.uld_weight: -1 must be >= 0"),

    ('mix={"smollm2-135m"=1,"nope"=1}', "mix.nope: is not a teacher of this run"),
    ('mix={"smollm2-135m"=1,"gemma3-270m"=0}', "mix.gemma3-270m: weight 0 must be a number > 0"),
    ('mix={"smollm2-135m"=1,"gemma3-270m"="heavy"}', "mix.gemma3-270m: weight 'heavy' must be a number > 0"),
    ('mix={"smollm2-135m"=1}', "mix: names one teacher"),
    ('mix={"smollm2-135m"=1,"gemma3-270m"=1}', "mix: trains with teacher.smollm2-135m's [train] settings, whose "
                                             "student_kind is 'pruned'"),
    ("mix=3", "mix: expected"),
])
def test_bad_settings_are_named(override, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
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
    with pytest.raises(ValueError, match="teacher.falcon-7b-instruct.revision: 'main' must be a 40-character commit"):
        config.load(f, ["teacher.falcon-7b-instruct.revision=\"main\""])
    with pytest.raises(ValueError, match="pin_revisions: expected true or false, got 'yes'"):
        config.load(f, ["pin_revisions=\"yes\""])


def setting_paths() -> list[str]:
    import dataclasses as dc

    from distill.train_config import TrainConfig
    from ray_cluster.generate import GenerationConfig

    top = [f.name for f in dc.fields(config.RunConfig) if f.name not in ("teachers", "eval", "judge")]
    tables = {"generation": GenerationConfig, "train": TrainConfig, "eval": config.EvalConfig,
              "judge": config.JudgeConfig}
    paths = top + ["teachers", "n_train", "n_heldout"] + [f"{t}.{f.name}" for t, c in tables.items() for f in dc.fields(c)]
    tid = "teacher.smollm2-135m"
    paths += [f"{tid}.{k}" for k in ["n_train", "n_heldout", "distil", "revision", "prompt_format", "engine", "layers"]]
    paths += [f"{tid}.generation.top_k", f"{tid}.train.steps", "teacher.new-one.path", "teacher.new-one.hub_id"]
    return paths + list(tables) + ["teacher", f"{tid}.train.steps.deeper", "name.x"]



@given(overrides=st.lists(st.tuples(st.one_of(st.sampled_from(setting_paths()), st.text(max_size=12)),
                                    st.one_of(st.sampled_from(TOML_VALUES), st.integers().map(str),
                                              st.floats().map(repr), st.text(max_size=12))).map(lambda kv: "=".join(kv)),
                          max_size=3))
@settings(max_examples=400, deadline=None)
def test_any_override_is_a_valid_config_or_one_setting_error(overrides):
    """--set fuzzing: no exception but SettingError escapes, and what is accepted is valid:
    every value has its declared type (booleans real booleans, numbers finite)."""
    import dataclasses as dc

    from distill.settings import SettingError, check_types

    try:
        cfg = config.load("configs/tiny.toml", overrides)
    except SettingError as e:
        assert e.setting is not None and str(e).strip() and "\n" not in str(e)
        return
    def shallow(obj):
        return {f.name: getattr(obj, f.name) for f in dc.fields(obj)}
    for obj in [cfg, cfg.eval, cfg.judge] + [x for t in cfg.teachers for x in (t.generation, t.train)]:
        check_types(type(obj), shallow(obj))
    assert cfg.name not in (".", "..") and "/" not in cfg.name
    assert config.from_dict(config.to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [  # found by the fuzz above; kept as regressions
    ("\n=0", "'\\n': --set expects key=value"),
    ("train.steps.x=1", "train.steps: is a value (4), not a table of settings"),
    ("train=5", "train: expected a table of settings, got 5"),
    ("teacher=x", "teacher: expected a table of settings, got 'x'"),
    ("n_train=inf", "n_train: expected a whole number, got inf"),
    ("name=5", "name: expected a string, got 5"),
    ("eval_prompts=abc", "eval_prompts: expected a whole number, got 'abc'"),
    ("teachers=5", "teachers: expected a list of teacher ids, got 5"),
    ("generation.trust_remote_code=False", "generation.trust_remote_code: expected true or false, got 'False'"),
    ("train.steps=1.5", "train.steps: expected a whole number, got 1.5"),
    ("train.steps=true", "train.steps: expected a whole number, got True"),
    ("generation.top_k=inf", "generation.top_k: expected a whole number, got inf"),
    ("generation.temperature=nan", "generation.temperature: expected a finite number, got nan"),
    ("eval.temperature=1", "eval.temperature: unknown setting"),
    ("teacher.smollm2-135m.generation.top_p=0.9", "teacher.smollm2-135m.generation.top_p: every writer in a run samples alike"),
    ("train.lora_dropout=-1", "train.lora_dropout: -1 must be in [0, 1)"),
    ('seed="abc"', "seed: expected a whole number, got 'abc'"),
    ('sft_baseline="no"', "sft_baseline: expected true or false, got 'no'"),
    ('name=".."', "name: '..' must be"),
    ('name="."', "name: '.' must be"),
])
def test_each_bad_value_of_the_fuzz_report_is_one_named_error(override, message):
    from distill.settings import SettingError

    with pytest.raises(SettingError, match="^" + re.escape(message)):
        config.load("configs/tiny.toml", [override])


def test_a_run_records_its_judge_url_without_credentials_and_a_rejudge_asks_for_it_again():
    from distill.config import from_dict, recorded
    from eval.endpoint import judge_endpoint

    url = "https://judge-user:pw-secret-1@judge.example/v1?api-key=key-secret-2&api-version=2024-06"
    cfg = config.load(ROOT / "configs" / "default.toml", [f'judge.base_url="{url}"'])
    rec = json.dumps(recorded(cfg))
    assert "pw-secret-1" not in rec and "key-secret-2" not in rec and "judge.example/v1?api-key=" in rec
    again = from_dict(json.loads(rec))
    with pytest.raises(ValueError, match="judge.base_url .* recorded with its credentials masked"):
        with judge_endpoint(again.judge):
            pass


@pytest.mark.parametrize("path", ROOT_CONFIGS + ["configs/production.toml"])
def test_a_recorded_config_reads_back_as_the_run_and_an_edited_one_is_type_checked(path):
    from distill.config import from_dict, recorded

    cfg = config.load(ROOT / path)
    d = json.loads(json.dumps(recorded(cfg)))
    assert from_dict(d) == cfg
    for section, key, bad in [("judge", "enabled", "False"), ("judge", "prompts", "6"), ("eval", "student_samples", 2.5)]:
        edited = json.loads(json.dumps(d))
        edited[section][key] = bad
        with pytest.raises(ValueError, match=rf"^{section}\.{key}: .* \(in the run's recorded config.json\)$"):
            from_dict(edited)
    edited = json.loads(json.dumps(d))
    edited["teachers"][0]["train"]["steps"] = "16"
    with pytest.raises(ValueError, match=rf"^teacher\.{cfg.teachers[0].teacher}\.train\.steps: expected a whole number"):
        from_dict(edited)


@pytest.mark.parametrize("seed, ok", [(0, True), (2**32 - 1, True), (2**32, False), (-1, False)])
def test_the_seed_is_a_32_bit_seed(seed, ok):
    if ok:
        assert config.load(ROOT / "configs/default.toml", [f"seed={seed}"]).seed == seed
    else:
        with pytest.raises(ValueError, match=r"^seed: .* must be within 0\.\.4294967295"):
            config.load(ROOT / "configs/default.toml", [f"seed={seed}"])


def test_a_run_builds_only_the_embedded_models_it_loads(monkeypatch):
    """What `make distill` converts before the run (teacher.convert --config): the default
    run's three teachers, its checkpoint student and the judge served here; a config of hub
    teachers with a remote judge, nothing."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert config.load(ROOT / "configs/default.toml").embedded_models() == [
        "smollm2-135m", "gemma3-270m", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]
    assert config.load(ROOT / "configs/production.toml").embedded_models() == []
    one = config.load(ROOT / "configs/tiny-qwen.toml", ["judge.enabled=true"])
    assert one.embedded_models() == ["smollm2-135m", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]  # smollm2: the judge
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert one.embedded_models() == ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]


def test_a_run_recorded_before_a_setting_existed_is_the_same_run_and_a_changed_one_is_not():
    from distill.pipeline import same_config

    cfg = config.load("configs/tiny.toml")
    old = config.recorded(cfg)
    del old["mix"]
    for t in old["teachers"]:
        for k in ("divergence", "jsd_beta", "uld_weight"):
            del t["train"][k]
    assert same_config(old, cfg)
    assert not same_config(old, config.load("configs/tiny.toml", ["train.steps=5"]))
    assert not same_config(old, config.load("configs/tiny.toml", ['train.divergence="reverse_kl"']))


def test_a_divergence_on_the_sft_objective_is_a_mismatch_named_at_config_time():
    with pytest.raises(ValueError, match="^train.divergence: 'reverse_kl' with objective = 'sft'"):
        config.load("configs/tiny.toml", ['train.objective="sft"', 'train.divergence="reverse_kl"'])
    # a KD student with its own divergence keeps an SFT baseline (the stage resets the divergence for it)
    cfg = config.load("configs/tiny.toml", ['train.divergence="jsd"', "train.jsd_beta=0.2"])
    assert cfg.objectives(cfg.teachers[0]) == ["kd", "sft"]
