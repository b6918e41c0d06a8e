"""The teacher-output dataset: the one contract between generation, training and evaluation.

One row is one completion of one prompt by one teacher. For every generated token the
teacher's top-k alternatives are kept (ids and log-probabilities, sorted by rank), plus
the log-probability of the token actually sampled. Only the top-k survives, so the mass
outside it (1 - sum(exp(topk_logprobs))) is accounted for by the losses as a tail bucket.
Log-probabilities are the model's raw distribution (vLLM `logprobs_mode=raw_logprobs`),
before temperature or top-p.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ELEMENT_COLUMNS = ["character", "trait", "setting", "conflict", "resolution", "moral"]

SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string()),
        pa.field("split", pa.string()),  # "train" or "eval"
        *[pa.field(c, pa.string()) for c in ELEMENT_COLUMNS],
        pa.field("variant", pa.int32()),
        pa.field("instruction", pa.string()),
        pa.field("sample_index", pa.int32()),  # which of the n completions of this prompt
        pa.field("prompt_text", pa.string()),  # exactly what the engine was given
        pa.field("prompt_token_ids", pa.list_(pa.int32())),
        pa.field("text", pa.string()),  # the fable
        pa.field("token_ids", pa.list_(pa.int32())),  # generated tokens, length T
        pa.field("token_logprobs", pa.list_(pa.float32())),  # log p(sampled token), length T
        pa.field("topk_ids", pa.list_(pa.list_(pa.int32()))),  # T x K, rank order
        pa.field("topk_logprobs", pa.list_(pa.list_(pa.float32()))),  # T x K
        pa.field("teacher_id", pa.string()),
        pa.field("sampling", pa.string()),  # JSON of the sampling settings
        pa.field("tokenizer_fingerprint", pa.string()),
    ]
)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the token map itself (every token string and its id), not its size:
    two tokenizers with equal fingerprints index logits identically."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=True).encode()).hexdigest()[:16]


def write_table_atomic(rows: list[dict], path: Path, metadata: dict | None = None) -> None:
    """Write rows as one Parquet file; readers see the whole file or none of it."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    if metadata:
        table = table.replace_schema_metadata({b"kd": json.dumps(metadata).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_rows(directory: Path, split: str | None = None) -> list[dict]:
    """All rows of a teacher dataset folder (its *.parquet shards), checked against SCHEMA."""
    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {directory}")
    rows: list[dict] = []
    for f in files:
        try:
            table = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{f}: not a readable Parquet file ({e})") from None
        missing = set(SCHEMA.names) - set(table.column_names)
        if missing:
            raise ValueError(f"{f}: missing columns {sorted(missing)}")
        rows.extend(table.select(SCHEMA.names).to_pylist())
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    return rows
