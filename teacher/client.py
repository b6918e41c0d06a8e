"""The OpenAI-compatible client: served teachers (`make serve`), a remote vLLM server or
a hosted API, all through the official `openai` package.

The endpoint comes from OPENAI_BASE_URL (default: the local `make serve` endpoint) and
the key from OPENAI_API_KEY. The key is only ever handed to the client: never logged,
never written to a manifest or report (`describe()` is what may be recorded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

LOCAL_URL = "http://127.0.0.1:8000/v1"


@dataclass(frozen=True)
class TokenLogprobs:
    tokens: list[str]
    logprobs: list[float]  # of each generated token
    top: list[dict[str, float]]  # per token: top-k alternatives -> logprob


def make_client(base_url: str | None = None, timeout: float = 120.0, max_retries: int = 3):
    from openai import OpenAI

    url = base_url or os.environ.get("OPENAI_BASE_URL") or LOCAL_URL
    # A local server needs no key, but the client insists on one.
    key = os.environ.get("OPENAI_API_KEY") or "EMPTY"
    return OpenAI(base_url=url, api_key=key, timeout=timeout, max_retries=max_retries)


def describe(client) -> dict:
    """What may be recorded about an endpoint: its address, never its key."""
    return {"base_url": str(client.base_url)}


def chat_with_logprobs(client, model: str, message: str, max_tokens: int, top_k: int, temperature: float = 1.0):
    """One chat completion with per-token logprobs and the top-k alternatives."""
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": message}], max_tokens=max_tokens,
        temperature=temperature, logprobs=True, top_logprobs=top_k,
    )
    choice = resp.choices[0]
    content = choice.logprobs.content or []
    return choice.message.content, TokenLogprobs(
        tokens=[c.token for c in content],
        logprobs=[c.logprob for c in content],
        top=[{t.token: t.logprob for t in c.top_logprobs} for c in content],
    )


def complete_with_logprobs(client, model: str, prompt: str, max_tokens: int, top_k: int, temperature: float = 1.0):
    """One text completion (base models) with per-token logprobs and top-k alternatives."""
    resp = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                     temperature=temperature, logprobs=top_k)
    choice = resp.choices[0]
    lp = choice.logprobs
    return choice.text, TokenLogprobs(tokens=list(lp.tokens), logprobs=list(lp.token_logprobs),
                                      top=[dict(d) for d in lp.top_logprobs])


def _token_id(token: str) -> int:
    # With return_tokens_as_token_ids vLLM names every token "token_id:<id>".
    prefix, _, num = token.partition(":")
    if prefix != "token_id" or not num.lstrip("-").isdigit():
        raise ValueError(f"endpoint returned token {token!r}, not 'token_id:<id>': is it a vLLM server?")
    return int(num)


def score_topk(client, model: str, prompt_ids: list[int], completion_ids: list[int], top_k: int):
    """The teacher's top-k at every completion token, scoring text it did not write.

    One completions request echoes prompt + completion with prompt logprobs and generates
    nothing (vLLM: echo=True, max_tokens=0, tokens returned as ids). Returns (ids, logprobs),
    each [len(completion_ids)][top_k], in rank order."""
    resp = client.completions.create(
        model=model, prompt=list(prompt_ids) + list(completion_ids), max_tokens=0, echo=True, logprobs=top_k,
        temperature=0.0, extra_body={"return_tokens_as_token_ids": True},
    )
    top = resp.choices[0].logprobs.top_logprobs if resp.choices and resp.choices[0].logprobs else None
    n, T = len(prompt_ids), len(completion_ids)
    if top is None or len(top) < n + T:
        raise ValueError(f"model {model}: expected prompt logprobs for {n + T} tokens, got "
                         f"{0 if top is None else len(top)}; does the endpoint support echo with logprobs?")
    ids, lps = [], []
    for pos in range(n, n + T):
        ranked = sorted(((_token_id(t), lp) for t, lp in (top[pos] or {}).items()), key=lambda x: -x[1])[:top_k]
        if len(ranked) < top_k:
            raise ValueError(f"model {model}: {len(ranked)} logprobs at position {pos}, asked for {top_k}")
        ids.append([i for i, _ in ranked])
        lps.append([lp for _, lp in ranked])
    return ids, lps
