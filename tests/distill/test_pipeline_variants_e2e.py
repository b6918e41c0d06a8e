"""The pipeline's other paths on the tiny teachers' real fables: a QLoRA student, a student
of another tokenizer family, and one student of two teachers at once. Each is a run of its
own over a copy of the fables one generation-only run wrote (`teachers_run`), so `make
test-slow` pays for two engine starts here, not for the whole module run of
test_pipeline_e2e.py. Slow (minutes each): `make test-slow`; QLoRA's own tests
(tests/student/test_qlora.py) run in `make test`."""

import json
import shutil

import pytest

from tests.conftest import needs_models
from tests.distill.test_pipeline_e2e import run_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow, needs_models]


@pytest.fixture(scope="module")
def teachers_run(tmp_path_factory):
    """configs/tiny.toml's two teachers write their fables, started alone: no student, no judge."""
    runs = tmp_path_factory.mktemp("runs")
    proc = run_pipeline(runs, "--set", "teacher.smollm2-135m.distil=false", "--set", "teacher.gemma3-270m.distil=false",
                        "--set", "judge.enabled=false")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = runs / "tiny"
    assert all(any((run_dir / "teachers" / t).glob("*.parquet")) for t in ("smollm2-135m", "gemma3-270m"))
    assert not (run_dir / "students").exists()
    return run_dir


def test_qlora_student_through_the_pipeline(teachers_run):
    """QLoRA (nf4 base) on the same teacher data: trains, exports an fp32 merge, evaluates."""
    run_dir = teachers_run
    runs = run_dir.parent
    shutil.copytree(run_dir / "teachers" / "smollm2-135m", runs / "tiny-qlora" / "teachers" / "smollm2-135m")
    proc = run_pipeline(runs, "--name", "tiny-qlora", "--set", 'teachers=["smollm2-135m"]',
                        "--set", 'train.quantization="nf4"', "--set", "sft_baseline=false",
                        "--set", "judge.enabled=false")
    assert proc.returncode == 0, proc.stderr[-4000:]
    sdir = runs / "tiny-qlora" / "students" / "smollm2-135m-kd"
    train = json.loads((sdir / "train.json").read_text())
    assert train["quantization"] == "nf4" and train["steps"] == 4
    ev = json.loads((sdir / "eval.json").read_text())
    assert ev["after"]["kl"] < ev["before"]["kl"]
    assert "QLoRA r=16 on an nf4 base" in (runs / "tiny-qlora" / "report.md").read_text()
    assert not (runs / "tiny-qlora" / "students" / "smollm2-135m-sft").exists()


def test_another_tokenizer_family_gets_its_teachers_top_k_carried_over(teachers_run):
    """Gemma teacher -> SmolLM2 student: KD from Gemma's stored top-k carried onto SmolLM2's
    tokens (distill/align.py), beside SFT on the same re-encoded text; both measured on the
    teacher's held-out text in nats per byte, and reported without a KL."""
    from teacher.registry import get_teacher

    run_dir = teachers_run
    runs = run_dir.parent
    student = str(get_teacher("smollm2-135m").model_path())
    shutil.copytree(run_dir / "teachers" / "gemma3-270m", runs / "tiny-cross" / "teachers" / "gemma3-270m")
    proc = run_pipeline(runs, "--name", "tiny-cross", "--set", 'teachers=["gemma3-270m"]',
                        "--set", 'train.student_kind="checkpoint"', "--set", f'train.student_checkpoint="{student}"',
                        "--set", "judge.enabled=false", "--set", 'train.divergence="jsd"', "--set", "train.jsd_beta=0.3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    folder = runs / "tiny-cross" / "students"
    trained = json.loads((folder / "gemma3-270m-kd" / "train.json").read_text())
    assert 0.5 < trained["aligned_share"] <= 1.0 and trained["divergence"] == "jsd"
    assert all("train_uld" in h for h in trained["history"])  # Gemma entries SmolLM2 has no token for met ULD
    for objective in ("kd", "sft"):
        ev = json.loads((folder / f"gemma3-270m-{objective}" / "eval.json").read_text())
        assert ev["after"]["kl"] is None and 0 < ev["after"]["ce_per_byte"] < ev["before"]["ce_per_byte"]
    report = (runs / "tiny-cross" / "report.md").read_text()
    assert "top-k carried onto the student's tokens" in report and "nats/byte" in report
    assert "top-k JSD(β=0.3)" in report and "Per fable, KD − SFT" in report


def test_one_student_of_two_teachers_of_two_families(teachers_run):
    """`mix`: SmolLM2 (its own teacher's tokens) and Gemma (carried over) teach one SmolLM2
    checkpoint at once, Gemma's rows weighted 0.5: trained from both teachers' shards of the
    shared run, its loss logged per teacher, measured on each teacher's held-out text, judged
    (the embedded judge served by this run), reported."""
    from teacher.registry import get_teacher

    run_dir = teachers_run
    runs = run_dir.parent
    for t in ("smollm2-135m", "gemma3-270m"):
        shutil.copytree(run_dir / "teachers" / t, runs / "tiny-mix" / "teachers" / t)
    args = ["--name", "tiny-mix", "--set", "teacher.smollm2-135m.distil=false",
            "--set", "teacher.gemma3-270m.distil=false", "--set", 'train.student_kind="checkpoint"',
            "--set", f'train.student_checkpoint="{get_teacher("smollm2-135m").model_path()}"',
            "--set", 'mix={"smollm2-135m" = 1.0, "gemma3-270m" = 0.5}', "--set", "judge.checkpoints=false",
            "--set", "judge.controls=[]", "--set", "train.steps=2"]
    proc = run_pipeline(runs, *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    student = runs / "tiny-mix" / "students" / "mix-kd"
    trained = json.loads((student / "train.json").read_text())
    assert trained["steps"] == 2 and trained["rows"] == 16  # both teachers' 8 training fables
    assert any({"train_kd_smollm2-135m", "train_kd_gemma3-270m"} <= set(h) for h in trained["history"])
    per = json.loads((student / "eval-per-teacher.json").read_text())
    assert set(per) == {"smollm2-135m", "gemma3-270m"} and per["gemma3-270m"]["weight"] == 0.5
    assert per["smollm2-135m"]["own_tokens"] and not per["gemma3-270m"]["own_tokens"]
    for v in per.values():
        assert v["rows"] == 4 and v["after"]["ce_per_byte"] > 0
    report = (runs / "tiny-mix" / "report.md").read_text()
    assert "Which teacher makes the best student" in report and "All of them at once" in report
    judged = json.loads((runs / "tiny-mix" / "judge" / "summary.json").read_text())["models"]["mix-kd"]
    assert judged["fables"] == 2 and judged["teacher"] == "mix" and "judge score" in report.split("All of them")[1]
    # started again, nothing is redone
    again = run_pipeline(runs, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    mixed = [s for s in json.loads((runs / "tiny-mix" / "stages.json").read_text()) if s["teacher"] == "mix"]
    assert [s["stage"] for s in mixed] == ["train-kd", "evaluate-kd"] and all(s["status"] == "skipped" for s in mixed)
