"""Offline distillation across tokenizers: a teacher row's top-k carried onto a student's tokens.

No teacher runs at training time: the stored row (its text, its sampled token ids and their
top-k) and the two tokenizers are enough.

- **Positions.** Both tokenizations of the same fable are laid on its UTF-8 bytes (each token
  spans the bytes it decodes to, special tokens none). A student token is *aligned* when a
  teacher token spans exactly the same bytes: the two then predict the same string from the
  same preceding text, so their next-token distributions describe the same event. Other
  student positions (a word the two split differently) are counted and left to cross-entropy.
  Bytes, not characters: byte-level BPE splits an emoji or a CJK character inside itself, and
  two byte spans compare where character offsets cannot (a character's offsets cover every
  token it is split into). Equal spans at character boundaries are equal character offsets.
- **Vocabulary.** A teacher top-k entry is carried to the student token with the same bytes
  (GOLD's exact match, but on decoded bytes rather than token strings, so byte-level BPE's
  "Ġthe" meets SentencePiece's "▁the"); the end-of-sequence token maps to the student's. An
  entry with no such student token joins the tail bucket and meets ULD's sorted distance
  (distill/losses.py kd_objective), which needs no vocabulary map.

Which method, and why: ULD (arXiv 2402.12030) alone ignores the identity of tokens, which
the two vocabularies mostly share for English text; DSKD (arXiv 2406.17328) learns projections
between hidden spaces and needs the teacher's hidden states, which a stored shard does not
have; MinED (arXiv 2401.10491) maps tokens by minimum edit distance, which pairs different
words. Exact byte matches where they exist, ULD for the rest and the tail bucket kept is
what the stored top-k supports without a teacher, and reduces to the same-tokenizer top-k
loss when the tokenizers are equal (tests/distill/test_align.py checks both).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_kinds(spec: dict | None) -> set[str]:
    if not spec:
        return set()
    return {spec["type"]} | {k for d in spec.get("decoders") or [] for k in _decoder_kinds(d)}


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id decodes to within a text (None for special tokens).

    Read from the fast tokenizer's own decoder spec: byte-level BPE (GPT-2, Qwen, SmolLM2,
    Falcon) maps each byte to a printable character; SentencePiece-style (Llama, Mistral,
    Gemma) writes a space as "▁" and a fallback byte as <0xNN>."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!s} is a slow (Python) tokenizer: "
                         "distillation across tokenizers needs a fast one (its token offsets and bytes); "
                         "load it with use_fast=True or convert it (tokenizers' convert_slow_tokenizer)")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    kinds = _decoder_kinds(json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder"))
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    added = tokenizer.added_tokens_decoder
    special = set(tokenizer.all_special_ids)
    out: list[bytes | None] = []
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if piece is None or i in special or (i in added and added[i].special):
            out.append(None)
        elif i in added:  # a non-special added token is literal text
            out.append(added[i].content.encode())
        elif "ByteLevel" in kinds:
            try:
                out.append(bytes(byte_of[c] for c in piece))
            except KeyError:
                out.append(piece.encode())
        else:
            m = _BYTE_PIECE.fullmatch(piece) if "ByteFallback" in kinds else None
            out.append(bytes([int(m[1], 16)]) if m else piece.replace("\u2581", " ").encode())
    return out


def spans(ids, pieces: list[bytes | None]) -> tuple[np.ndarray, bytes]:
    """Each token's [start, end) in the bytes the ids decode to, and those bytes. A special
    token (or an id past the tokenizer) spans nothing."""
    parts = [pieces[i] or b"" if 0 <= i < len(pieces) else b"" for i in ids]
    ends = np.cumsum([len(p) for p in parts], dtype=np.int64)
    return np.stack([ends - [len(p) for p in parts], ends], axis=-1).reshape(-1, 2), b"".join(parts)


def groups(teacher: np.ndarray, student: np.ndarray, n_bytes: int) -> list[tuple[int, int, range, range]]:
    """The text cut where both tokenizations have a token boundary: (start, end, teacher
    tokens, student tokens) for each piece, in order. The pieces cover every byte once; a
    piece of one token on each side is an aligned position."""
    def starts(sp):
        return {int(s) for s, e in sp if e > s}
    cuts = sorted((starts(teacher) & starts(student)) | {0, n_bytes})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        t = [i for i, (s, e) in enumerate(teacher) if e > s and a <= s < b]
        u = [j for j, (s, e) in enumerate(student) if e > s and a <= s < b]
        out.append((a, b, range(t[0], t[-1] + 1) if t else range(0), range(u[0], u[-1] + 1) if u else range(0)))
    return out


def vocabulary_map(teacher_tok, student_tok) -> np.ndarray:
    """For each teacher id, the student id with the same bytes, else -1; end of sequence maps
    to end of sequence. Where a student has several ids for the same bytes, the lowest wins."""
    student: dict[bytes, int] = {}
    for j, b in enumerate(token_bytes(student_tok)):
        if b:
            student.setdefault(b, j)
    out = np.array([student.get(b, -1) if b else -1 for b in token_bytes(teacher_tok)], dtype=np.int64)
    # Special tokens have no bytes: they meet by name (<|endoftext|> in both Qwen and SmolLM2).
    named = {t.content: i for i, t in student_tok.added_tokens_decoder.items()}
    for i, t in teacher_tok.added_tokens_decoder.items():
        if i < len(out) and out[i] < 0 and t.content in named:
            out[i] = named[t.content]
    if teacher_tok.eos_token_id is not None and student_tok.eos_token_id is not None:
        out[teacher_tok.eos_token_id] = student_tok.eos_token_id
    return out


@dataclass
class Carrier:
    """Carries a teacher's rows onto a student's tokens (picklable: a Ray Data task holds one)."""

    teacher_tok: object
    student_tok: object
    teacher_pieces: list = field(init=False, repr=False)
    student_pieces: list = field(init=False, repr=False)
    to_student: np.ndarray = field(init=False, repr=False)

    same: bool = field(init=False)  # one token map: the student reads the teacher's own tokens

    def __post_init__(self):
        from distill.schema import tokenizer_fingerprint

        self.same = tokenizer_fingerprint(self.teacher_tok) == tokenizer_fingerprint(self.student_tok)
        self.teacher_pieces = token_bytes(self.teacher_tok)
        self.student_pieces = token_bytes(self.student_tok)
        self.to_student = vocabulary_map(self.teacher_tok, self.student_tok)

    def vocabulary_share(self) -> float:
        """The share of the teacher's (non-special) tokens the student has."""
        real = [i for i, b in enumerate(self.teacher_pieces) if b]
        return float(np.mean(self.to_student[real] >= 0)) if real else 0.0

    def encode(self, row: dict, max_len: int) -> dict:
        """A schema row as distill.data.encode_row gives it, on the student's tokens: the teacher's
        chat prompt and fable re-encoded, the fable's positions aligned to the teacher's by
        byte spans, and at each aligned position the teacher's top-k as student ids (-1: no
        student token) with the teacher's logprobs. `aligned` marks the positions that carry it.
        A row whose tokens do not decode to its text (a normaliser changed it) aligns nothing."""
        stok = self.student_tok
        t_ids = [int(i) for i in row["token_ids"]]
        ended = bool(t_ids) and t_ids[-1] == self.teacher_tok.eos_token_id
        if self.same:
            prompt, gen = np.asarray(row["prompt_token_ids"], np.int64), list(t_ids)
        else:
            prompt = np.asarray(stok(row["prompt_text"], add_special_tokens=False).input_ids, np.int64)
            gen = list(stok(row["text"], add_special_tokens=False).input_ids)
            if ended and stok.eos_token_id is not None:
                gen.append(stok.eos_token_id)
        if len(prompt) >= max_len:
            raise ValueError(f"prompt {row['prompt_id']} has {len(prompt)} student tokens, over max_len={max_len}")
        T = min(len(gen), max_len - len(prompt))
        K = len(row["topk_ids"][0]) if len(row["topk_ids"]) else 1
        ids = np.full((T, K), -1, np.int64)
        lps = np.full((T, K), -math.log(K), np.float32)  # uniform where unaligned: finite, never read
        aligned = np.zeros(T, np.float32)
        t_spans, t_bytes = spans(t_ids, self.teacher_pieces)
        s_spans, s_bytes = spans(gen, self.student_pieces)
        text = row["text"].encode()
        if self.same:
            pairs = [(j, j) for j in range(T)]
        elif t_bytes == text and s_bytes == text:
            at = {(int(s), int(e)): i for i, (s, e) in reversed(list(enumerate(t_spans))) if e > s}
            pairs = [(j, at.get((int(s), int(e)))) for j, (s, e) in enumerate(s_spans[:T]) if e > s]
            if ended and T == len(gen) and stok.eos_token_id is not None:
                pairs.append((T - 1, len(t_ids) - 1))  # both stop here: the teacher's EOS top-k teaches stopping
        else:
            pairs = []
        for j, i in pairs:
            if i is None:
                continue
            tid = np.asarray(row["topk_ids"][i], np.int64)
            inside = (tid >= 0) & (tid < len(self.to_student))
            # An id past the tokenizer (a padded embedding row) is only the same token in the same map.
            ids[j] = np.where(inside, self.to_student[np.where(inside, tid, 0)], tid if self.same else -1)
            lps[j] = np.asarray(row["topk_logprobs"][i], np.float32)
            aligned[j] = 1.0
        return {"input_ids": np.concatenate([prompt, np.asarray(gen[:T], np.int64)]), "start": len(prompt) - 1,
                "labels": np.asarray(gen[:T], np.int64), "topk_ids": ids.astype(np.int32), "topk_logprobs": lps,
                "aligned": aligned, "complete": T == len(gen)}
