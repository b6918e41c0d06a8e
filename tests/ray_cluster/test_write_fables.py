"""The write stage's job, its engine faked at the boundary in Ray Data LLM's row format (the
real engine, LoRA adapters included, runs in the pipeline's end-to-end tests)."""

import json

import pytest

from distill.run_folder import StudentFables
from ray_cluster.generation_config import GenerationConfig
from ray_cluster.write_fables import Writer, write
from teacher.registry import get_teacher

SAMPLING = {"temperature": 1.0, "top_p": 0.95}


def adapter(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    (d / "adapter_model.safetensors").write_bytes(b"x")
    return str(d)


def model(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text("{}")
    return str(d)


def writers(tmp_path):
    kd, sft = adapter(tmp_path, "kd"), adapter(tmp_path, "sft")
    base, merged = model(tmp_path, "base"), model(tmp_path, "merged")
    return [Writer("t-initial", tmp_path / "initial.json", base, None, [[1, 2], [3]], 1, 8),
            Writer("t-kd", tmp_path / "kd.json", base, kd, [[1, 2], [3]], 2, 16),
            Writer("t-sft", tmp_path / "sft.json", base, sft, [[1, 2], [3]], 1, 16),
            Writer("full", tmp_path / "full.json", merged, None, [[4]], 1, 8)]


class FakeEngine:
    """Answers each row with its request, as Ray Data LLM's postprocess hands rows back."""

    def __init__(self, fail_on=None):
        self.passes, self.fail_on = [], fail_on

    def __call__(self, model, items, adapters):
        self.passes.append((model, adapters, items))
        for it in reversed(items):  # out of order, as several engine batches return
            if self.fail_on and it["adapter"] == self.fail_on:
                yield {"task": it["task"], "text": "", "error": "Loading lora failed: bad tensor"}
                return
            yield {"task": it["task"], "text": f"{it['adapter'] or 'base'}:{it['tokenized_prompt']}:"
                                               f"{it['sampling']['max_tokens']}:{it['sampling']['top_p']}", "error": ""}


def test_one_engine_per_base_model_every_adapter_on_it_and_the_runs_sampling(tmp_path):
    ws, engine = writers(tmp_path), FakeEngine()
    assert write(ws, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=engine) == \
        ["t-initial", "t-kd", "t-sft", "full"]
    assert [(m, a) for m, a, _ in engine.passes] == [(ws[0].model, sorted([ws[1].adapter, ws[2].adapter])), (ws[3].model, [])]
    assert len(engine.passes[0][2]) == 2 + 2 * 2 + 2  # initial, kd twice, sft: every prompt of every sample
    kd = StudentFables.read(tmp_path / "kd.json")
    assert kd.label == "t-kd" and kd.samples == [[f"{ws[1].adapter}:[1, 2]:16:0.95", f"{ws[1].adapter}:[3]:16:0.95"]] * 2
    assert StudentFables.read(tmp_path / "initial.json").samples == [["base:[1, 2]:8:0.95", "base:[3]:8:0.95"]]


def test_a_rerun_writes_only_what_is_missing(tmp_path):
    ws = writers(tmp_path)
    write(ws, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=FakeEngine())
    (tmp_path / "sft.json").unlink()
    before = (tmp_path / "kd.json").stat().st_mtime_ns
    engine = FakeEngine()
    assert write(ws, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=engine) == ["t-sft"]
    assert [(m, a) for m, a, _ in engine.passes] == [(ws[0].model, [ws[2].adapter])]
    assert (tmp_path / "kd.json").stat().st_mtime_ns == before


def test_a_rejudge_of_more_prompts_or_samples_writes_those_records_again_and_of_fewer_none(tmp_path):
    """`eval.protocol run --set judge.prompts=10` after a run that judged 6: the records of 6
    are written again for 10 (they were read past their end before); fewer prompts or
    samples than a record holds are read from it."""
    import dataclasses

    ws = writers(tmp_path)
    write(ws, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=FakeEngine())
    more = [dataclasses.replace(ws[1], prompts=[[1, 2], [3], [5]]), dataclasses.replace(ws[2], samples=2), ws[3]]
    engine = FakeEngine()
    assert write(more, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=engine) == ["t-kd", "t-sft"]
    assert [len(t) for t in StudentFables.read(tmp_path / "kd.json").samples] == [3, 3]
    assert [len(t) for t in StudentFables.read(tmp_path / "sft.json").samples] == [2, 2]
    fewer = [dataclasses.replace(ws[1], prompts=[[1, 2]], samples=1)]
    assert write(fewer, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=FakeEngine()) == []


def test_a_missing_adapter_stops_before_any_engine_naming_it(tmp_path):
    ws = writers(tmp_path)
    (tmp_path / "sft" / "adapter_model.safetensors").unlink()
    engine = FakeEngine()
    with pytest.raises(FileNotFoundError, match=r"^t-sft: LoRA adapter .*/sft lacks adapter_model.safetensors"):
        write(ws, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=engine)
    assert engine.passes == []


def test_a_missing_model_stops_before_any_engine_naming_it(tmp_path):
    ws = writers(tmp_path)
    (tmp_path / "merged" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"^full: no model at .*/merged \(config.json missing\)"):
        write(ws, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=FakeEngine())


def test_an_adapter_the_engine_refuses_is_named_and_finished_writers_are_kept(tmp_path):
    ws = writers(tmp_path)
    with pytest.raises(RuntimeError, match=r"^t-kd: the engine failed on LoRA adapter .*/kd: Loading lora failed"):
        write(ws, SAMPLING, GenerationConfig(), get_teacher("smollm2-135m"), 16, run_pass=FakeEngine(fail_on=ws[1].adapter))
    # rows come back last-first: the SFT adapter's were all back before the failure
    assert json.loads((tmp_path / "sft.json").read_text())["label"] == "t-sft"
    assert not (tmp_path / "kd.json").exists()
