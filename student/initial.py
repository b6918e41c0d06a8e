"""The student as training starts from it, for one teacher's run (a distill.config.TeacherRun):
the pipeline trains it, and evaluation rebuilds it for its 'before' numbers."""

from __future__ import annotations


def student_checkpoint(tr) -> str:
    """train.student_checkpoint as a folder: an embedded model's id names its folder under models/."""
    from teacher.registry import TEACHERS

    ck = tr.train.student_checkpoint
    return TEACHERS[ck].model_path() if ck in TEACHERS else ck


def teacher_tokenizer(tr):
    """The teacher's tokenizer (small, loaded without the teacher's weights): what its shards'
    token ids and top-k index."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tr.model.model_path(), trust_remote_code=tr.generation.trust_remote_code,
                                         **tr.model.load_kwargs())


def student_tokenizer(tr):
    """The student's tokenizer without building the student (it is the teacher's unless the
    student is a checkpoint of its own)."""
    from transformers import AutoTokenizer

    if tr.train.student_kind == "checkpoint":
        return AutoTokenizer.from_pretrained(student_checkpoint(tr), trust_remote_code=tr.generation.trust_remote_code)
    return teacher_tokenizer(tr)


def build_initial_student(tr):
    """The student as training starts from it; seeded, so a random-init student is rebuilt
    identically when evaluation needs its 'before' state."""
    import torch

    from student.build import build_student

    torch.manual_seed(tr.train.seed)
    return build_student(tr.train.student_kind, tr.model.model_path(), tr.train.student_layers or None,
                         student_checkpoint(tr) or None, tr.generation.trust_remote_code, tr.model.load_kwargs())
