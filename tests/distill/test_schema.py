import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyarrow as pa
import pyarrow.parquet as pq

import numpy as np

from distill.schema import (LP_STEP, SCHEMA, dequantize_logprobs, id_bytes, quantize_logprobs, read_rows, renumbering,
                           tokenizer_fingerprint, write_table_atomic)


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
    # two byte planes for a 49k vocabulary
    assert [n for n in stored.names if n.startswith("topk_ids")] == ["topk_ids_b0", "topk_ids_b1"]
    assert stored.field("topk_ids_b0").type == pa.list_(pa.uint8())
    assert [r["prompt_id"] for r in read_rows(tmp_path, split="eval")] == ["p1"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_malformed_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet shards"):
        read_rows(tmp_path)
    (tmp_path / "00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="00000.parquet: not a readable shard"):
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


def test_logprob_levels_hand_case_and_error_bound():
    lps = [[-0.01, -1.30, -4.00], [-2.00, -2.03, -40.0]]
    q = quantize_logprobs(np.array(lps))
    # absolute levels at 1/64 nat: 1, 83, 256 and 128, 130, 2560; stored as rank 1 then drops
    assert q.tolist() == [[1, 82, 173], [128, 2, 2430]]
    back = dequantize_logprobs(q)
    assert np.abs(back - np.array(lps)).max() <= LP_STEP / 2 + 1e-6
    assert (np.diff(back, axis=1) <= 0).all()


def test_renumbering_is_a_permutation_that_puts_frequent_ids_first():
    fwd, inv = renumbering(np.array([900, 3, 512, 0]), 1000)
    assert fwd[[900, 3, 512, 0]].tolist() == [0, 1, 2, 3]
    assert sorted(fwd.tolist()) == list(range(1000)) and (inv[fwd] == np.arange(1000)).all()
    assert fwd[1] in (512, 900) and fwd[2] in (512, 900)  # displaced low ids take the freed slots


def test_large_vocabulary_roundtrips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.choice(262144, size=(50, 4), replace=True)
    ids[:, 0] = 262143  # the very last id needs the third byte plane
    lps = np.sort(-rng.exponential(3.0, size=(50, 4)), axis=1)[:, ::-1]
    row = {**a_row(0), "token_ids": ids[:, 0].tolist(), "token_logprobs": lps[:, 0].tolist(),
           "topk_ids": ids.tolist(), "topk_logprobs": lps.tolist()}
    write_table_atomic([row, a_row(1)], tmp_path / "00000.parquet", {}, 262144)
    assert id_bytes(262144) == 3 and id_bytes(65536) == 2 and id_bytes(65537) == 3
    back = read_rows(tmp_path)
    assert back[0]["topk_ids"] == ids.tolist() and back[1]["topk_ids"] == [[3, 4]]
    assert np.abs(np.array(back[0]["topk_logprobs"]) - lps).max() <= LP_STEP / 2 + 1e-6
    with pytest.raises(ValueError, match="outside the vocabulary of 1000"):
        write_table_atomic([row], tmp_path / "00001.parquet", {}, 1000)


def test_empty_fable_roundtrips(tmp_path):
    r = {**a_row(0), "token_ids": [], "token_logprobs": [], "topk_ids": [], "topk_logprobs": []}
    write_table_atomic([r], tmp_path / "00000.parquet")
    assert read_rows(tmp_path)[0]["topk_ids"] == []


def fable_rows(n=4, T=12, K=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lp = np.sort(np.log(rng.dirichlet(np.ones(50), size=T))[:, :K], axis=1)[:, ::-1]
        ids = rng.choice(49152, size=(T, K), replace=False) if T else np.zeros((0, K), int)
        rows.append({**a_row(i), "token_ids": ids[:, 0].tolist(), "token_logprobs": lp[:, 0].tolist(),
                     "topk_ids": ids.tolist(), "topk_logprobs": lp.tolist(), "text": f"fable {i} " * T})
    return rows


@pytest.mark.parametrize("change, problem", [
    (lambda r: r["topk_logprobs"][2].__setitem__(0, float("nan")), "NaN logprob"),
    (lambda r: r["token_logprobs"].__setitem__(1, float("nan")), "NaN logprob"),
    (lambda r: r["topk_logprobs"][0].__setitem__(0, float("-inf")), "rank-1 logprob that is not finite"),
    (lambda r: r["topk_logprobs"][3].reverse(), "out of order at token 3"),
    (lambda r: r["topk_ids"].pop(), "topk_ids has 11 entries for 12 generated tokens"),
    (lambda r: r["topk_logprobs"][4].pop(), "unequal length"),
    (lambda r: r["topk_logprobs"].__setitem__(6, [0.7] + r["topk_logprobs"][6][1:]), "topk_logprobs at token 6 holds a positive logprob"),
    (lambda r: r["topk_logprobs"].__setitem__(2, [abs(x) for x in r["topk_logprobs"][2]][::-1]), "token 2 holds a positive logprob"),
    (lambda r: r["token_logprobs"].__setitem__(7, 2.5), "token_logprobs at token 7 holds a positive logprob"),
])
def test_untrustworthy_top_k_is_refused_before_it_is_written(tmp_path, change, problem):
    rows = fable_rows()
    change(rows[1])
    with pytest.raises(ValueError, match=f"row p1/0 for .*00000.parquet: .*{problem}"):
        write_table_atomic(rows, tmp_path / "00000.parquet", {}, 49152)
    assert not list(tmp_path.iterdir())
    rows[1]["topk_logprobs"] = fable_rows()[1]["topk_logprobs"]
    rows[1]["topk_logprobs"][5][3:] = [float("-inf")] * 2  # outside the sampling support: allowed
    rows[1]["topk_ids"], rows[1]["token_logprobs"] = fable_rows()[1]["topk_ids"], fable_rows()[1]["token_logprobs"]
    write_table_atomic(rows, tmp_path / "00000.parquet", {}, 49152)


SHARD_BYTES: dict = {}


def a_shard(tmp_path_factory) -> tuple[bytes, list[dict]]:
    if not SHARD_BYTES:
        d = tmp_path_factory.mktemp("shard")
        write_table_atomic(fable_rows(), d / "00000.parquet", {"top_k": 5}, 49152)
        SHARD_BYTES["data"], SHARD_BYTES["rows"] = (d / "00000.parquet").read_bytes(), read_rows(d)
    return SHARD_BYTES["data"], SHARD_BYTES["rows"]


@given(data=st.data())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_damaged_shard_is_one_error_naming_it_or_reads_back_unchanged(tmp_path_factory, data):
    """Byte flips, truncations and zeroed runs anywhere in a shard: never another exception,
    never changed rows."""
    good, rows = a_shard(tmp_path_factory)
    bad = bytearray(good)
    kind = data.draw(st.sampled_from(["flip", "truncate", "zero"]))
    at = data.draw(st.integers(0, len(good) - 1))
    if kind == "flip":
        bad[at] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del bad[at:]
    else:
        bad[at : at + data.draw(st.integers(1, 64))] = bytes(min(64, len(good) - at))[: len(bad[at : at + 64])]
    d = tmp_path_factory.mktemp("bad")
    (d / "00000.parquet").write_bytes(bytes(bad))
    try:
        back = read_rows(d)
    except ValueError as e:
        assert str(e).startswith(f"{d / '00000.parquet'}: ") and "delete it and rerun" in str(e)
    else:
        assert back == rows


def test_regression_a_flip_in_the_codec_metadata_is_caught(tmp_path_factory):
    """Found by the fuzz above before the checksum covered the metadata: one bit of the
    base64 frequent-id table in the footer (outside every page checksum) changed the
    decoded ids with no error. Here the same damage is made through Arrow."""
    import base64
    import json

    good, _ = a_shard(tmp_path_factory)
    d = tmp_path_factory.mktemp("meta")
    (d / "00000.parquet").write_bytes(good)
    table = pq.read_table(d / "00000.parquet")
    meta = json.loads(table.schema.metadata[b"kd"])
    ids = bytearray(base64.b64decode(meta["frequent_ids"]))
    ids[3] ^= 1
    meta["frequent_ids"] = base64.b64encode(bytes(ids)).decode()
    pq.write_table(table.replace_schema_metadata({b"kd": json.dumps(meta).encode()}), d / "00000.parquet")
    with pytest.raises(ValueError, match="00000.parquet: stored values do not match the shard's content checksum; "
                                         "delete it and rerun"):
        read_rows(d)


def test_held_out_rows_are_read_without_decoding_the_training_shards(tmp_path, monkeypatch):
    """A teacher's dataset as generation writes it: training shards, then the held-out ones.
    Reading split="eval" decodes only the shards that hold eval rows (the split column says
    which), and returns what filtering every row gave."""
    from distill import schema

    rows = [{**a_row(i), "prompt_id": f"p{i}", "split": "train" if i < 5 else "eval"} for i in range(7)]
    for n, chunk in enumerate((rows[0:2], rows[2:4], rows[4:6], rows[6:7])):
        write_table_atomic(chunk, tmp_path / f"{n:05d}.parquet", {"top_k": 2}, 49152)
    decoded = []
    real = schema._read_shard
    monkeypatch.setattr(schema, "_read_shard", lambda f, arrays=False: decoded.append(f.name) or real(f, arrays))
    assert [r["prompt_id"] for r in read_rows(tmp_path, split="eval")] == ["p5", "p6"]
    assert decoded == ["00002.parquet", "00003.parquet"]
    decoded.clear()
    assert [r["prompt_id"] for r in read_rows(tmp_path, split="train")] == ["p0", "p1", "p2", "p3", "p4"]
    assert decoded == ["00000.parquet", "00001.parquet", "00002.parquet"]
