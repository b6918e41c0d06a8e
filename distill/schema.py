"""The teacher-output dataset: the one contract between generation, training and evaluation.

One row is one completion of one prompt by one teacher. For every generated token the
teacher's top-k alternatives are kept (ids and log-probabilities, sorted by rank), plus
the log-probability of the token actually sampled. Only the top-k survives, so the mass
outside it (1 - sum(exp(topk_logprobs))) is accounted for by the losses as a tail bucket.
Log-probabilities are the model's raw distribution (vLLM `logprobs_mode=raw_logprobs`),
before temperature or top-p.

Rows are handed around in their logical form (`topk_ids` and `topk_logprobs` as T x K
lists). On disk the top-k is stored compactly, since it is most of the bytes:
- ids flattened in the narrowest unsigned type the vocabulary allows (uint16 up to 65,536);
- logprobs quantized to LP_STEP nats, rank by rank as uint8 gaps (the first one is
  -logprob of rank 1, each next one the drop from the previous rank; they are sorted, so
  gaps are small and compress well). Reconstruction error is at most LP_STEP/2 per value;
  `make bench` measures the bytes per entry and the KL error this causes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
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
        pa.field("topk_logprobs", pa.list_(pa.list_(pa.float32()))),  # T x K, descending
        pa.field("teacher_id", pa.string()),
        pa.field("sampling", pa.string()),  # JSON of the sampling settings
        pa.field("tokenizer_fingerprint", pa.string()),
    ]
)


LP_STEP = 1 / 16  # nats per quantization step of the stored logprobs
_STORED = ["topk_ids", "topk_logprobs"]


def storage_schema(vocab_size: int) -> pa.Schema:
    """The on-disk schema: SCHEMA with the top-k columns in their compact form."""
    id_type = pa.uint16() if vocab_size <= 2**16 else pa.uint32()
    fields = [f for f in SCHEMA if f.name not in _STORED]
    return pa.schema(fields + [pa.field("topk_k", pa.int32()), pa.field("topk_ids_flat", pa.list_(id_type)),
                               pa.field("topk_lp_q", pa.list_(pa.uint8()))])


def encode_topk(topk_ids: list[list[int]], topk_logprobs: list[list[float]]) -> dict:
    if not topk_ids:  # a fable of zero tokens
        return {"topk_k": 0, "topk_ids_flat": [], "topk_lp_q": []}
    ids = np.asarray(topk_ids, dtype=np.int64)
    lp = np.asarray(topk_logprobs, dtype=np.float64)
    q = np.round(-lp / LP_STEP)  # absolute levels, so rounding errors never accumulate
    gaps = np.diff(q, axis=1, prepend=0)
    return {"topk_k": ids.shape[1], "topk_ids_flat": ids.ravel(),
            "topk_lp_q": np.clip(gaps, 0, 255).astype(np.uint8).ravel()}


def decode_topk(k: int, ids_flat, lp_q) -> tuple[list[list[int]], list[list[float]]]:
    ids = np.asarray(ids_flat, dtype=np.int64).reshape(-1, k) if k else np.zeros((0, 0), np.int64)
    q = np.cumsum(np.asarray(lp_q, dtype=np.float64).reshape(ids.shape), axis=1)
    return ids.tolist(), (-q * LP_STEP).astype(np.float32).tolist()


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the token map itself (every token string and its id), not its size:
    two tokenizers with equal fingerprints index logits identically."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=True).encode()).hexdigest()[:16]


def write_table_atomic(rows: list[dict], path: Path, metadata: dict | None = None, vocab_size: int = 2**32) -> None:
    """Write logical rows as one compact Parquet file; readers see the whole file or none of it."""
    stored = [{**{k: v for k, v in r.items() if k not in _STORED}, **encode_topk(r["topk_ids"], r["topk_logprobs"])}
              for r in rows]
    table = pa.Table.from_pylist(stored, schema=storage_schema(vocab_size))
    meta = {**(metadata or {}), "lp_step": LP_STEP}
    table = table.replace_schema_metadata({b"kd": json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
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
        names = [n for n in SCHEMA.names if n not in _STORED] + ["topk_k", "topk_ids_flat", "topk_lp_q"]
        missing = set(names) - set(table.column_names)
        if missing:
            raise ValueError(f"{f}: missing columns {sorted(missing)}")
        for r in table.select(names).to_pylist():
            r["topk_ids"], r["topk_logprobs"] = decode_topk(r.pop("topk_k"), r.pop("topk_ids_flat"), r.pop("topk_lp_q"))
            rows.append(r)
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    return rows
