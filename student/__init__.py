"""Students: where training starts (initial.py), and how they are built, adapted with
LoRA/QLoRA and exported (build.py)."""

# What a student can start from (train.student_kind): the teacher with layers pruned, a small
# random model of the teacher's config, or a checkpoint of its own.
STUDENT_KINDS = ("pruned", "config", "checkpoint")
