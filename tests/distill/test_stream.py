"""Training rows streamed from shards: every pass holds every kept row once, in a seeded order
of its own, through a buffer that bounds what is held; the same seed gives the same stream."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.schema import write_table_atomic
from distill.stream import ROWS_PER_BLOCK, Batches, TrainingShards, endless


def fable(i: int, split: str = "train", n: int = 3) -> dict:
    gen = [10 + (i + j) % 50 for j in range(n)]
    return {"prompt_id": f"p{i}", "split": split, "character": "fox", "trait": "sly", "setting": "wood",
            "conflict": "c", "resolution": "r", "moral": "m", "variant": 0, "instruction": "Write.",
            "sample_index": 0, "prompt_text": "Write.", "prompt_token_ids": [1, 2], "text": f"fable {i}",
            "token_ids": gen, "token_logprobs": [-0.5] * n, "topk_ids": [[g, g + 1] for g in gen],
            "topk_logprobs": [[-0.5, -1.5]] * n, "teacher_id": "t", "sampling": "{}",
            "tokenizer_fingerprint": "f"}


def shards(tmp_path, sizes: list[int], eval_every: int = 0) -> TrainingShards:
    files, i, train = [], 0, 0
    for s, size in enumerate(sizes):
        rows = []
        for _ in range(size):
            split = "eval" if eval_every and i % eval_every == eval_every - 1 else "train"
            rows.append(fable(i, split, n=1 + i % 5))  # unequal lengths
            train += split == "train"
            i += 1
        write_table_atomic(rows, tmp_path / f"{s:05d}.parquet", vocab_size=64)
        files.append(str(tmp_path / f"{s:05d}.parquet"))
    return TrainingShards(files=tuple(files), rows=train, max_len=32)


def ids(stream, n):
    return [int(r["input_ids"][-1]) * 1000 + len(r["labels"]) for r in itertools.islice(stream, n)]


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5), buffer=st.integers(1, 40),
       seed=st.integers(0, 3))
def test_each_pass_is_every_training_row_once_and_the_seed_fixes_the_stream(tmp_path_factory, sizes, buffer, seed):
    data = shards(tmp_path_factory.mktemp("s"), sizes, eval_every=4)
    if not data.rows:
        with pytest.raises(ValueError, match="no training rows"):
            next(endless(data.passes(seed), seed, buffer))
        return
    stream = endless(data.passes(seed), seed, buffer)
    rows = list(itertools.islice(stream, 3 * data.rows))
    keys = [(tuple(r["input_ids"].tolist()), r["start"]) for r in rows]
    one_pass = sorted(keys[: data.rows])
    for p in range(3):  # each pass: the same multiset of rows, no eval row among them
        assert sorted(keys[p * data.rows:(p + 1) * data.rows]) == one_pass
    assert len(one_pass) == sum(sizes) - sum(1 for i in range(sum(sizes)) if i % 4 == 3)
    again = list(itertools.islice(endless(data.passes(seed), seed, buffer), 3 * data.rows))
    assert [(tuple(r["input_ids"].tolist()), r["start"]) for r in again] == keys


def test_passes_differ_and_the_buffer_mixes_rows_across_shards(tmp_path):
    data = shards(tmp_path, [8] * 6)
    stream = list(itertools.islice(endless(data.passes(0), 0, buffer=16), 96))
    first, second = [tuple(r["labels"].tolist()) for r in stream[:48]], [tuple(r["labels"].tolist()) for r in stream[48:]]
    assert first != second  # a new order each pass
    shard_of = {tuple(fable(i, n=1 + i % 5)["token_ids"]): i // 8 for i in range(48)}
    # Rows of one shard do not come out as a block: the first eight come from several shards.
    assert len({shard_of[k] for k in first[:8]}) > 1


def test_rows_left_out_never_stream_and_a_damaged_shard_is_named(tmp_path):
    data = shards(tmp_path, [4, 4])
    kept = TrainingShards(files=data.files, rows=7, max_len=32, exclude=frozenset({("p2", 0)}))
    seen = [r for r in itertools.islice(endless(kept.passes(1), 1, 4), 21)]
    assert len(seen) == 21 and all(len(r["labels"]) != 3 or r["input_ids"][-1] != 14 for r in seen)
    (tmp_path / "00001.parquet").write_bytes(b"PAR1 not a shard")
    with pytest.raises(ValueError, match=r"00001\.parquet: not a readable shard.*rerun"):
        list(itertools.islice(endless(data.passes(0), 0, 1), 20))


def test_batches_straddle_passes_and_are_of_batch_size(tmp_path):
    data = shards(tmp_path, [5])  # 5 rows: batches of 2 cross each pass's end
    batches = iter(Batches(lambda: endless(data.passes(0), 0, 8), batch_size=2, pad_id=0))
    got = [next(batches) for _ in range(5)]
    assert all(b["input_ids"].shape[0] == 2 for b in got)
    assert sum(int(b["kd_mask"].sum()) for b in got) == 2 * sum(1 + i % 5 for i in range(5))


def test_held_rows_are_bounded_by_the_buffer_not_the_dataset(tmp_path):
    """What the stream holds at any time: the buffer and one shard, however many shards."""
    data = shards(tmp_path, [3] * 30)
    held_max, reads = 0, []
    real = data.read

    class Counting(TrainingShards):
        def read(self, path):
            rows = real(path)
            reads.append(len(rows))
            return rows

    counted = Counting(**{f: getattr(data, f) for f in ("files", "rows", "max_len")})
    stream = endless(counted.passes(0), 0, buffer=5)
    for n, _ in enumerate(itertools.islice(stream, 90), 1):
        held_max = max(held_max, sum(reads) - n)
    assert held_max <= 5 + 3  # the buffer and the shard being read


def test_several_teachers_stream_as_one_each_row_tagged_with_its_teacher_and_weight(tmp_path):
    from distill.stream import Source

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    one, two = shards(a, [3, 2]), shards(b, [4])
    mixed = TrainingShards(files=one.files + two.files, rows=one.rows + two.rows, max_len=32,
                           file_source=(0, 0, 1), sources=(Source("first", 1.0), Source("second", 0.25)),
                           exclude=frozenset({(1, "p0", 0)}))  # the second teacher's p0 only
    rows = list(mixed.passes(seed=0)(0))
    assert mixed.source_names == ("first", "second")
    assert sorted((r["source"], r["weight"]) for r in rows) == [(0, 1.0)] * 5 + [(1, 0.25)] * 3
    batch = next(iter(Batches(lambda: endless(mixed.passes(0), 0, 4), 8, pad_id=0)))
    assert set(batch["source"].tolist()) == {0, 1}
    assert set(batch["row_weight"][batch["kd_mask"] > 0].tolist()) == {1.0, 0.25}


@given(st.integers(1, 20_000), st.integers(1, 300))
def test_ray_blocks_hold_whole_shards_about_rows_per_block_each(files, per_shard):
    """Ray Data's blocks: whole shards, at most ROWS_PER_BLOCK rows each (one shard where a
    shard alone holds more), and one block for data that fits in one."""
    data = TrainingShards(files=tuple(f"/s{i}" for i in range(files)), rows=files * per_shard, max_len=8)
    blocks = data.blocks()
    assert 1 <= blocks <= files
    shards_per_block = -(-files // blocks)
    assert shards_per_block * per_shard <= max(ROWS_PER_BLOCK, per_shard)
    if files * per_shard <= ROWS_PER_BLOCK:
        assert blocks == 1
    if per_shard >= ROWS_PER_BLOCK:
        assert blocks == files  # a shard is already a block's worth
