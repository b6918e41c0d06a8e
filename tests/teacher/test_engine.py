import json
import os
import re

import pytest

from teacher import engine


def wire(entries):
    """vLLM's per-token logprob entries as Ray Data LLM hands them over:
    {token_id: {"logprob", "rank", "decoded_token"}}, sampled token first."""
    return [{tid: {"logprob": lp, "rank": rank, "decoded_token": "x"} for tid, lp, rank in e} for e in entries]


def test_topk_is_rank_ordered_and_keeps_the_sampled_logprob():
    lps = wire([
        [(7, -3.0, 5), (1, -0.5, 1), (2, -1.5, 2)],  # sampled token 7 ranked 5th: outside top-2
        [(2, -0.2, 1), (9, -2.0, 2)],  # sampled token is the top one
    ])
    ids, top, chosen = engine.topk_from_logprobs(lps, [7, 2], k=2)
    assert ids == [[1, 2], [2, 9]]
    assert top == [[-0.5, -1.5], [-0.2, -2.0]]
    assert chosen == [-3.0, -0.2]


def test_topk_refuses_short_or_misaligned_entries():
    with pytest.raises(ValueError, match="expected 3"):
        engine.topk_from_logprobs(wire([[(1, -0.1, 1), (2, -2.0, 2)]]), [1], k=3)
    with pytest.raises(ValueError, match="2 logprob entries for 1 tokens"):
        engine.topk_from_logprobs(wire([[(1, -0.1, 1)], [(1, -0.1, 1)]]), [1], k=1)


def test_schema_row_matches_the_dataset_schema():
    from distill.schema import SCHEMA

    prompt = {"prompt_id": "a" * 16, "split": "train", "character": "fox", "trait": "sly", "setting": "s",
              "conflict": "c", "resolution": "r", "moral": "m", "variant": 0, "instruction": "i"}
    row = engine.schema_row(prompt, 0, "p", [1, 2], "text", [3], wire([[(3, -0.1, 1)]]), 1, "t",
                            engine.sampling_dict(8, 1.0, 1.0, 1), "fp")
    assert set(row) == set(SCHEMA.names)
    assert json.loads(row["sampling"])["logprobs"] == 1


def test_engine_kwargs_raise_max_logprobs_and_keep_remote_code_off():
    from teacher.registry import get_teacher

    kw = engine.engine_kwargs(get_teacher("smollm2-135m"), top_k=50, max_model_len=512)
    assert kw["max_logprobs"] == 50 and kw["trust_remote_code"] is False
    assert kw["logprobs_mode"] == "raw_logprobs"
    assert kw["load_format"] == "safetensors" and "revision" not in kw  # never a pickle; no hub revision


def test_a_pinned_hub_teacher_passes_its_commit_to_vllm_for_weights_and_tokenizer():
    from teacher.registry import declare

    sha = "c" * 40
    kw = engine.engine_kwargs(declare("llama2-7b-chat", {"revision": sha}), top_k=20, max_model_len=4096)
    assert kw["revision"] == kw["tokenizer_revision"] == sha
    assert kw["dtype"] == "bfloat16" and kw["max_model_len"] == 4096


def test_on_cpu_the_model_runs_in_the_engine_core_process_and_on_gpu_as_vllm_chooses():
    from teacher.engine import cpu_env

    assert cpu_env(2)["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and cpu_env(2)["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in cpu_env(2, gpus=1)
    # every core for torch, not the one Ray gives an actor with a CPU:1 bundle
    assert int(cpu_env(2)["OMP_NUM_THREADS"]) == len(os.sched_getaffinity(0)) and "OMP_NUM_THREADS" not in cpu_env(2, gpus=1)


def test_a_cpu_engines_kv_cache_defaults_to_vllms_own_variable(monkeypatch):
    from ray_cluster.generation_config import GenerationConfig
    from teacher.engine import cpu_env, default_kv_cache_gib

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert default_kv_cache_gib() == 2 and GenerationConfig().kv_cache_gib == 2
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    assert GenerationConfig().kv_cache_gib == 3 and cpu_env()["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert GenerationConfig(kv_cache_gib=5).kv_cache_gib == 5 and cpu_env(5)["VLLM_CPU_KVCACHE_SPACE"] == "5"
    for bad in ("two", "0", "1.5", "-1"):
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", bad)
        with pytest.raises(ValueError, match=f"VLLM_CPU_KVCACHE_SPACE='{re.escape(bad)}': must be a whole number"):
            GenerationConfig()


def short_context_teacher(tmp_path, positions: int):
    """A tiny Llama-2 folder whose model allows only `positions` tokens, declared by path."""
    import json

    from tests.tiny_models import build

    folder = build(tmp_path, "tiny-llama2")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": positions}))
    toml = tmp_path / "short.toml"
    toml.write_text(f'name = "short"\nteachers = ["short"]\nn_train = 2\nn_heldout = 1\nsft_baseline = false\n'
                    f'[generation]\nmax_new_tokens = 64\nmax_model_len = 1024\n[judge]\nenabled = false\n'
                    f'[teacher.short]\npath = "{folder}"\nfamily = "llama2"\n')
    return folder, toml


def test_the_engine_runs_at_the_models_own_length_when_it_is_shorter(tmp_path):
    from distill.config import load
    from distill.pipeline import preflight

    folder, toml = short_context_teacher(tmp_path, 256)
    cfg = load(toml)
    tr = cfg.teachers[0]
    assert engine.model_context(str(folder)) == 256
    kw = engine.engine_kwargs(tr.model, 20, tr.generation.max_model_len, model_path=str(folder))
    assert kw["max_model_len"] == 256  # not 1024, which vLLM refuses inside the engine actor
    assert engine.engine_kwargs(tr.model, 20, 128, model_path=str(folder))["max_model_len"] == 128
    preflight(cfg)  # prompts (~60 tokens) and 64 new tokens fit in 256


def test_a_model_too_short_for_its_prompts_and_new_tokens_stops_at_preflight_naming_both(tmp_path):
    from distill.config import load
    from distill.pipeline import preflight

    _, toml = short_context_teacher(tmp_path, 96)
    with pytest.raises(ValueError, match=r"^teacher 'short': the model allows 96 tokens \(max_position_embeddings\), "
                                         r"but its longest prompt \(\d+ tokens\) and generation.max_new_tokens \(64\) need \d+"):
        preflight(load(toml))
