"""The teacher-output dataset: the one contract between generation, training and evaluation.

One row is one completion of one prompt by one teacher. For every generated token the
teacher's top-k alternatives are kept (ids and log-probabilities, sorted by rank), plus
the log-probability of the token actually sampled. Only the top-k survives, so the mass
outside it (1 - sum(exp(topk_logprobs))) is accounted for by the losses as a tail bucket.
Log-probabilities are the model's raw distribution (vLLM `logprobs_mode=raw_logprobs`),
before temperature or top-p.

Rows are handed around in their logical form (`topk_ids` and `topk_logprobs` as T x K
lists). On disk the top-k is stored compactly, since it is most of the bytes (`make bench`
measures bytes per entry and the KL error the encoding causes):
- ids: each shard renumbers its FREQUENT_IDS commonest ids to 0..255 (the list is in the
  file's metadata) and stores the codes as byte planes, one dictionary-encoded uint8
  column per byte (two for vocabularies up to 65,536, three beyond);
- logprobs: quantized to LP_STEP nats as uint16 levels, rank 1 absolute and then the
  drop from each rank to the next (sorted, so small), stored byte-stream-split. Each
  value is within LP_STEP/2 of the engine's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.artifacts import fsync_path

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


LP_STEP = 1 / 64  # nats per quantization step of the stored logprobs
FREQUENT_IDS = 256  # per shard, this many most frequent ids are renumbered to 0..255
ZSTD_LEVEL = 19  # shards are small and written once; the higher level pays for itself
_STORED = ["topk_ids", "topk_logprobs"]


def id_bytes(vocab_size: int) -> int:
    """Bytes per stored token id: 2 for vocabularies up to 65,536, 3 up to 16.7M."""
    return max(1, (max(vocab_size - 1, 1).bit_length() + 7) // 8)


def _id_columns(vocab_size: int) -> list[str]:
    return [f"topk_ids_b{i}" for i in range(id_bytes(vocab_size))]


def storage_schema(vocab_size: int) -> pa.Schema:
    """The on-disk schema: SCHEMA with the top-k columns in their compact form."""
    fields = [f for f in SCHEMA if f.name not in _STORED]
    return pa.schema(fields + [pa.field("topk_k", pa.int32())]
                     + [pa.field(c, pa.list_(pa.uint8())) for c in _id_columns(vocab_size)]
                     + [pa.field("topk_lp_q", pa.list_(pa.uint16()))])


def renumbering(frequent: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A permutation of the vocabulary sending frequent[j] to j (forward, inverse).

    Low ids that are not frequent take the slots the frequent ones left, so every id
    keeps a unique code below vocab_size."""
    frequent = np.asarray(frequent, dtype=np.int64)
    m = len(frequent)
    fwd = np.arange(vocab_size, dtype=np.int64)
    fwd[frequent] = np.arange(m)
    fwd[np.setdiff1d(np.arange(m), frequent)] = np.sort(frequent[frequent >= m])
    inv = np.empty_like(fwd)
    inv[fwd] = np.arange(vocab_size)
    return fwd, inv


def quantize_logprobs(lp: np.ndarray) -> np.ndarray:
    """[T, K] descending logprobs -> uint16 levels: rank 1 absolute, then drops between ranks.

    Levels are rounded as absolute values first, so rounding errors never accumulate
    along the ranks (each value is within LP_STEP/2 of the truth)."""
    lp = np.nan_to_num(np.asarray(lp, dtype=np.float64), nan=-1e4, neginf=-1e4)
    q = np.clip(np.round(-lp / LP_STEP), 0, 2**16 - 1)
    return np.clip(np.diff(q, axis=1, prepend=0), 0, 2**16 - 1).astype(np.uint16)


def dequantize_logprobs(q: np.ndarray) -> np.ndarray:
    return (-np.cumsum(np.asarray(q, dtype=np.float64), axis=1) * LP_STEP).astype(np.float32)


def encode_topk(rows: list[dict], vocab_size: int) -> tuple[dict[str, list], dict]:
    """The compact columns of a shard's top-k, and the metadata needed to read them back.

    Ids are renumbered so the shard's FREQUENT_IDS commonest come first, then split into
    byte planes (one uint8 column per byte, dictionary-encoded): the high plane is then
    mostly zero and the low plane skewed, which zstd compresses far better than raw ids."""
    n_bytes = id_bytes(vocab_size)
    ks = [len(r["topk_ids"][0]) if r["topk_ids"] else 0 for r in rows]
    flat = [np.asarray(r["topk_ids"], dtype=np.int64).reshape(-1) for r in rows]
    every = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    if every.size and (every.min() < 0 or every.max() >= vocab_size):
        raise ValueError(f"top-k ids outside the vocabulary of {vocab_size}")
    uniq, counts = np.unique(every, return_counts=True)
    frequent = uniq[np.argsort(-counts, kind="stable")][:FREQUENT_IDS]
    fwd, _ = renumbering(frequent, vocab_size)
    cols: dict[str, list] = {"topk_k": ks, "topk_lp_q": []}
    cols.update({c: [] for c in _id_columns(vocab_size)})
    for r, ids, k in zip(rows, flat, ks):
        code = fwd[ids]
        for i in range(n_bytes):
            cols[f"topk_ids_b{i}"].append(((code >> (8 * i)) & 255).astype(np.uint8))
        cols["topk_lp_q"].append(quantize_logprobs(np.reshape(r["topk_logprobs"], (-1, k)) if k else np.zeros((0, 0))).ravel())
    dtype = "<u2" if n_bytes <= 2 else "<u4"
    meta = {"lp_step": LP_STEP, "vocab_size": vocab_size, "id_bytes": n_bytes,
            "frequent_ids": base64.b64encode(frequent.astype(dtype).tobytes()).decode(), "frequent_ids_dtype": dtype}
    return cols, meta


def decode_topk(table: pa.Table, meta: dict, arrays: bool = False) -> tuple[list, list]:
    """Invert encode_topk on a whole table: per row, the T x K ids and logprobs (as lists, or
    with `arrays` as numpy arrays: what training reads, at half the cost)."""
    if meta.get("lp_step") != LP_STEP:
        raise ValueError(f"stored with logprob step {meta.get('lp_step')}, this version reads {LP_STEP}")
    frequent = np.frombuffer(base64.b64decode(meta["frequent_ids"]), dtype=meta["frequent_ids_dtype"])
    _, inv = renumbering(frequent, int(meta["vocab_size"]))
    code = sum(table.column(f"topk_ids_b{i}").combine_chunks().flatten().to_numpy().astype(np.int64) << (8 * i)
               for i in range(int(meta["id_bytes"])))
    ids = inv[code] if len(code) else np.zeros(0, np.int64)
    q = table.column("topk_lp_q").combine_chunks().flatten().to_numpy()
    out_ids, out_lp, at = [], [], 0
    for k, n in zip(table.column("topk_k").to_pylist(), table.column("topk_lp_q").combine_chunks().value_lengths().to_pylist()):
        if not k:
            out_ids.append(np.zeros((0, 0), np.int64) if arrays else []), out_lp.append(np.zeros((0, 0), np.float32) if arrays else [])
            continue
        i, lp = ids[at : at + n].reshape(-1, k), dequantize_logprobs(q[at : at + n].reshape(-1, k))
        out_ids.append(i.astype(np.int32) if arrays else i.tolist())  # a copy: a view would keep the shard's array alive
        out_lp.append(lp if arrays else lp.tolist())
        at += n
    return out_ids, out_lp


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the token map itself (every token string and its id), not its size:
    two tokenizers with equal fingerprints index logits identically."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=True).encode()).hexdigest()[:16]


MAX_LOGPROB = 1e-4  # float32 log-softmax rounds log(1) to a few 1e-7 at most


def row_problem(row: dict) -> str | None:
    """Why a row's top-k cannot be trusted, or None: one list of K ids and K logprobs per
    generated token, logprobs not NaN and not above 0, rank 1 finite, each list in descending order (-inf,
    a token outside the sampling support, may trail). Checked before a shard is written and
    after one is read."""
    T = len(row["token_ids"])
    for name in ("topk_ids", "topk_logprobs", "token_logprobs"):
        if len(row[name]) != T:
            return f"{name} has {len(row[name])} entries for {T} generated tokens"
    if not T:
        return None
    try:
        ids, lp = np.asarray(row["topk_ids"], dtype=np.int64), np.asarray(row["topk_logprobs"], dtype=np.float64)
    except (ValueError, TypeError):
        return "top-k lists of unequal length"
    if ids.ndim != 2 or ids.shape != lp.shape or ids.shape[1] == 0:
        return f"top-k ids {ids.shape} and logprobs {lp.shape} are not the same T x K"
    if np.isnan(lp).any() or np.isnan(np.asarray(row["token_logprobs"], dtype=np.float64)).any():
        return "NaN logprob"
    if not np.isfinite(lp[:, 0]).all() or np.isposinf(lp).any():
        return "a rank-1 logprob that is not finite"
    sampled = np.asarray(row["token_logprobs"], dtype=np.float64)
    # A log-probability is at most 0; past float rounding a positive one is not a distribution
    # (it would make the tail bucket's mass negative).
    for name, values in (("topk_logprobs", lp), ("token_logprobs", sampled)):
        if (values > MAX_LOGPROB).any():
            t = int(np.argwhere(values > MAX_LOGPROB)[0][0])
            return f"{name} at token {t} holds a positive logprob ({float(values.max()):.4g}): a probability above 1"
    with np.errstate(invalid="ignore"):  # -inf - -inf: two trailing tokens outside the support
        rising = np.diff(lp, axis=1) > 1e-4
    if rising.any():
        t = int(np.argwhere(rising)[0][0])
        return f"top-k logprobs out of order at token {t}: {lp[t].round(3).tolist()}"
    return None


CORRUPT_FIX = "delete it and rerun the same command: generation regenerates missing shards"


def content_digest(table: pa.Table, meta: dict) -> str:
    """SHA-256 of a shard's stored values and the metadata that decodes them. Page checksums
    cover the data pages only; this also catches damage to the footer (where the metadata
    lives) or to a page header that would change what is read."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "content_sha256"}, sort_keys=True).encode())
    for name in table.column_names:
        h.update(name.encode())
        h.update(json.dumps(table.column(name).to_pylist(), separators=(",", ":")).encode())
    return h.hexdigest()


def write_table_atomic(rows: list[dict], path: Path, metadata: dict | None = None, vocab_size: int | None = None) -> None:
    """Write logical rows as one compact Parquet file; readers see the whole file or none of it.
    Every data page carries a CRC checksum, verified on read."""
    for r in rows:
        if (problem := row_problem(r)) is not None:
            raise ValueError(f"row {r.get('prompt_id')}/{r.get('sample_index')} for {path}: {problem}")
    if vocab_size is None:  # callers that know the tokenizer pass its size
        vocab_size = max([256] + [max(max(t) for t in r["topk_ids"]) + 1 for r in rows if r["topk_ids"]])
    cols, codec = encode_topk(rows, vocab_size)
    schema = storage_schema(vocab_size)
    plain = {n: [r[n] for r in rows] for n in schema.names if n not in cols}
    table = pa.table({n: pa.array((plain | cols)[n], schema.field(n).type) for n in schema.names}, schema=schema)
    meta = {**(metadata or {}), **codec}
    meta["content_sha256"] = content_digest(table, meta)
    table = table.replace_schema_metadata({b"kd": json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd", compression_level=ZSTD_LEVEL,
                       use_dictionary=[f"{c}.list.element" for c in _id_columns(vocab_size)],
                       column_encoding={"topk_lp_q.list.element": "BYTE_STREAM_SPLIT"}, write_page_checksum=True)
        fsync_path(Path(tmp))
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_shard(f: Path, arrays: bool = False) -> list[dict]:
    """One shard's rows; ValueError saying what is wrong with it (a damaged file can fail
    anywhere in Arrow or in decoding, so every failure is caught here, once)."""
    try:
        table = pq.read_table(f, page_checksum_verification=True)
        meta = json.loads((table.schema.metadata or {}).get(b"kd", b"{}"))
    except Exception as e:  # noqa: BLE001 - Arrow raises OSError, ArrowInvalid, ArrowNotImplementedError, ...
        raise ValueError(f"not a readable shard ({type(e).__name__}: {str(e)[:300]})") from None
    if not isinstance(meta, dict) or "id_bytes" not in meta or "content_sha256" not in meta:
        raise ValueError("no top-k codec metadata or content checksum (written by an older version?)")
    try:
        intact = content_digest(table, meta) == meta["content_sha256"]
    except Exception as e:  # noqa: BLE001 - a damaged column can fail to materialise
        raise ValueError(f"columns do not read back ({type(e).__name__}: {str(e)[:300]})") from None
    if not intact:
        raise ValueError("stored values do not match the shard's content checksum")
    names = [n for n in SCHEMA.names if n not in _STORED] + ["topk_k", "topk_lp_q"] + _id_columns(meta["vocab_size"])
    missing = set(names) - set(table.column_names)
    if missing:
        raise ValueError(f"missing columns {sorted(missing)}")
    try:
        ids, lps = decode_topk(table, meta, arrays)
        plain = table.select([n for n in SCHEMA.names if n not in _STORED]).to_pylist()
    except Exception as e:  # noqa: BLE001 - damaged codec metadata or columns fail in numpy or Arrow
        raise ValueError(f"top-k columns do not decode ({type(e).__name__}: {str(e)[:300]})") from None
    if len(ids) != len(plain):
        raise ValueError(f"{len(ids)} top-k rows for {len(plain)} rows")
    for r, i, l in zip(plain, ids, lps):
        r["topk_ids"], r["topk_logprobs"] = i, l
        if (problem := row_problem(r)) is not None:
            raise ValueError(f"row {r['prompt_id']}/{r['sample_index']}: {problem}")
    return plain


def holds_split(f: Path, split: str) -> bool:
    """Whether a shard holds rows of `split`, from its split column alone (a shard that cannot
    say is read whole, and its damage named there)."""
    try:
        held = set(pq.read_table(f, columns=["split"], page_checksum_verification=True).column("split").to_pylist())
    except Exception:  # noqa: BLE001 - any damage: _read_shard reports it
        return True
    return split in held or not held <= {"train", "eval"}  # an odd value: read it whole, where damage is named


def shard_files(directory: Path) -> list[Path]:
    """A teacher dataset folder's shards, in order; FileNotFoundError when it has none."""
    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {directory}")
    return files


def read_shard(f: Path, arrays: bool = False) -> list[dict]:
    """One shard's rows, checked against SCHEMA (the top-k as numpy arrays with `arrays`); a
    damaged shard: one ValueError naming it."""
    try:
        return _read_shard(f, arrays)
    except ValueError as e:
        raise ValueError(f"{f}: {e}; {CORRUPT_FIX}") from None


def read_columns(f: Path, columns: list[str]) -> list[dict]:
    """Some plain columns of a shard (never the top-k), without decoding the rest: what
    counting or filtering rows needs. Damage in them: one ValueError naming the shard."""
    try:
        return pq.read_table(f, columns=columns, page_checksum_verification=True).to_pylist()
    except Exception as e:  # noqa: BLE001 - Arrow raises OSError, ArrowInvalid, ...
        raise ValueError(f"{f}: not a readable shard ({type(e).__name__}: {str(e)[:300]}); {CORRUPT_FIX}") from None


def read_rows(directory: Path, split: str | None = None, limit: int | None = None) -> list[dict]:
    """All rows of a teacher dataset folder (its *.parquet shards), checked against SCHEMA.
    With `split`, only the shards that hold rows of it are decoded: the held-out rows (the
    last shards of a teacher's dataset) are chosen without loading the training rows. With
    `limit`, the first `limit` rows, shards after them not read. Training streams its rows
    instead (distill/stream.py)."""
    rows: list[dict] = []
    for f in shard_files(directory):
        if limit is not None and len(rows) >= limit:
            break
        if split is not None and not holds_split(f, split):
            continue
        rows += [r for r in read_shard(f) if split is None or r["split"] == split]
    return rows if limit is None else rows[:limit]
