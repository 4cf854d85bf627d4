"""Secrets never reach logs, reports or done-records: redaction helpers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

SECRET_KEYS = re.compile(r"(secret|password|token|key|credential|session)", re.I)
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so ``redact_text`` removes it wherever it appears."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def register_url_secrets(url: str | None) -> None:
    """Register the password and the secret-looking query values (``api_key=``, ``token=``)
    of a URL, so ``redact_text`` hides them wherever the URL is printed."""
    if not url:
        return
    from urllib.parse import parse_qsl

    try:
        parts = urlsplit(url)
    except ValueError:
        return
    register_secret(parts.password)
    for k, v in parse_qsl(parts.query):
        if SECRET_KEYS.search(k):
            register_secret(v)


def register_settings_secrets(settings) -> None:
    """Register every secret a run's settings can carry: secret-looking storage options,
    passwords and keys in ``--server-url``/``--endpoint-url``, and the AWS secret variables.
    Called once, where settings are built (``settings.load_settings``)."""
    import os

    register_url_secrets(settings.server_url)
    register_url_secrets(settings.endpoint_url)
    for k, v in settings.storage_options.items():
        if any(w in k.lower() for w in ("secret", "token", "password", "key")) and "id" not in k.lower():
            register_secret(str(v))
    register_secret(os.environ.get("AWS_SECRET_ACCESS_KEY"))
    register_secret(os.environ.get("AWS_SESSION_TOKEN"))


def redact_url(url: str) -> str:
    """Drop ``user:password@`` from a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password or parts.username:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def redact_options(options: dict) -> dict:
    """Storage options with secret-looking values replaced by ``***``."""
    out = {}
    for k, v in options.items():
        if isinstance(v, dict):
            out[k] = redact_options(v)
        elif SECRET_KEYS.search(str(k)) and "endpoint" not in str(k).lower():
            out[k] = "***"
        else:
            out[k] = v
    return out


def redact_text(text: str) -> str:
    """Remove registered secret values and URL credentials from free text."""
    for s in _SECRETS:
        text = text.replace(s, "***")
    if "@" not in text:  # no user:password@ in a URL (a rerun prints a line per document)
        return text
    return _URL_CREDENTIALS.sub(r"\1", text)


_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")
