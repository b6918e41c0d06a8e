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


SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~%!$'()*+,", min_size=1, max_size=30)


@given(user=SECRET, password=SECRET, key=SECRET, param=st.sampled_from(["api-key", "api_key", "key", "token", "access_token", "sig", "Password"]),
       scheme=st.sampled_from(["http", "https", "HTTPS"]), before=st.text(max_size=30), after=st.sampled_from(["", " failed", "\n", "#frag"]))
def test_credentials_in_a_url_are_masked_and_the_address_kept(user, password, key, param, scheme, before, after):
    url = f"{scheme}://{user}:{password}@judge.example:8443/v1?api-version=2024-06&{param}={key}"
    out = redact(before + " " + url + after, env={})
    assert f"{user}:{password}@" not in out and f"{param}={key}" not in out
    assert f"{scheme}://{MASK}@judge.example:8443/v1?api-version=2024-06&{param}={MASK}" in out


def test_urls_without_credentials_are_left_alone():
    for text in ("http://127.0.0.1:8000/v1", "https://api.openai.com/v1?api-version=2024-06", "mailto:a@b.example",
                 "write to team@lab.example", "runs/default/judge?x=1"):
        assert redact(text, env={}) == text
