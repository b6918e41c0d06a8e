"""The student as training starts from it: seeded, so evaluation rebuilds the same one."""

import torch

from distill import config
from student.initial import build_initial_student, student_checkpoint, student_tokenizer
from teacher.registry import get_teacher
from tests.conftest import needs_models


def run(*overrides):
    return config.load("configs/tiny.toml", list(overrides)).teachers[0]


@needs_models
def test_an_embedded_checkpoint_id_names_its_folder_and_a_path_passes_through():
    tr = run('train.student_kind="checkpoint"', 'train.student_checkpoint="qwen2.5-coder-0.5b"')
    assert student_checkpoint(tr) == get_teacher("qwen2.5-coder-0.5b").model_path()
    tr = run('train.student_kind="checkpoint"', 'train.student_checkpoint="/some/folder"')
    assert student_checkpoint(tr) == "/some/folder"


@needs_models
def test_a_random_student_is_rebuilt_identically_and_shares_the_teachers_tokenizer():
    tr = run('train.student_kind="config"', "train.student_layers=1")
    (a, tok), (b, _) = build_initial_student(tr), build_initial_student(tr)
    assert a.config.num_hidden_layers == 1
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert student_tokenizer(tr).get_vocab() == tok.get_vocab()
