"""Training rows as an endless stream of batches, read one shard at a time.

Memory does not grow with the number of rows: a shard is decoded, filtered and encoded
when the stream reaches it, and at most `buffer` encoded rows are held (a shuffle buffer,
as in HF datasets' IterableDataset.shuffle and Ray Data's local shuffle). Passes follow
one another without a seam, each in a seeded order of its own, so the stream is a pure
function of its source and seed: the Trainer resumes a killed run by consuming the batches
it had trained on, and lands on the next row the killed run would have read.

One process reads the shards itself (`TrainingShards.rows`). Ray Train workers read their
share from Ray Data (`TrainingShards.dataset`, split by Ray Train's get_dataset_shard), and
the same buffer and batching run in each worker.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distill.data import Collator, encode_row

# Rows a Ray Data block holds (whole shards). Measured at 20,000 rows into 2 Ray Train workers
# (benchmarks/scale.py, 2 cores): 288 rows/s at 16 rows a block (one shard), 357 at 64, 370
# at 128, where the worker's peak memory grew by a quarter; 64 encoded rows of production's
# shape (400 tokens, top-20) are about 4 MB.
ROWS_PER_BLOCK = 64


@dataclass(frozen=True)
class Source:
    """One teacher's share of a multi-teacher student's rows: its loss weight, and how its rows
    reach the student's tokens."""

    name: str
    weight: float = 1.0
    carrier: object = field(default=None, compare=False)  # distill.align.Carrier: a student of another tokenizer


@dataclass(frozen=True)
class TrainingShards:
    """The training rows of a folder of shards (or of several teachers' folders), without
    holding them: the shards that hold some, how many rows are kept, and what to leave out or
    re-encode on the way."""

    files: tuple[str, ...]  # absolute paths: a Ray worker reads them from a folder of its own
    rows: int
    max_len: int
    exclude: frozenset = frozenset()  # (prompt_id, sample_index) of rows left out (too toxic); with sources, (source, ...)
    # A student of another tokenizer family: the teacher's text re-encoded for it, with the
    # top-k carried onto its tokens (distill/align.py; SFT reads only the text).
    carrier: object = field(default=None, compare=False)
    # A multi-teacher student: each file's index into `sources`, whose weight and re-encoding
    # apply to its rows (the fields above then go unused).
    file_source: tuple[int, ...] = ()
    sources: tuple[Source, ...] = ()

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)

    def read(self, path: str) -> list[dict]:
        """The encoded training rows of one shard (a damaged shard: one ValueError naming it)."""
        from distill.schema import read_shard

        i = self.file_source[self.files.index(path)] if self.sources else None
        src = self.sources[i] if i is not None else Source("", 1.0, self.carrier)
        rows = [r for r in read_shard(Path(path), arrays=True)
                if r["split"] == "train" and ((r["prompt_id"], r["sample_index"]) if i is None
                                              else (i, r["prompt_id"], r["sample_index"])) not in self.exclude]
        encode = src.carrier.encode if src.carrier is not None else encode_row
        encoded = [encode(r, self.max_len) for r in rows]
        if i is not None:
            for e in encoded:
                e["source"], e["weight"] = i, src.weight
        return encoded

    def passes(self, seed: int) -> Callable[[int], Iterable[dict]]:
        """Pass `epoch` over the shards, in that pass's seeded order of shards."""
        def one(epoch: int) -> Iterator[dict]:
            files = list(self.files)
            random.Random(f"{seed}:{epoch}").shuffle(files)
            for f in files:
                yield from self.read(f)
        return one

    def dataset(self, seed: int):
        """The same rows as a Ray Data dataset: blocks of whole shards, about ROWS_PER_BLOCK rows
        each, in a seeded order, read by Ray Data's tasks as Ray Train's workers pull them."""
        import ray.data

        # Blocks made by Ray Data's read tasks from shard numbers: a block per shard put by the
        # driver would be owned by the driver, which would then hold metadata for every shard.
        # The seeded order is drawn here: Ray Data's randomize_block_order is an all-to-all step
        # that waits for every block before the first row.
        files = list(self.files)
        random.Random(f"{seed}:shards").shuffle(files)
        return ray.data.range(len(files), override_num_blocks=self.blocks()).flat_map(
            lambda item: self.read(files[item["id"]]))

    def blocks(self) -> int:
        """How many Ray Data blocks the shards make: whole shards, about ROWS_PER_BLOCK rows a
        block. A block is one Ray task: a block per 16-row shard cost 10% of rows/s at 200,000
        rows (BENCHMARKS.md, the scale section) and 15 s more before the first row."""
        per_shard = max(1, self.rows // max(1, len(self.files)))
        return max(1, math.ceil(len(self.files) / max(1, ROWS_PER_BLOCK // per_shard)))


def owned(row: dict) -> dict:
    """A row whose arrays are its own: Ray Data's rows are views into their block in the object
    store, and one buffered view would keep its whole block there."""
    return {k: v.copy() if hasattr(v, "copy") else v for k, v in row.items()}


def ray_passes(shard) -> Callable[[int], Iterable[dict]]:
    """Passes over a Ray Train worker's share of a Ray Data dataset (get_dataset_shard)."""
    return lambda epoch: (owned(r) for r in shard.iter_rows())


def endless(passes: Callable[[int], Iterable[dict]], seed: int, buffer: int) -> Iterator[dict]:
    """Rows of pass 0, 1, 2, ... through a shuffle buffer of `buffer` rows, reseeded each pass."""
    for epoch in itertools.count():
        rng = random.Random(f"{seed}:{epoch}:buffer")
        held: list[dict] = []
        for row in passes(epoch):
            if len(held) < buffer:
                held.append(row)
                continue
            i = rng.randrange(buffer)
            yield held[i]
            held[i] = row
        if not held:
            raise ValueError("no training rows to stream")
        rng.shuffle(held)
        yield from held


class Batches(torch.utils.data.IterableDataset):
    """Collated batches of `batch_size` rows, forever: what KDTrainer trains on. The
    Trainer stops at max_steps; a batch may straddle two passes."""

    def __init__(self, rows: Callable[[], Iterator[dict]], batch_size: int, pad_id: int):
        super().__init__()
        self.rows, self.batch_size, self.collate = rows, batch_size, Collator(pad_id)

    def __iter__(self) -> Iterator[dict]:
        rows = self.rows()
        while True:
            yield self.collate([next(rows) for _ in range(self.batch_size)])


def in_memory(rows: list[dict], max_len: int) -> Callable[[int], Iterable[dict]]:
    """Passes over rows already in memory (tests, small experiments): every pass the same rows."""
    encoded = [encode_row(r, max_len) for r in rows]
    return lambda epoch: iter(encoded)
