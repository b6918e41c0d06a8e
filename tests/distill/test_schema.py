import pytest

from distill.schema import SCHEMA, read_rows, tokenizer_fingerprint, write_table_atomic


def a_row(i=0):
    return {"prompt_id": f"p{i}", "split": "train", "character": "c", "trait": "t", "setting": "s", "conflict": "x",
            "resolution": "r", "moral": "m", "variant": 0, "instruction": "i", "sample_index": 0, "prompt_text": "p",
            "prompt_token_ids": [1, 2], "text": "t", "token_ids": [3], "token_logprobs": [-0.5],
            "topk_ids": [[3, 4]], "topk_logprobs": [[-0.5, -1.0]], "teacher_id": "tt", "sampling": "{}",
            "tokenizer_fingerprint": "f"}


def test_roundtrip_and_split_filter(tmp_path):
    write_table_atomic([a_row(0), {**a_row(1), "split": "eval"}], tmp_path / "00000.parquet", {"top_k": 2})
    assert [r["prompt_id"] for r in read_rows(tmp_path)] == ["p0", "p1"]
    assert [r["prompt_id"] for r in read_rows(tmp_path, split="eval")] == ["p1"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_malformed_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet shards"):
        read_rows(tmp_path)
    (tmp_path / "00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="00000.parquet: not a readable Parquet file"):
        read_rows(tmp_path)


def test_fingerprint_compares_token_maps_not_sizes():
    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    a, b = Tok({"a": 0, "b": 1}), Tok({"a": 1, "b": 0})
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(Tok({"b": 1, "a": 0}))
    assert len(SCHEMA.names) == len(set(SCHEMA.names))
