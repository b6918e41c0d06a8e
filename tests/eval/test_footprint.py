"""The report's headline figures (eval/footprint.py): weights read from safetensors headers,
the ratios, and one real vLLM serve of the embedded SmolLM2."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from eval.footprint import headline, sentence, serve_once, served_memory, weights
from teacher.engine import cpu_env, student_engine_kwargs

from tests.conftest import ROOT, needs_models


def test_weights_counts_every_tensor_in_every_shard(tmp_path):
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float16)}, str(tmp_path / "model-1.safetensors"))
    save_file({"c": np.zeros((2, 2, 2), np.float32)}, str(tmp_path / "model-2.safetensors"))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")  # a pickle is never opened or counted
    w = weights(str(tmp_path))
    assert w["params"] == 12 + 5 + 8
    assert w["weight_bytes"] == sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))


def test_weights_of_a_model_not_on_this_machine_are_unknown(tmp_path):
    assert weights(str(tmp_path)) == {}  # a folder without safetensors
    assert weights("nobody/not-a-cached-model-xyz", revision="main") == {}


figure = st.one_of(st.none(), st.floats(0.01, 1e6))


@given(t=st.tuples(figure, figure, figure, figure), s=st.tuples(figure, figure, figure, figure))
def test_headline_ratios_are_student_over_teacher_or_unknown(t, s):
    def writer(label, f):
        return {"label": label, "tokens_per_s": f[0], "memory": f[1], "params": f[2],
                "judge": None if f[3] is None else {"mean": f[3], "low": f[3], "high": f[3]}}

    h = headline([writer("teacher", t), writer("kd", s)])
    r = h["students"][0]
    pairs = [("speedup", s[0], t[0]), ("memory_less", t[1], s[1]), ("params_less", t[2], s[2]),
             ("judge_kept", s[3], t[3])]
    for key, num, den in pairs:
        assert (r[key] is None) == (num is None or den is None)
        if r[key] is not None:
            assert math.isclose(r[key], num / den)
    words = sentence(h)
    assert words.startswith("kd keeps ") and "teacher's judge score" in words
    assert ("an unmeasured" in words) == any(r[k] is None for k in ("judge_kept", "speedup", "memory_less", "params_less"))


def test_gpu_memory_is_the_figure_where_there_is_one():
    assert served_memory({"peak_rss_bytes": 5, "peak_gpu_bytes": 9}) == 9
    assert served_memory({"peak_rss_bytes": 5}) == 5
    assert served_memory({}) is None


@needs_models
def test_serving_smollm2_writes_every_token_and_measures_its_memory():
    model = str(ROOT / "models" / "smollm2-135m")
    fig = serve_once(model, [[1, 2, 3, 4, 5], [6, 7, 8]], 12, {"temperature": 1.0, "top_p": 0.95},
                     student_engine_kwargs(64), cpu_env(1))
    assert fig["tokens"] == 2 * 12 and fig["prompts"] == 2  # end of text ignored: every writer writes alike
    assert fig["tokens_per_s"] > 0 and fig["generate_s"] > 0 and fig["engine_start_s"] > 0
    # the process held at least its fp32 weights (538 MB) and vLLM's 1 GiB KV cache
    assert fig["peak_rss_bytes"] > weights(model)["weight_bytes"] + 2**30
    json.dumps(fig)


def test_a_model_that_cannot_be_served_is_one_named_error(tmp_path):
    with pytest.raises(RuntimeError, match=f"serving {tmp_path} for the footprint failed"):
        serve_once(str(tmp_path), [[1, 2]], 4, {"temperature": 1.0, "top_p": 1.0}, student_engine_kwargs(64), cpu_env(1))
