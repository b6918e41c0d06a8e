"""What the top-k logits cost on disk: the Parquet shards against dense fp16 logits and a
JSONL dump of the same rows."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def topk_bytes(directory: Path) -> int:
    """Bytes the top-k takes in a folder of shards: its columns as compressed on disk, plus
    the codec metadata (the per-shard id renumbering)."""
    import pyarrow.parquet as pq

    total = 0
    for f in sorted(directory.glob("*.parquet")):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                if col.path_in_schema.startswith("topk_"):
                    total += col.total_compressed_size
        total += len((md.metadata or {}).get(b"kd", b""))
    return total


def bench_storage(dump: Path, shard_rows: int = 16) -> dict:
    """Bytes per stored (token id, logprob) entry in shards as the pipeline writes them,
    float32 lists against the compact form, and what the quantization does to a real
    student's KL (the pruned SmolLM2 student, before training)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.schema import read_rows, write_table_atomic
    from eval.logit_metrics import heldout_metrics
    from student.build import build_student
    from teacher.registry import get_teacher

    teacher = get_teacher("smollm2-135m")
    rows = json.loads(dump.read_text())
    entries = sum(len(r["topk_ids"]) * len(r["topk_ids"][0]) for r in rows if r["topk_ids"])
    with tempfile.TemporaryDirectory() as d:
        plain, compact = Path(d, "float32"), Path(d, "compact")
        plain.mkdir()
        for n, i in enumerate(range(0, len(rows), shard_rows)):
            part = rows[i : i + shard_rows]
            pq.write_table(pa.table({"topk_ids": pa.array([r["topk_ids"] for r in part], pa.list_(pa.list_(pa.int32()))),
                                     "topk_logprobs": pa.array([r["topk_logprobs"] for r in part],
                                                               pa.list_(pa.list_(pa.float32())))}),
                           plain / f"{n:05d}.parquet", compression="zstd")
            write_table_atomic([_schema_row(r, i + j) for j, r in enumerate(part)], compact / f"{n:05d}.parquet",
                               {}, teacher.vocab_size)
        decoded = read_rows(compact)
        plain_b, compact_b = topk_bytes(plain), topk_bytes(compact)
    exact_lp = [r["topk_logprobs"] for r in rows]
    err = max((abs(a - b) for r, e in zip(decoded, exact_lp) for x, y in zip(r["topk_logprobs"], e) for a, b in zip(x, y)),
              default=0.0)
    model, tok = build_student("pruned", teacher.model_path())
    exact = heldout_metrics(model, tok.pad_token_id, rows)
    approx = heldout_metrics(model, tok.pad_token_id, decoded)
    return {"entries": entries, "shard_rows": shard_rows, "float32_bytes": plain_b, "compact_bytes": compact_b,
            "max_abs_error": err, "kl_float32": exact["kl"], "kl_compact": approx["kl"], "tokens": exact["tokens"]}


def _schema_row(r: dict, i: int) -> dict:
    """A full dataset row around a plain-vLLM result, so it goes through the real writer."""
    empty = {c: "" for c in ("split", "character", "trait", "setting", "conflict", "resolution", "moral",
                              "instruction", "prompt_text", "text", "teacher_id", "sampling", "tokenizer_fingerprint")}
    return {**empty, "prompt_id": str(i), "variant": 0, "sample_index": 0, "prompt_token_ids": r["prompt_token_ids"],
            "token_ids": r["token_ids"], "token_logprobs": [0.0] * len(r["token_ids"]),
            "topk_ids": r["topk_ids"], "topk_logprobs": r["topk_logprobs"]}
