"""Credentials never reach recorded text, wherever in it they sit."""

from hypothesis import given
from hypothesis import strategies as st

from distill.redact import MASK, redact, secrets_in_env

KEY_CHARS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=8, max_size=60)


@given(key=KEY_CHARS, before=st.text(max_size=80), after=st.text(max_size=80))
def test_the_environments_key_is_masked_wherever_it_sits(key, before, after):
    out = redact(before + key + after, env={"OPENAI_API_KEY": key})
    assert key not in out and MASK in out


@given(token=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=40))
def test_token_shapes_are_masked_even_when_not_ours(token):
    for text in (f"Authorization: Bearer {token}", f"key sk-{token} invalid", f"token hf_{token}."):
        assert token not in redact(text, env={})


def test_a_key_that_is_a_prefix_of_another_leaves_no_tail():
    env = {"OPENAI_API_KEY": "abcdefgh", "HF_TOKEN": "abcdefgh-and-more"}
    assert secrets_in_env(env) == ["abcdefgh-and-more", "abcdefgh"]
    assert redact("t=abcdefgh-and-more", env) == f"t={MASK}"


def test_plain_text_and_short_or_unnamed_values_are_left_alone():
    env = {"OPENAI_API_KEY": "short", "HOME": "/root/somewhere", "MODEL": "gpt-4o-mini"}
    text = "score 8, model gpt-4o-mini at /root/somewhere (a short note on bearer markets)"
    assert redact(text, env) == text
