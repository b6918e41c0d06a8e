import json
import re

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks.fuzz import jsonl_files
from teacher import prompts as P
from tests.conftest import read_or_named_error


def test_element_lists_are_large_enough_and_unique():
    sizes = {"CHARACTERS": 60, "TRAITS": 30, "SETTINGS": 30, "CONFLICTS": 20, "RESOLUTIONS": 10, "MORALS": 30}
    for name, n in sizes.items():
        values = getattr(P, name)
        assert len(values) >= n, name
        assert len(set(values)) == len(values), name


def test_splits_are_deterministic_disjoint_and_sized():
    tr1, ev1 = P.make_splits(200, 50, seed=3)
    tr2, ev2 = P.make_splits(200, 50, seed=3)
    assert [p.prompt_id for p in tr1] == [p.prompt_id for p in tr2]
    assert len(ev1) == 50 and len(tr1) == 200
    assert not {p.prompt_id for p in tr1} & {p.prompt_id for p in ev1}
    assert len({p.prompt_id for p in tr1}) == 200
    assert {p.split for p in tr1} == {"train"} and {p.split for p in ev1} == {"eval"}


def test_eval_split_does_not_depend_on_training_size():
    _, ev_small = P.make_splits(5, 50, seed=0)
    _, ev_big = P.make_splits(500, 50, seed=0)
    assert [p.prompt_id for p in ev_small] == [p.prompt_id for p in ev_big]


def test_prompt_carries_its_elements_and_a_stable_hash():
    p = P.make_splits(1, 0, seed=0)[0][0]
    for element in P.ELEMENTS:
        assert getattr(p, element) in p.instruction
    assert p.prompt_id == P.prompt_id(p.elements(), p.variant)
    assert len(p.prompt_id) == 16
    other_variant = P.prompt_id(p.elements(), (p.variant + 1) % len(P.VARIANTS))
    assert other_variant != p.prompt_id


def test_variants_all_appear():
    tr, _ = P.make_splits(200, 0)
    assert {p.variant for p in tr} == set(range(len(P.VARIANTS)))


def test_load_prompts_roundtrip_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    rec = {"character": "fox", "trait": "sly", "setting": "a wood", "conflict": "hunger",
           "resolution": "sharing", "moral": "share", "variant": 1}
    good.write_text(json.dumps(rec) + "\n\n")
    [p] = P.load_prompts(str(good))
    assert p.instruction == P.VARIANTS[1].format(**{k: rec[k] for k in P.ELEMENTS})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rec) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2"):
        P.load_prompts(str(bad))
    with pytest.raises(ValueError, match="missing.jsonl cannot be read"):
        P.load_prompts(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="holds no prompts"):
        P.load_prompts(str(empty))


VALID_PROMPT = json.dumps({"character": "fox", "trait": "kind", "setting": "forest", "conflict": "a storm",
                           "resolution": "shares", "moral": "help others", "variant": 1})


@given(content=jsonl_files(VALID_PROMPT))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_prompts_file_reads_as_valid_prompts_or_one_error_naming_it(tmp_path, content):
    from teacher.prompts import ELEMENTS, VARIANTS, load_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_bytes(content)
    prompts = read_or_named_error(lambda p: load_prompts(str(p)), path, f"prompts file {path}")
    for p in prompts or []:
        assert all(isinstance(getattr(p, k), str) and getattr(p, k).strip() for k in ELEMENTS)
        assert 0 <= p.variant < len(VARIANTS) and isinstance(p.instruction, str) and p.split in ("train", "eval")


def test_heldout_prompts_keep_first_sample_in_writing_order():
    rows = [{"prompt_id": p, "sample_index": s} for p, s in [(7, 0), (7, 1), (3, 0), (7, 2), (3, 1), (9, 0)]]
    assert [(r["prompt_id"], r["sample_index"]) for r in P.heldout_prompts(rows)] == [(7, 0), (3, 0), (9, 0)]


def test_the_curated_heldout_prompts_cover_every_element_and_the_variants_evenly():
    from collections import Counter

    from teacher.prompts import (CHARACTERS, CONFLICTS, CURATED_EVAL, MORALS, RESOLUTIONS, SETTINGS, TRAITS, VARIANTS,
                                 eval_prompts_from)

    ev = eval_prompts_from(CURATED_EVAL, 50)
    assert len({p.prompt_id for p in ev}) == 50 and {p.split for p in ev} == {"eval"}
    for name, values in [("trait", TRAITS), ("setting", SETTINGS), ("conflict", CONFLICTS),
                         ("resolution", RESOLUTIONS), ("moral", MORALS)]:
        assert {getattr(p, name) for p in ev} == set(values), name  # every class at least once
    assert len({p.character for p in ev}) == 50 and {p.character for p in ev} <= set(CHARACTERS)
    assert sorted(Counter(p.variant for p in ev).values()) == [12, 12, 13, 13] and len(VARIANTS) == 4


def test_training_prompts_never_share_a_heldout_prompts_hash(tmp_path):
    from teacher.prompts import CURATED_EVAL, eval_prompts_from, splits

    train, ev = splits(300, 50, 0, eval_prompts_file=CURATED_EVAL)
    assert ev == eval_prompts_from(CURATED_EVAL, 50) and not {p.prompt_id for p in train} & {p.prompt_id for p in ev}
    # a training file that holds held-out prompts: those are dropped, by hash
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps({**p.elements(), "variant": p.variant}) + "\n" for p in ev[:3] + train[:5]))
    tr, _ = splits(10, 50, 0, str(f), CURATED_EVAL)
    assert [p.prompt_id for p in tr] == [p.prompt_id for p in train[:5]]
    assert splits(10, 4, 0, eval_prompts_file=CURATED_EVAL)[1] == ev[:4]


def test_an_eval_prompts_file_of_too_few_or_repeated_prompts_is_refused_by_name(tmp_path):
    from teacher.prompts import CURATED_EVAL, eval_prompts_from

    lines = CURATED_EVAL.read_text().splitlines()
    few = tmp_path / "few.jsonl"
    few.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ValueError, match=f"eval prompts file {re.escape(str(few))} holds 3 prompts, fewer than eval_prompts = 6"):
        eval_prompts_from(few, 6)
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join(lines[:3] + lines[1:2]) + "\n")
    with pytest.raises(ValueError, match="the prompt about a timid eagle .* is there twice"):
        eval_prompts_from(twice, 3)
