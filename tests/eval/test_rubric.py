"""The rubric file: its criteria are what the judge scores, and a bad file is named."""

import json

import pytest

from eval.rubric import Rubric
from eval.verdict import parse_verdict
from tests.eval.conftest import GOOD


def test_a_criterion_is_added_by_editing_the_rubric(tmp_path):
    base = Rubric.load()
    assert base.names == ["grammar", "creativity", "consistency", "plot"]
    src = (tmp_path / "r.toml")
    text = open(Rubric.load.__globals__["RUBRIC"]).read().replace(
        "[age_groups]", '[[criteria]]\nname = "moral_clarity"\ndescription = "The moral is clear."\n\n[age_groups]')
    src.write_text(text)
    r = Rubric.load(src)
    assert r.names[-1] == "moral_clarity" and r.digest != base.digest
    assert r.json_schema()["required"] == r.names + ["age_group"]
    assert "moral_clarity: The moral is clear." in r.messages("write a fable", "a fable")[1]["content"]
    v, why = parse_verdict(json.dumps(GOOD), r)
    assert v is None and why == "missing score 'moral_clarity'"
    assert parse_verdict(json.dumps({**GOOD, "moral_clarity": 5}), r)[0].scores["moral_clarity"] == 5


def test_bad_rubric_file_is_named(tmp_path):
    (tmp_path / "bad.toml").write_text("name = 'x'\n")
    with pytest.raises(ValueError, match="bad.toml"):
        Rubric.load(tmp_path / "bad.toml")
