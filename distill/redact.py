"""Credentials out of recorded text: an endpoint's error message can echo the key it was sent
(a 401 that quotes the Authorization header), a URL can carry a password or a key, and error
text and endpoint addresses are written to verdict files, shard failure files, configs and logs."""

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
# Credentials inside URLs: the user:password part (http://u:pass@host) and query parameters
# named as keys (?api-key=..., &token=..., &sig=...). Masked wherever a URL is written: a
# judge's base_url is recorded with every verdict, in config.json and in the manifest.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]+@")
_URL_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:api[-_]?key|key|x-api-key|token|access[-_]?token|auth|authorization|secret|client[-_]?secret"
    r"|password|passwd|pwd|sig|signature|code)=)[^&;#\s]+")
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
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _URL_SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)
    return _PATTERNS.sub(MASK, text)
