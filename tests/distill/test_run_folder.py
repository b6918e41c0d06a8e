"""The run folder's records: what one stage writes the next reads back unchanged, and a
record of another version, with a field missing or of the wrong type is refused by name."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.run_folder import (RECORD_VERSION, Evaluated, Generated, HeldOut, JudgeSummary, RunFolder,
                                StudentFables, Trained)
from tests.conftest import read_or_named_error

HELD = HeldOut(kl=0.61, ce=2.4, tokens=300, per_fable=[{"prompt_id": "p1", "kl": 0.6, "ce": 2.3}],
               samples=["Once a fox"])
RECORDS = [
    Generated(teacher="t", shards=2, shards_done_before=0, rows=8, failed=0, generated_tokens=900, wall_s=12.5),
    HELD,
    Trained(objective="kd", student_kind="pruned", quantization="none", rows=8, removed_as_toxic=[], steps=4,
            final_loss=math.nan, history=[], train_runtime_s=None, resumed_from=None, workers=1,
            effective_batch=4, student_layers=2, params=10, trainable_params=2, merged="m", adapter="a", base="b"),
    Evaluated(heldout_rows=4, before=HELD, after=HeldOut(kl=None, ce=2.0, tokens=300, per_fable=[]),
              samples=[{"prompt_id": "p1", "instruction": "Write.", "teacher": "A.", "student": "B."}]),
    StudentFables(label="t-kd", samples=[["a", "b"], ["c", "d"]]),
    JudgeSummary(judge={"model": "j"}, protocol={"prompts": 2}, models={"t (teacher)": {"fables": 2}},
                 criteria=["grammar"], age_groups={"A": "3-5"}, score_vs_loss={"points": []}, shuffled_control=None),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_each_record_reads_back_as_written_with_its_version(tmp_path, record):
    path = tmp_path / "r.json"
    record.write(path)
    assert json.loads(path.read_text(), parse_constant=float)["version"] == RECORD_VERSION
    back = type(record).read(path)
    # NaN != NaN: compare the JSON both sides write.
    assert json.dumps(back.to_dict()) == json.dumps(record.to_dict())


def test_a_record_of_another_version_a_missing_field_or_a_wrong_type_is_refused_by_name(tmp_path):
    path = tmp_path / "DONE"
    good = RECORDS[0].to_dict()
    for data, says in [({**good, "version": 2}, "record version 2"),
                       ({k: v for k, v in good.items() if k != "rows"}, "Generated lacks rows"),
                       ({**good, "rows": "eight"}, "rows: expected a whole number"),
                       ({**good, "wall_s": True}, "wall_s: expected a number"),
                       ([1, 2], "expected a JSON object")]:
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=says) as e:
            Generated.read(path)
        assert str(e.value).startswith(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        Generated.read(path)


def test_records_from_before_versions_still_read(tmp_path):
    done = {k: v for k, v in RECORDS[0].to_dict().items() if k != "version"}
    (tmp_path / "DONE").write_text(json.dumps(done))
    assert Generated.read(tmp_path / "DONE") == RECORDS[0]
    (tmp_path / "fables-t-kd.json").write_text(json.dumps({"0": ["a", "b"], "1": ["c", "d"]}))
    assert StudentFables.read(tmp_path / "fables-t-kd.json") == RECORDS[4]


def test_the_layout_spells_every_stage_path_under_one_root(tmp_path):
    run = RunFolder(tmp_path)
    student = run.student("qwen", "kd")
    assert student.path == tmp_path / "students" / "qwen-kd"
    assert student.trained.parent == student.merged.parent == student.checkpoints.parent == student.path
    assert run.initial("qwen", own_tokens=True).name == "qwen-initial-own-tokens.json"
    assert run.judge.fables("qwen-kd@4").name == "fables-qwen-kd@4.json"
    assert run.generated("qwen").parent == run.teacher("qwen")
    assert {p.parent for p in (run.config, run.stages, run.manifest, run.report)} == {tmp_path}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(list(RECORDS[2].to_dict())), JSON, max_size=4))
def test_a_damaged_record_reads_or_fails_in_one_message_naming_the_file(tmp_path_factory, changes):
    path = tmp_path_factory.mktemp("rec") / "train.json"
    path.write_text(json.dumps({**RECORDS[2].to_dict(), **changes}))
    got = read_or_named_error(Trained.read, path)
    if got is not None:
        assert isinstance(got.steps, int) and isinstance(got.history, list)
