"""Page windows: which pages of a PDF a run converts (``--pages``) and how they are cut into
windows (``--window-pages``, or one window per worker for a PDF longer than its share of the run).

Pure functions over page indices and planned documents; ``plan`` calls them.

Must not: open a PDF, read or write storage, or import ``plan`` (it imports this module).
"""

from __future__ import annotations

from .sniff import PDF_TYPES


def parse_page_ranges(spec: str, total: int) -> list[int]:
    """``"1-5,10"`` -> sorted 0-based page indices within ``total`` pages (``r1`` is the last
    page, as in MinerU's page_range). A range is clipped to the document at both ends (``1-1000``
    and ``r40-r1`` on a 5-page PDF are pages 1-5), so the result may be empty. Raises ValueError
    on a malformed spec, page 0, or a range whose end comes before its start on this document
    (``r1-3`` on a 5-page PDF)."""
    pages: set[int] = set()

    def num(tok: str) -> tuple[int, bool]:
        tok = tok.strip().lower()
        if tok.startswith("r"):
            return total - int(tok[1:]) + 1, True
        return int(tok), False

    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            i = part.index("-", 1)
            (a, from_end), (b, _) = num(part[:i]), num(part[i + 1:])
        else:
            a, from_end = num(part)
            b = a
        if b < a:
            raise ValueError(f"bad page range {part!r}: on this {total}-page PDF its end comes before its start")
        if a < 1 and not from_end:
            raise ValueError(f"bad page range {part!r}")
        pages.update(range(max(a, 1) - 1, min(b, total)))
    return sorted(pages)


def contiguous_ranges(indices: list[int]) -> list[tuple[int, int]]:
    """0-based indices -> 1-based inclusive contiguous ranges."""
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][1] == i:  # previous end (1-based) == this index (0-based) -> contiguous
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i + 1, i + 1))
    return out


def make_windows(indices: list[int], window: int) -> list[tuple[int, int]]:
    """Split selected pages (0-based) into page windows of at most ``window`` pages each,
    as 1-based inclusive ranges in page order."""
    chunks: list[tuple[int, int]] = []
    for a, b in contiguous_ranges(indices):
        start = a
        while start <= b:
            end = min(b, start + window - 1)
            chunks.append((start, end))
            start = end + 1
    return chunks


MIN_SPREAD_WINDOW = 25  # pages: below this a window's fixed cost (reading the PDF, a merge) is not worth it


def spread_long_documents(planned: list, workers: int, *, max_window: int,
                          min_window: int = MIN_SPREAD_WINDOW) -> list[str]:
    """Split a PDF that would be the run's long pole into page windows for the other workers.

    The run's work is counted in pages (a PDF to convert: its selected pages; any other
    document to convert: 1). A PDF with more pages than one worker's share (total / ``workers``)
    and at least ``2 * min_window`` pages is cut into ``min(workers, pages // min_window)``
    windows of equal size (never larger than ``max_window``, the ``--window-pages`` limit).
    One 100-page PDF on 2 workers: windows 1-50 and 51-100; the same PDF among 200 small
    documents: one piece (its 100 pages are below the share of 150).

    Changes ``planned`` in place; returns the inputs (``source.rel``) that were split.
    """
    todo = [p for p in planned if p.action == "convert"]
    if workers < 2 or not todo:
        return []
    selected: dict[int, list[int]] = {}  # id(PDF) -> its selected 0-based pages
    for p in todo:
        if p.pages and p.source.kind in PDF_TYPES:
            selected[id(p)] = parse_page_ranges(p.page_range, p.pages) if p.page_range else list(range(p.pages))
    share = sum(len(selected.get(id(p), [0])) for p in todo) / workers
    split = []
    for p in todo:
        indices = selected.get(id(p))
        n = len(indices) if indices is not None else 1
        if indices is None or n <= share or n < 2 * min_window:
            continue
        k = min(workers, n // min_window)
        size = min(max_window, -(-n // k))
        current = max((b - a + 1 for a, b in p.windows), default=n)
        if size >= current:
            continue
        p.windows = make_windows(indices, size)
        split.append(p.source.rel)
    return split
