"""Credentials out of recorded text: an endpoint's error message can echo the key it was sent
(a 401 that quotes the Authorization header), and error text is written to verdict files,
shard failure files and logs."""

from __future__ import annotations

import os
import re

MASK = "[REDACTED]"

# Token shapes worth hiding even when they are not this process's own: a bearer header, an
# OpenAI-style key, a Hugging Face token.
_PATTERNS = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-[A-Za-z0-9_-]{8,}"
    r"|\bhf_[A-Za-z0-9]{8,}"
)
# Environment variables whose values are credentials.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$")


def secrets_in_env(env: dict[str, str] | None = None) -> list[str]:
    """Values of credential-named variables, longest first (so no key is left half-masked
    behind a shorter one that is its prefix); very short values are left alone."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if _SECRET_NAME.search(k.upper()) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: dict[str, str] | None = None) -> str:
    """`text` with every credential from the environment and every token-shaped string masked."""
    text = str(text)
    for value in secrets_in_env(env):
        text = text.replace(value, MASK)
    return _PATTERNS.sub(MASK, text)
