"""`fable-kd train --data DIR --config FILE`: a student trained from shards written elsewhere,
run as a user would, from another folder, with relative paths."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT, needs_models


def shards_of_smollm2(folder, n=4, k=5):
    """Teacher shards as another machine's run would have written them for SmolLM2: real
    token ids of real text, its tokenizer's fingerprint, a top-k led by the written token."""
    from transformers import AutoTokenizer

    from distill.schema import tokenizer_fingerprint, write_table_atomic
    from teacher.registry import get_teacher

    tok = AutoTokenizer.from_pretrained(get_teacher("smollm2-135m").model_path())
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        prompt = tok(f"Write a fable about fox number {i}.").input_ids
        ids = tok("The fox found a grape and shared it with the crow. Kindness is never wasted.").input_ids[: 8 + i]
        lp = np.sort(np.log(rng.dirichlet(np.ones(20), size=len(ids)))[:, :k], axis=1)[:, ::-1]
        top = [[t] + [int(x) for x in rng.choice(49152, size=k - 1, replace=False) if x != t][: k - 1] for t in ids]
        rows.append({"prompt_id": f"p{i}", "split": "train", "character": "fox", "trait": "kind", "setting": "wood",
                     "conflict": "hunger", "resolution": "sharing", "moral": "kindness", "variant": 0,
                     "instruction": "i", "sample_index": 0, "prompt_text": "p", "prompt_token_ids": prompt,
                     "text": tok.decode(ids), "token_ids": ids, "token_logprobs": lp[:, 0].tolist(),
                     "topk_ids": top, "topk_logprobs": lp.tolist(), "teacher_id": "smollm2-135m", "sampling": "{}",
                     "tokenizer_fingerprint": tokenizer_fingerprint(tok)})
    folder.mkdir(parents=True)
    write_table_atomic(rows, folder / "00000.parquet", {"top_k": k}, 49152)


@needs_models
def test_a_student_trains_from_a_folder_of_shards_given_relative(tmp_path):
    shards_of_smollm2(tmp_path / "from-elsewhere")
    env = {k: v for k, v in os.environ.items() if k != "KD_RUNS_DIR"}
    cmd = [sys.executable, "-m", "distill.cli", "train", "--data", "from-elsewhere", "--config", "configs/tiny.toml",
           "--objective", "kd", "--name", "t", "--set", "train.steps=2", "--set", "train.student_layers=2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = tmp_path / "runs" / "t" / "students" / "smollm2-135m-kd"
    trained = json.loads((student / "train.json").read_text())
    assert trained["steps"] == 2 and trained["rows"] == 4 and (student / "adapter").is_dir()
    assert (tmp_path / "runs" / "t" / "teachers" / "smollm2-135m").resolve() == (tmp_path / "from-elsewhere").resolve()
    # Started again, it finds the student done; a folder without shards is one line naming it.
    again = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0 and json.loads((student / "train.json").read_text()) == trained
    (tmp_path / "empty").mkdir()
    bad = subprocess.run([*cmd[:5], "empty", *cmd[6:]], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --data empty: no teacher shards")
