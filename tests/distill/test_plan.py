import subprocess
import sys

import pytest

from distill import config, plan
from tests.conftest import ROOT


def test_parameter_count_from_config_matches_the_published_sizes():
    llama2 = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000, "tie_word_embeddings": False}
    mistral = {**llama2, "model_type": "mistral", "num_key_value_heads": 8, "intermediate_size": 14336}
    falcon = {"model_type": "falcon", "hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71,
              "multi_query": True, "vocab_size": 65024}
    for c, published in ((llama2, 6.74e9), (mistral, 7.24e9), (falcon, 6.92e9)):
        layers, params = plan.params_from_config(c)
        assert layers == 32 and abs(params - published) / published < 0.03


def test_the_production_plan_prices_every_stage_without_loading_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config.load(ROOT / "configs/production.toml")
    p = plan.build(cfg, gen_tok_s=2500)
    names = [(s["stage"], s.get("teacher", "")) for s in p["stages"]]
    for t in ("mistral-7b-instruct", "llama2-7b-chat", "falcon-7b-instruct"):
        headline = ["footprint"] if t == "mistral-7b-instruct" else []  # the first distilled teacher's
        assert [n for n, who in names if who == t] == ["generate", "train-kd", "evaluate-kd", "train-sft", "evaluate-sft",
                                                       *headline]
    footprint = next(s for s in p["stages"] if s["stage"] == "footprint")  # the teacher and its two students
    assert footprint["engines"] == 3 and footprint["gpu_hours"] == 3 * plan.FOOTPRINT_ENGINE_S / 3600
    gen = [s for s in p["stages"] if s["stage"] == "generate"]
    # 20,000 training fables + 50 held-out x 10, 400 tokens each, top-20 at 2 bytes an entry
    assert all(s["rows"] == 20500 and s["topk_disk_bytes"] == 20500 * 400 * 20 * 2.0 for s in gen)
    assert all(len(s["revision"]) == 40 for s in gen)
    assert p["topk_disk_bytes"] == sum(s["topk_disk_bytes"] for s in gen)
    judge = next(s for s in p["stages"] if s["stage"] == "judge")
    # every writer (3 teachers, 6 students), six control copies of each teacher fable, and the 8
    # checkpoints of the first KD student (4000 steps, one saved every 500): the last is the student
    checkpoints = 50 * 10 * (4000 // 500)
    assert judge["verdicts"] == 50 * 10 * (3 * (1 + 6) + 6) + checkpoints and judge["endpoint"] == "OPENAI_BASE_URL"
    assert judge["requests"] == judge["verdicts"] - 50 * 10
    write = next(s for s in p["stages"] if s["stage"] == "write")  # every student's fables, before the judge
    assert [s["stage"] for s in p["stages"]].index("write") < [s["stage"] for s in p["stages"]].index("judge")
    assert write["student_completions"] == 50 * 10 * 6 + checkpoints - 50 * 10 + cfg.eval.student_samples * (6 + 3)
    assert write["gpu_hours"] > 0
    assert p["gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in p["stages"]))
    # halving the assumed throughput doubles the generation hours, nothing else
    slow = plan.build(cfg, gen_tok_s=1250)
    assert sum(s["gpu_hours"] for s in slow["stages"] if s["stage"] == "generate") == pytest.approx(
        2 * sum(s["gpu_hours"] for s in gen))


def test_dry_run_prints_the_plan_and_imports_no_model_code():
    code = ("import sys, runpy; sys.argv = ['x', '--config', 'configs/production.toml', '--dry-run'];\n"
            "try:\n    runpy.run_module('distill.pipeline', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print('LOADED', sorted(m for m in ('torch', 'vllm', 'ray', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "mistralai/Mistral-7B-Instruct-v0.2@63a8b0818953" in out and "GPU-hours on A10G: ~" in out and "cost: ~$" in out
    assert "stored top-k: ~984.0 MB" in out and "QLoRA nf4 r=64" in out
    assert out.strip().splitlines()[-1] == "LOADED []"


def test_a_run_whose_judge_has_no_endpoint_stops_before_any_work(monkeypatch, tmp_path):
    from distill.pipeline import preflight

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    f = tmp_path / "c.toml"
    f.write_text('name = "j"\nteachers = ["falcon-7b-instruct"]\n[judge]\nmodel = "gpt-4o"\n')
    cfg = config.load(f)
    with pytest.raises(ValueError, match="judge.model='gpt-4o' is not an embedded model.*export OPENAI_BASE_URL"):
        preflight(cfg)


def test_a_gpu_run_refuses_a_machine_without_gpus_unless_a_cluster_adds_them(monkeypatch):
    """A GPU torch on a machine with no GPU (a laptop with the GPU venv, a CPU-only head):
    refused at once without RAY_ADDRESS, accepted with it (the autoscaler adds GPU workers).
    The CPU build of torch is refused either way (tests/test_makefile.py runs that as a user)."""
    import torch

    from distill.pipeline import check_gpus

    cfg = config.load(ROOT / "configs/production.toml")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RuntimeError, match=r"teacher '\w[\w.-]+' needs 1 GPU\(s\).*this machine has 0.*RAY_ADDRESS"):
        check_gpus(cfg)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    check_gpus(cfg)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(RuntimeError, match="is the CPU build: set it up with `make setup GPU=1`"):
        check_gpus(cfg)
    check_gpus(config.load(ROOT / "configs/default.toml"))  # embedded teachers run on the CPU


def test_parallel_teachers_are_capped_by_the_gpus_of_a_head_without_autoscaler():
    import dataclasses

    from distill.pipeline import teachers_at_once
    from teacher.registry import get_teacher

    seven_b = [get_teacher(t) for t in ("mistral-7b-instruct", "llama2-7b-chat", "falcon-7b-instruct")]
    assert teachers_at_once(3, seven_b, {"address": "local", "gpus": 1}) == 1
    assert teachers_at_once(3, seven_b, {"address": "local", "gpus": 2}) == 2
    assert teachers_at_once(3, seven_b, {"address": "local", "gpus": 8}) == 3
    tp2 = [dataclasses.replace(t, engine={**t.engine, "tensor_parallel_size": 2}) for t in seven_b]
    assert teachers_at_once(3, tp2, {"address": "local", "gpus": 4}) == 2
    assert teachers_at_once(3, seven_b, {"address": "ray://head:10001", "gpus": 0}) == 3  # the autoscaler adds GPUs
    assert teachers_at_once(2, [get_teacher("smollm2-135m")], {"address": "local", "gpus": 0}) == 2  # CPU teachers


def test_the_dry_run_prices_stages_for_the_gpu_its_config_names(monkeypatch):
    """[cluster] gpu and its price: each stage's dollars are its GPU-hours at that price (the
    judge's, its tokens at the API's); the throughputs follow the GPU (datasheet ratios from
    the measured and assumed references); disk counts hub weights, top-k and students."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config.load(ROOT / "configs/production.toml")
    assert cfg.cluster.gpu == "A10G"
    p = plan.build(cfg)
    price = cfg.cluster.usd_per_gpu_hour["A10G"]
    for s in p["stages"]:
        assert s["usd"] == pytest.approx(s["gpu_hours"] * price + (s.get("api_usd") or 0.0))
    judge = next(s for s in p["stages"] if s["stage"] == "judge")
    assert judge["api_usd"] == pytest.approx((judge["input_tokens"] * 2.5 + judge["output_tokens"] * 10.0) / 1e6)
    h100 = plan.build(config.load(ROOT / "configs/production.toml", ["cluster.gpu='H100'"]))
    assert h100["assumptions"]["generation_tokens_per_gpu_s"] == plan.GEN_TOKENS_PER_GPU_S
    assert p["gpu_hours"] > 3 * h100["gpu_hours"]  # an A10G: a fifth of the bandwidth, an eighth of the TFLOPS
    gen = next(s for s in p["stages"] if s["stage"] == "generate")
    assert gen["disk_bytes"] == pytest.approx(gen["topk_disk_bytes"] + gen["teacher_params"] * 2)
    assert p["disk_bytes"] > 100e9 and "disk: ~" in plan.render(p) and "cost: ~$" in plan.render(p)
    assert plan.tokens_for_kl_drop(0.062) == pytest.approx(7_200) and plan.tokens_for_kl_drop(0.3) > 1e7
    with pytest.raises(config.SettingError, match="cluster.gpu: 'V100' must be one of A10G, A100-80G, H100, H200"):
        config.load(ROOT / "configs/production.toml", ["cluster.gpu='V100'"])
    with pytest.raises(config.SettingError, match="cluster.usd_per_gpu_hour: has no price for cluster.gpu = 'H200'"):
        config.load(ROOT / "configs/production.toml", ["cluster.gpu='H200'"])


def test_the_judges_requests_follow_its_mode(monkeypatch):
    """Per judged fable: one request for a form; per question plus the age for the checklist;
    each criterion in both orders plus the age for pairwise; the gate's text loss on top."""
    from eval.rubric import RUBRIC_CHECKLIST, Rubric

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = config.load(ROOT / "configs/default.toml", ['judge.mode="form"', "judge.fluency_gate=false"])
    asked = plan.judge_load(base)["requests"]
    questions = len(Rubric.load(RUBRIC_CHECKLIST).checklist)
    for mode, gate, per_fable in [("checklist", False, questions + 1), ("checklist", True, questions + 2),
                                  ("pairwise", False, 2 * 4 + 1), ("pairwise", True, 2 * 4 + 2),
                                  # three echoed texts (alone, with the close, with a next line) and the
                                  # age question; the gate reads the first
                                  ("likelihood", False, 3 + 1), ("likelihood", True, 3 + 1)]:
        cfg = config.load(ROOT / "configs/default.toml", [f'judge.mode="{mode}"', f"judge.fluency_gate={str(gate).lower()}"])
        assert plan.judge_load(cfg)["requests"] == asked * per_fable, (mode, gate)


def test_the_production_teachers_as_teachers_of_one_student_plan_with_the_mix(monkeypatch):
    """The production config's commented 'which teacher makes the best student' set-up, as a
    team would turn it on: one checkpoint student for the three teachers, and their mix."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config.load(ROOT / "configs/production.toml", [
        'train.student_kind="checkpoint"', 'train.student_checkpoint="/models/student"', "train.quantization=\"none\"",
        'mix={"mistral-7b-instruct" = 1.0, "llama2-7b-chat" = 1.0, "falcon-7b-instruct" = 1.0}'])
    p = plan.build(cfg, gen_tok_s=2500)
    mixed = [s for s in p["stages"] if s.get("teacher") == "mix"]
    assert [s["stage"] for s in mixed] == ["train-kd", "evaluate-kd"]
    one = next(s for s in p["stages"] if s["stage"] == "train-kd" and s["teacher"] == "mistral-7b-instruct")
    # the same student, settings and steps as each teacher's own: priced alike
    assert {k: mixed[0][k] for k in ("resources", "tokens", "gpu_hours", "student_params")} == \
        {k: one[k] for k in ("resources", "tokens", "gpu_hours", "student_params")}
    assert mixed[0]["resources"] == "1 GPU" and mixed[1]["rows"] == 3 * 50
    assert "train-kd      [mix]" in plan.render(p)
