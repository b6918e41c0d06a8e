import pytest

import pyarrow as pa
import pyarrow.parquet as pq

from distill.schema import LP_STEP, SCHEMA, decode_topk, encode_topk, read_rows, tokenizer_fingerprint, write_table_atomic


def a_row(i=0):
    return {"prompt_id": f"p{i}", "split": "train", "character": "c", "trait": "t", "setting": "s", "conflict": "x",
            "resolution": "r", "moral": "m", "variant": 0, "instruction": "i", "sample_index": 0, "prompt_text": "p",
            "prompt_token_ids": [1, 2], "text": "t", "token_ids": [3], "token_logprobs": [-0.5],
            "topk_ids": [[3, 4]], "topk_logprobs": [[-0.5, -1.0]], "teacher_id": "tt", "sampling": "{}",
            "tokenizer_fingerprint": "f"}


def test_roundtrip_and_split_filter(tmp_path):
    write_table_atomic([a_row(0), {**a_row(1), "split": "eval"}], tmp_path / "00000.parquet", {"top_k": 2}, 49152)
    back = read_rows(tmp_path)
    assert [r["prompt_id"] for r in back] == ["p0", "p1"]
    assert back[0]["topk_ids"] == [[3, 4]] and back[0]["topk_logprobs"] == [[-0.5, -1.0]]
    assert set(back[0]) == set(SCHEMA.names)
    stored = pq.read_table(tmp_path / "00000.parquet").schema
    assert stored.field("topk_ids_flat").type == pa.list_(pa.uint16())  # narrow ids for a 49k vocabulary
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


def test_topk_codec_hand_case_and_error_bound():
    ids = [[7, 2, 9], [1, 5, 3]]
    lps = [[-0.01, -1.30, -4.00], [-2.00, -2.03, -40.0]]
    enc = encode_topk(ids, lps)
    # levels: row 0 -> 0, 21, 64 ; row 1 -> 32, 32, 640 (gap 608 saturates at 255)
    assert enc["topk_lp_q"].tolist() == [0, 21, 43, 32, 0, 255]
    back_ids, back_lp = decode_topk(enc["topk_k"], enc["topk_ids_flat"], enc["topk_lp_q"])
    assert back_ids == ids
    for got, want in zip(sum(back_lp, [])[:5], sum(lps, [])[:5]):
        assert abs(got - want) <= LP_STEP / 2 + 1e-6
    assert back_lp[1][2] <= back_lp[1][1]  # a saturated gap stays below its predecessor


def test_empty_fable_roundtrips(tmp_path):
    r = {**a_row(0), "token_ids": [], "token_logprobs": [], "topk_ids": [], "topk_logprobs": []}
    write_table_atomic([r], tmp_path / "00000.parquet")
    assert read_rows(tmp_path)[0]["topk_ids"] == []
