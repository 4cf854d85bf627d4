"""Quality flags of a converted document: does the result hold usable text?

``no_text``: the result has no text characters at all (a scan or an image converted at tier
flash yields only image embeds; OCR needs tier basic and its models).
``garbled_text``: the extracted text looks like mojibake. Score: the share of letters that
are Latin-1 supplement / Latin Extended letters (U+00C0-U+024F) or the replacement/control
characters, over all letters; above 0.3 with at least 20 letters is flagged. Legitimate
European text (French, German, Polish) stays far below that; GBK bytes decoded as
WinAnsi (a font without ToUnicode) are almost all such letters.
``empty_pages``: pages with no text block content.
"""

from __future__ import annotations

import re

GARBLED_THRESHOLD = 0.3
GARBLED_MIN_LETTERS = 20
_IMG = re.compile(r"!\[[^\]]*\]\([^)]*\)")


def _page_has_text(page: dict) -> bool:
    def walk(obj) -> bool:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in ("content", "text") and isinstance(v, str) and v.strip():
                    return True
                if walk(v):
                    return True
        elif isinstance(obj, list):
            return any(walk(x) for x in obj)
        return False

    return walk(page.get("blocks", page))


def garbled_score(text: str) -> tuple[float, int]:
    """``(score, letters)``: share of suspicious letters among all letters (0..1)."""
    letters = [c for c in text if c.isalpha() or c in "\ufffd"]
    if not letters:
        return 0.0, 0
    bad = sum(1 for c in letters if "\u00c0" <= c <= "\u024f" or c == "\ufffd")
    return bad / len(letters), len(letters)


def assess(middle: dict, markdown: str) -> dict:
    """``{"no_text": bool, "garbled_text": bool, "garbled_score": float, "empty_pages": int,
    "pages": int, "text_chars": int}`` for a middle_json dict and its markdown."""
    text = _IMG.sub("", markdown or "")
    chars = sum(1 for c in text if c.isalnum())
    pages = middle.get("pages", []) if isinstance(middle, dict) else []
    empty = sum(1 for p in pages if not _page_has_text(p))
    score, letters = garbled_score(text)
    return {
        "no_text": chars == 0,
        "garbled_text": letters >= GARBLED_MIN_LETTERS and score > GARBLED_THRESHOLD,
        "garbled_score": round(score, 3),
        "empty_pages": empty,
        "pages": len(pages),
        "text_chars": chars,
    }
