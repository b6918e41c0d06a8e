import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teacher import formats
from tests.tiny_models import build_tokenizer


@pytest.fixture(scope="module")
def llama_tok():
    return build_tokenizer("llama")  # adds <s> itself; Llama-2's chat template writes <s> too


@pytest.fixture(scope="module")
def falcon_tok():
    return build_tokenizer("falcon")


def test_the_llama2_chat_template_would_double_bos_and_render_keeps_one(llama_tok):
    raw = llama_tok.apply_chat_template([{"role": "user", "content": "Write a fable."}], tokenize=False,
                                        add_generation_prompt=True)
    bos = llama_tok.bos_token_id
    assert llama_tok(raw).input_ids[:2] == [bos, bos]  # the bug this guards against
    ids = llama_tok(formats.render("chat", "Write a fable.", llama_tok)).input_ids
    assert ids.count(bos) == 1 and ids[0] == bos


@pytest.mark.parametrize("name", ["llama2", "mistral", "completion", "chat"])
@settings(max_examples=25, deadline=None)
@given(instruction=st.text(min_size=1, max_size=60))
def test_every_format_gives_exactly_one_bos_where_the_tokenizer_adds_it(llama_tok, name, instruction):
    ids = llama_tok(formats.render(name, instruction, llama_tok)).input_ids
    assert ids[0] == llama_tok.bos_token_id and ids.count(llama_tok.bos_token_id) == 1 + instruction.count("<s>")


def test_each_family_gets_its_own_turn_markers(llama_tok, falcon_tok):
    assert formats.render("llama2", "Tell it.", llama_tok).startswith("[INST] <<SYS>>\n")
    assert formats.render("llama2", "Tell it.", llama_tok).endswith("Tell it. [/INST]")
    assert formats.render("mistral", "Tell it.", llama_tok) == "[INST] Tell it. [/INST]"
    falcon = formats.render("falcon", "Tell it.", falcon_tok)
    assert falcon.endswith("\nUser: Tell it.\nFalcon:") and not formats.adds_bos(falcon_tok)


def test_unknown_format_and_missing_chat_template_are_named(falcon_tok):
    with pytest.raises(ValueError, match="^prompt_format: 'alpaca' is not a prompt format; known: chat, llama2"):
        formats.render("alpaca", "x", falcon_tok)
    with pytest.raises(ValueError, match="no chat template"):
        formats.render("chat", "x", falcon_tok)
