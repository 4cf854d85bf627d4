"""Quality flags of a converted document: does the result hold usable text?

``no_text``: the result has no text characters at all (a scan or an image converted at tier
flash yields only image embeds; OCR needs tier basic and its models).

``garbled_text``: the text layer decodes to mojibake. The score looks for what mojibake is:
bytes of one encoding shown as characters of another. A PDF font without a ToUnicode map and
with WinAnsi encoding (or a UTF-8 file read as Latin-1) turns every byte >= 0x80 into one
Latin-1 / Windows-1252 character (``¹ØÓÚºì¾ü`` for the GBK bytes of ``关于红军``).

1. Every character that is such a byte (U+0080..U+00FF, or one of cp1252's characters for
   0x80..0x9F such as ``…`` or ``‰``) is turned back into its byte; maximal runs of them are
   collected.
2. A run is *explained* as far as it re-decodes, two or more bytes at a time, as
   UTF-8, or as the common characters of a CJK double-byte encoding: GB2312 (lead bytes
   0xA1-0xA3 punctuation, 0xB0-0xD7 level-1 hanzi), EUC-KR (0xA1-0xA3, 0xB0-0xC8 hangul),
   EUC-JP (0xA1-0xA5 punctuation and kana, 0xB0-0xCF level-1 kanji), trail bytes 0xA1-0xFE.
   The codec that explains most of the run counts. U+FFFD (a character lost in decoding)
   counts as explained too.
3. ``garbled_score`` = explained characters / (letters + Latin-1-byte characters + U+FFFD).
   ``garbled_text`` when the score is above ``GARBLED_THRESHOLD`` (0.3) and at least
   ``GARBLED_MIN_CHARS`` (10) characters are explained.

Correct text scores near 0: CJK, Hangul, kana, Arabic, Cyrillic letters are not Latin-1
bytes at all; European accented letters stand mostly alone between ASCII letters (``café``,
``Größe``), and the few adjacent pairs (Portuguese ``ção``: ç+ã = 0xE7 0xE3) fall outside
the common lead-byte ranges or are a small share of the letters. GBK/EUC mojibake scores near
1. Known limits: Shift-JIS and Big5 mojibake mix ASCII bytes into their characters and are
not explained; UTF-8 mojibake of mostly-ASCII European text (``cafÃ©``) scores only the
share of its accented letters (0.1-0.5), since the rest of the text is intact.

``empty_pages``: pages with no text block content.

The counts behind each number are kept (``text_chars``, ``garbled_chars``,
``scored_chars``) so that page windows combine exactly (``combine``).

Must not: import MinerU or read files (it scores the middle JSON and Markdown it is given); it
runs in the workers.
"""

from __future__ import annotations

import re

GARBLED_THRESHOLD = 0.3
GARBLED_MIN_CHARS = 10
_IMG = re.compile(r"!\[[^\]]*\]\([^)]*\)")

#: lead-byte ranges of the common characters of each double-byte encoding (trail 0xA1-0xFE)
_DBCS: dict[str, tuple[tuple[int, int], ...]] = {
    "gb2312": ((0xA1, 0xA3), (0xB0, 0xD7)),
    "euc_kr": ((0xA1, 0xA3), (0xB0, 0xC8)),
    "euc_jp": ((0xA1, 0xA5), (0xB0, 0xCF)),
}


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


def _byte_of(c: str) -> int | None:
    """The byte >= 0x80 that ``c`` shows under Latin-1 / Windows-1252, else None."""
    o = ord(c)
    if 0x80 <= o <= 0xFF:
        return o
    if o < 0x100:
        return None
    try:
        b = c.encode("cp1252")
    except UnicodeEncodeError:
        return None
    return b[0] if len(b) == 1 and b[0] >= 0x80 else None


def _explained(run: bytes) -> int:
    """How many bytes of ``run`` re-decode as UTF-8 or as common CJK double-byte characters
    (the best codec)."""
    best = 0
    i = n = 0
    while i < len(run):  # UTF-8
        b = run[i]
        ln = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
        if ln and i + ln <= len(run):
            try:
                run[i:i + ln].decode("utf-8")
                n, i = n + ln, i + ln
                continue
            except UnicodeDecodeError:
                pass
        i += 1
    best = n
    for codec, leads in _DBCS.items():
        i = n = 0
        while i + 1 < len(run):
            lead, trail = run[i], run[i + 1]
            if 0xA1 <= trail <= 0xFE and any(lo <= lead <= hi for lo, hi in leads):
                try:
                    run[i:i + 2].decode(codec)
                    n, i = n + 2, i + 2
                    continue
                except UnicodeDecodeError:
                    pass
            i += 1
        best = max(best, n)
    return best


def garbled_counts(text: str) -> tuple[int, int]:
    """``(explained, scored)`` character counts of ``text`` (see the module docstring)."""
    scored = explained = 0
    run: list[int] = []

    def flush() -> None:
        nonlocal explained
        if len(run) >= 2:
            explained += _explained(bytes(run))
        run.clear()

    for c in text:
        if c == "\ufffd":
            flush()
            scored += 1
            explained += 1
            continue
        b = _byte_of(c)
        if b is not None:
            run.append(b)
            scored += 1
            continue
        flush()
        if c.isalpha():
            scored += 1
    flush()
    return explained, scored


def garbled_score(text: str) -> tuple[float, int]:
    """``(score, explained characters)``: the share of mojibake among the scored characters (0..1)."""
    explained, scored = garbled_counts(text)
    return (explained / scored if scored else 0.0), explained


def _flags(text_chars: int, garbled: int, scored: int, empty: int, pages: int) -> dict:
    score = garbled / scored if scored else 0.0
    return {
        "no_text": text_chars == 0,
        "garbled_text": garbled >= GARBLED_MIN_CHARS and score > GARBLED_THRESHOLD,
        "garbled_score": round(score, 3),
        "empty_pages": empty,
        "pages": pages,
        "text_chars": text_chars,
        "garbled_chars": garbled,
        "scored_chars": scored,
    }


def assess(middle: dict, markdown: str) -> dict:
    """``{"no_text", "garbled_text", "garbled_score", "empty_pages", "pages", "text_chars",
    "garbled_chars", "scored_chars"}`` for a middle_json dict and its markdown."""
    text = _IMG.sub("", markdown or "")
    chars = sum(1 for c in text if c.isalnum())
    pages = middle.get("pages", []) if isinstance(middle, dict) else []
    empty = sum(1 for p in pages if not _page_has_text(p))
    garbled, scored = garbled_counts(text)
    return _flags(chars, garbled, scored, empty, len(pages))


def combine(parts: list[dict]) -> dict:
    """The quality of a document from the quality of its page windows (counts add up)."""
    tot = {k: sum(int(p.get(k, 0)) for p in parts)
           for k in ("text_chars", "garbled_chars", "scored_chars", "empty_pages", "pages")}
    return _flags(tot["text_chars"], tot["garbled_chars"], tot["scored_chars"], tot["empty_pages"], tot["pages"])
