"""Secrets never reach logs, reports or done-records: redaction helpers.

Must not: import anything of the package, or print (callers print the redacted text).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SECRET_KEYS = re.compile(r"(secret|password|token|key|credential|session)", re.I)
_SECRETS: set[str] = set()
_ORDER: list[str] = []  # _SECRETS, longest first: an escaped form is replaced before the bare one


def register_secret(value: str | None) -> None:
    """Remember a secret value so ``redact_text`` removes it wherever it appears: as it is, and
    as it appears inside a JSON string (``json.dumps``' escapes of ``"``, ``\\``, control
    characters, and ``\\uXXXX`` for non-ASCII), so text that is JSON is redacted too."""
    if value and len(value) >= 4:
        _SECRETS.add(value)
        for ascii_only in (False, True):
            _SECRETS.add(json.dumps(value, ensure_ascii=ascii_only)[1:-1])
        _ORDER[:] = sorted(_SECRETS, key=len, reverse=True)


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
    """Register every secret a run's settings can carry: secret-looking storage options (both
    sides' and the per-side ones), passwords and keys in ``--server-url`` and the endpoint URLs,
    and the AWS secret variables.
    Called once, where settings are built (``settings.load_settings``)."""
    import os

    register_url_secrets(settings.server_url)
    for side in ("", "input_", "output_"):
        register_url_secrets(getattr(settings, f"{side}endpoint_url", None))
        for k, v in (getattr(settings, f"{side}storage_options", None) or {}).items():
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


def may_hold_secret(text: str) -> bool:
    """Whether ``text`` may hold something :func:`redact_text` removes: a registered secret
    value (as it is, or as JSON escapes it: a secret inside a string of JSON text is found in
    the text) or a URL's ``user:password@``. False means ``redact_text(text) == text``; a
    substring search per registered form, cheaper than redacting (a run with
    ``AWS_SECRET_ACCESS_KEY`` set checks every report line)."""
    return "@" in text or any(s in text for s in _ORDER)


def redact_text(text: str) -> str:
    """Remove registered secret values and URL credentials from free text."""
    for s in _ORDER:
        text = text.replace(s, "***")
    if "@" not in text:  # no user:password@ in a URL (a rerun prints a line per document)
        return text
    return _URL_CREDENTIALS.sub(r"\1", text)


_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


def redact_data(obj: Any, *, keep: frozenset[str] = frozenset()) -> Any:
    """``obj`` (JSON data: dicts, lists, strings, numbers) with every string value through
    :func:`redact_text`; dict keys are kept as they are, and so are the values under a key in
    ``keep`` (anywhere in the tree). A new object; ``obj`` is not changed. Redacting the data
    before ``json.dumps`` (rather than the JSON text) never breaks the JSON's syntax."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, list):
        return [redact_data(v, keep=keep) for v in obj]
    if isinstance(obj, dict):
        return {k: v if k in keep else redact_data(v, keep=keep) for k, v in obj.items()}
    return obj
