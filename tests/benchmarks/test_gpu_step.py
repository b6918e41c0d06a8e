"""The GPU check's step benchmark, run here at toy size on CPU so the script cannot rot
between the sessions that have a GPU."""

import json

from benchmarks import gpu_step


def test_every_variant_runs_and_is_compared_with_the_cross_entropy_step(tmp_path):
    out = tmp_path / "step.json"
    result = gpu_step.main(["--shape", "tiny", "--device", "cpu", "--rows", "2", "--seq", "16", "--steps", "2",
                            "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    v = result["variants"]
    assert list(v) == ["sft", "kd-topk", "kd-dense", "sft-adamw", "lora-sft", "lora-kd-topk", "lora-sft-adamw"]
    assert v["sft"]["time_vs_sft"] == 1.0 and all(x["median_s"] > 0 for x in v.values())
    assert result["shape"] == "tiny" and result["params"] > 0


def test_the_7b_shape_is_llama_2_7b():
    from transformers import LlamaConfig

    from distill.plan import params_from_config

    kind, config, full, lora = gpu_step.SHAPES["llama2-7b"]
    layers, params = params_from_config({**LlamaConfig(**config).to_dict(), "model_type": "llama"})
    assert kind == "Llama" and layers == 32 and abs(params - 6.74e9) / 6.74e9 < 0.01
    assert "kd-topk" in full and "lora-kd-topk" in lora
