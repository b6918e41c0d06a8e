"""Carrying a teacher's top-k onto another tokenizer's tokens (distill/align.py), on the real
embedded tokenizers: SmolLM2 (byte-level BPE, 49k), Gemma 3 (SentencePiece-style, 262k) and
Qwen2.5 (byte-level BPE, 152k)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from distill import align
from tests.conftest import needs_models

pytestmark = needs_models

MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b")
TEXTS = [
    "Once upon a time, a fox met a crow.\n\nThe moral: share what you have!",
    "  Two  spaces,\ttabs\tand 1,234.56 digits; 3rd of 12 -- ok?",
    "The owl said: \"Don't worry\" 🙂🦊 and left 🇫🇷.",
    "Un élan très sûr de lui. 日本の狐は賢い。 Лиса и журавль. ثعلب",
    "**Markdown** _in_ `model text`\n- a list\n# A title",
]


@pytest.fixture(scope="module")
def toks():
    from transformers import AutoTokenizer

    from teacher.registry import get_teacher

    return {m: AutoTokenizer.from_pretrained(get_teacher(m).model_path()) for m in MODELS}


@pytest.fixture(scope="module")
def pieces(toks):
    return {m: align.token_bytes(t) for m, t in toks.items()}


def check_cover(text, toks, pieces, a, b):
    """Both tokenizations decode to the text's bytes, and their common-boundary pieces cover
    every byte once, each piece's tokens on either side decoding to exactly its bytes."""
    raw = text.encode()
    spans = {}
    for m in (a, b):
        ids = toks[m](text, add_special_tokens=False).input_ids
        spans[m], decoded = align.spans(ids, pieces[m])
        assert decoded == raw, (m, text)
    cover = np.zeros(len(raw), int)
    for start, end, t, s in align.groups(spans[a], spans[b], len(raw)):
        cover[start:end] += 1
        for m, idx in ((a, t), (b, s)):
            assert spans[m][idx[0]][0] == start and spans[m][idx[-1]][1] == end
    assert (cover == 1).all()
    return spans


@pytest.mark.parametrize("a,b", [("qwen2.5-coder-0.5b", "smollm2-135m"), ("qwen2.5-coder-0.5b", "gemma3-270m"),
                                 ("gemma3-270m", "smollm2-135m")])
@pytest.mark.parametrize("text", TEXTS)
def test_alignment_covers_every_character_once(toks, pieces, a, b, text):
    check_cover(text, toks, pieces, a, b)


@settings(max_examples=40, deadline=None)
@given(text=st.lists(st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0x1FAFF) | st.sampled_from(
    [" ", "  ", "\n", "\t", "🙂", "é", "日", "!", "1", "'s", " the", "ing"]), min_size=1, max_size=40).map("".join))
def test_alignment_covers_any_text_once(toks, pieces, text):
    import unicodedata

    text = unicodedata.normalize("NFC", text)  # Qwen's normaliser: NFC text decodes to itself
    # Gemma's SentencePiece reads a literal "▁" (U+2581) as its own space marker and decodes it
    # as a space: such a text does not decode to itself, and the carrier aligns nothing for it
    # (test_a_space_marker_in_the_text_aligns_nothing; hypothesis found it).
    text = text.replace("\u2581", " ")
    check_cover(text, toks, pieces, "qwen2.5-coder-0.5b", "gemma3-270m")


def test_vocabulary_map_matches_bytes_across_families_and_is_the_identity_within_one(toks):
    q, s, g = toks["qwen2.5-coder-0.5b"], toks["smollm2-135m"], toks["gemma3-270m"]
    same = align.vocabulary_map(q, q)
    assert (same[: len(q)] == np.arange(len(q))).all()
    q2s = align.vocabulary_map(q, s)
    the = q(" the", add_special_tokens=False).input_ids
    assert len(the) == 1 and q2s[the[0]] == s(" the", add_special_tokens=False).input_ids[0]
    q2g = align.vocabulary_map(q, g)  # byte-level "Ġthe" meets SentencePiece "▁the"
    assert q2g[the[0]] == g(" the", add_special_tokens=False).input_ids[0]
    assert q2s[q.eos_token_id] == s.eos_token_id and q2g[q.eos_token_id] == g.eos_token_id
    assert 0.2 < align.Carrier(q, s).vocabulary_share() < 1.0


def teacher_row(tok, text, k=5, seed=0):
    """A row as a teacher's generation stores it: the text's ids plus EOS, and a top-k led
    by the written token with other real ids behind it."""
    rng = np.random.default_rng(seed)
    ids = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
    lp = np.sort(np.log(rng.dirichlet(np.ones(k + 3), size=len(ids)))[:, :k], axis=1)[:, ::-1]
    top = [[t] + [int(x) for x in rng.choice(5000, size=k, replace=False) if x != t][: k - 1] for t in ids]
    return {"prompt_id": "p0", "prompt_text": "Write a fable.", "prompt_token_ids": tok("Write a fable.").input_ids,
            "text": text, "token_ids": ids, "topk_ids": top, "topk_logprobs": lp.tolist()}


def test_a_row_is_carried_onto_the_students_tokens(toks):
    q, s = toks["qwen2.5-coder-0.5b"], toks["smollm2-135m"]
    text = "The fox shared 12 grapes 🙂 with the crow."
    row = teacher_row(q, text)
    enc = align.Carrier(q, s).encode(row, 128)
    gen = s(text, add_special_tokens=False).input_ids + [s.eos_token_id]
    assert list(enc["labels"]) == gen
    assert list(enc["input_ids"][: enc["start"] + 1]) == s("Write a fable.", add_special_tokens=False).input_ids
    # an aligned position carries the teacher's logprobs and, for the written token, its student id
    for j, t_tok in enumerate(gen[:-1]):
        if enc["aligned"][j]:
            i = next(i for i, tid in enumerate(row["token_ids"])
                     if q.decode([tid]) == s.decode([t_tok]) and not None)
            assert enc["topk_ids"][j][0] == t_tok and np.allclose(enc["topk_logprobs"][j], row["topk_logprobs"][i])
    assert enc["aligned"][-1] == 1 and enc["topk_ids"][-1][0] == s.eos_token_id  # stopping is taught too
    assert 0.5 < enc["aligned"].mean() <= 1.0
    # unaligned positions hold a finite placeholder and no student ids
    off = enc["aligned"] == 0
    assert (enc["topk_ids"][off] == -1).all() and np.isfinite(enc["topk_logprobs"]).all()


def test_a_row_whose_tokens_do_not_decode_to_its_text_aligns_nothing(toks):
    q, s = toks["qwen2.5-coder-0.5b"], toks["smollm2-135m"]
    row = teacher_row(q, "The fox ran.")
    row["text"] = "Something else entirely."
    enc = align.Carrier(q, s).encode(row, 128)
    assert enc["aligned"].sum() == 0 and len(enc["labels"]) > 0


def test_a_space_marker_in_the_text_aligns_nothing(toks, pieces):
    g, q = toks["gemma3-270m"], toks["qwen2.5-coder-0.5b"]
    row = teacher_row(g, "The fox \u2581 ran.")
    _, decoded = align.spans(row["token_ids"], pieces["gemma3-270m"])
    assert decoded != row["text"].encode()  # Gemma's own tokens read the marker back as a space
    enc = align.Carrier(g, q).encode(row, 128)
    assert enc["aligned"].sum() == 0 and len(enc["labels"]) > 0


def test_same_tokenizer_carry_is_the_same_tokenizer_row(toks):
    from distill.data import encode_row

    q = toks["qwen2.5-coder-0.5b"]
    row = teacher_row(q, "A crow, a fox and 3 grapes.")
    a, b = align.Carrier(q, q).encode(row, 64), encode_row(row, 64)
    assert a["aligned"].all()
    for k in ("input_ids", "labels", "topk_ids", "topk_logprobs"):
        assert np.array_equal(a[k], b[k]), k
    assert a["start"] == b["start"]


def test_a_slow_tokenizer_is_one_clear_error():
    class Slow:
        is_fast = False
        name_or_path = "some/slow-model"

    with pytest.raises(ValueError, match="some/slow-model is a slow .* needs a fast one"):
        align.token_bytes(Slow())


def test_max_len_cuts_the_carried_row(toks):
    q, s = toks["qwen2.5-coder-0.5b"], toks["smollm2-135m"]
    enc = align.Carrier(q, s).encode(teacher_row(q, "word " * 40), 20)
    assert len(enc["input_ids"]) == 20 and len(enc["labels"]) == len(enc["aligned"]) == len(enc["topk_ids"])
    assert math.isfinite(float(enc["topk_logprobs"].sum()))
