import math
from types import SimpleNamespace

import torch

from distill.data import Collator, encode_row, pad_id


def row(prompt, gen, k=2):
    return {"prompt_id": "p", "prompt_token_ids": prompt, "token_ids": gen,
            "topk_ids": [[g, g + 1] for g in gen], "topk_logprobs": [[-0.1, -3.0]] * len(gen)}


def test_teacher_topk_sits_at_the_logit_that_predicts_the_token():
    b = Collator(pad_id=0)([encode_row(row([5, 6, 7], [10, 11]), 64), encode_row(row([5], [12, 13, 14]), 64)])
    # row 0: sequence 5 6 7 10 11; logits at positions 2 and 3 predict 10 and 11
    assert b["input_ids"][0].tolist() == [5, 6, 7, 10, 11]
    assert b["kd_mask"][0].tolist() == [0, 0, 1, 1, 0]
    assert b["labels"][0, 2:4].tolist() == [10, 11]
    assert b["topk_ids"][0, 2].tolist() == [10, 11]
    # row 1: right-padded, prediction starts at position 0
    assert b["input_ids"][1].tolist() == [5, 12, 13, 14, 0]
    assert b["attention_mask"][1].tolist() == [1, 1, 1, 1, 0]
    assert b["kd_mask"][1].tolist() == [1, 1, 1, 0, 0]
    # masked positions hold a proper distribution, so the loss cannot go NaN there
    assert torch.allclose(b["topk_logprobs"][0, 0], torch.full((2,), -math.log(2)))


def test_rows_are_truncated_to_max_len():
    e = encode_row(row([1, 2], [3, 4, 5, 6]), max_len=4)
    assert e["input_ids"].tolist() == [1, 2, 3, 4] and e["topk_ids"].shape == (2, 2)


def test_a_fable_with_no_generated_tokens_batches_and_teaches_nothing():
    b = Collator(pad_id=0)([encode_row(row([5, 6], []), 64), encode_row(row([5], [12, 13]), 64)])
    assert b["topk_ids"].shape == (2, 3, 2) and b["kd_mask"][0].sum() == 0 and b["kd_mask"][1].sum() == 2


def test_batches_pad_with_the_pad_token_else_end_of_sequence():
    assert pad_id(SimpleNamespace(pad_token_id=0, eos_token_id=2)) == 0  # 0 is a pad id, not "none"
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2


def test_scored_logits_are_the_full_forwards_at_every_scored_position():
    """The vocabulary projection skips the positions before the batch's first scored one: what
    is left is the full forward's logits at the same positions, aligned with the cut labels and
    top-k, for prompts of unequal length and an empty fable."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.data import scored_logits

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    rows = [row([5, 6, 7, 8, 9], [10, 11]), row([5, 6, 7], [12, 13, 14]), row([5, 6, 7, 8], [])]
    b = Collator(pad_id=0)([encode_row(r, 64) for r in rows])
    with torch.no_grad():
        full = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        cut_logits, cut = scored_logits(model, b)
    first = 2  # row 1's prompt ends at position 2: its logit there predicts token 12
    assert cut_logits.shape == (3, b["input_ids"].shape[1] - first, 32)
    assert torch.allclose(cut_logits, full[:, first:], atol=1e-5)
    sel, full_sel = cut["kd_mask"].bool(), b["kd_mask"].bool()
    assert torch.equal(cut["labels"][sel], b["labels"][full_sel]) and int(sel.sum()) == 5
    assert torch.allclose(cut_logits[sel], full[full_sel], atol=1e-5)
    assert torch.equal(cut["topk_ids"][sel], b["topk_ids"][full_sel])
    none = Collator(pad_id=0)([encode_row(row([5, 6], []), 64)])
    assert scored_logits(model, none)[0].shape[1] == 1  # nothing scored: one position, not zero
