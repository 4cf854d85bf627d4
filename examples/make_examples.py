"""Deterministic, stdlib-only generator of small real example documents.

Running ``python examples/make_examples.py [OUTDIR]`` (OUTDIR defaults to the
folder holding this script) writes five files:

* ``report.pdf``  - 2-page text PDF: heading, paragraph, a ruled table, notes,
  and a "Page N" footer on every page;
* ``memo.docx``   - Word document: Heading 1, two paragraphs, a 3x3 table;
* ``budget.xlsx`` - workbook with one sheet "Budget" (header + 4 rows);
* ``page.html``   - UTF-8 HTML page: <h1>, accented paragraph, <table>;
* ``data.csv``    - CSV with a header row and 5 rows (one quoted comma cell).

Every run produces the same bytes: no clocks, fixed ZIP timestamps
(2026-01-01 00:00:00), fixed member order and fixed compression settings.

The writer functions are public so tests and benchmarks can build their own
documents, e.g. a 300-page PDF::

    from make_examples import write_text_pdf
    write_text_pdf("big.pdf", numbered_pages(300), footer="Page {n}")

Importing this module has no side effects.
"""

from __future__ import annotations

import csv
import html
import io
import os
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Sequence
from xml.sax.saxutils import escape as _xml_escape

__all__ = [
    "write_text_pdf",
    "numbered_pages",
    "write_report_pdf",
    "write_docx",
    "write_xlsx",
    "write_html",
    "write_csv",
    "make_all",
    "EXAMPLE_FILES",
    "REPORT_TABLE",
    "MEMO_TABLE",
    "BUDGET_ROWS",
    "CSV_ROWS",
]

#: The names written by :func:`make_all`, in order.
EXAMPLE_FILES = ("report.pdf", "memo.docx", "budget.xlsx", "page.html", "data.csv")

#: Fixed timestamp of every ZIP member (DOCX/XLSX), for byte-identical output.
ZIP_DATE_TIME = (2026, 1, 1, 0, 0, 0)

# --------------------------------------------------------------------------
# Example content (shared with tests so expectations stay in one place)
# --------------------------------------------------------------------------

REPORT_TITLE = "Quarterly Report"
REPORT_BODY = (
    "This report summarises sales for the first two quarters of the year. "
    "Revenue grew in every region, led by the North, while the West stayed "
    "flat. Figures below are in thousands of units shipped."
)
REPORT_TABLE = [
    ["Region", "Q1", "Q2"],
    ["North", "120", "135"],
    ["South", "98", "104"],
    ["West", "87", "87"],
]
REPORT_NOTES_TITLE = "Notes"
REPORT_NOTES = (
    "All figures are preliminary and subject to audit. Returns are not "
    "deducted. The next report will cover the third quarter and include a "
    "breakdown by product line."
)

MEMO_HEADING = "Project Memo"
MEMO_PARAGRAPHS = [
    "This memo records the decisions taken at the kickoff meeting of the "
    "document conversion project.",
    "Each owner below is responsible for delivering their item by the due "
    "date, and for flagging risks early.",
]
MEMO_TABLE = [
    ["Item", "Owner", "Due"],
    ["Parser setup", "Alice", "2026-02-01"],
    ["Batch runner", "Bob", "2026-03-15"],
]

BUDGET_SHEET = "Budget"
BUDGET_ROWS = [
    ["Category", "Amount"],
    ["Salaries", 52000],
    ["Hardware", 8500],
    ["Travel", 3200],
    ["Software", 1750],
]

HTML_TITLE = "Café Menu"
HTML_HEADING = "Café Menu"
HTML_PARAGRAPHS = [
    "Bienvenue au café: crème brûlée, piñata cake and smørrebrød are served "
    "every day in Zürich.",
]
HTML_TABLE = [
    ["Dish", "Price", "Origin"],
    ["Crème brûlée", "6.50", "France"],
    ["Smørrebrød", "8.00", "Denmark"],
    ["Apfelstrudel", "5.75", "Österreich"],
]

CSV_ROWS = [
    ["id", "name", "city", "score"],
    ["1", "Alice", "Paris", "91"],
    ["2", "Bob", "Berlin", "78"],
    ["3", "Carol", "Portland, Oregon", "85"],
    ["4", "Dave", "Madrid", "66"],
    ["5", "Eve", "Oslo", "99"],
]


# --------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------

_PAGE_W, _PAGE_H = 612, 792  # US Letter, points
_MARGIN = 72


def _pdf_str(text: str) -> bytes:
    """Encode *text* as a PDF literal string in WinAnsi (cp1252)."""
    raw = text.encode("cp1252", errors="replace")
    raw = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    raw = raw.replace(b"\r", b"\\r").replace(b"\n", b"\\n")
    return b"(" + raw + b")"


def _num(v: float) -> str:
    """Format a coordinate compactly and deterministically."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}".rstrip("0").rstrip(".")


# Approximate Helvetica advance widths (per 1000 em) for wrapping/centering.
_NARROW = set("iljtfI.,;:'!|() ")
_WIDE = set("mwMW@")


def _text_width(text: str, size: float) -> float:
    total = 0
    for ch in text:
        if ch in _NARROW:
            total += 278
        elif ch in _WIDE:
            total += 833
        elif ch.isupper() or ch.isdigit():
            total += 667 if ch.isupper() else 556
        else:
            total += 520
    return total * size / 1000.0


def _wrap(text: str, size: float, width: float) -> list[str]:
    """Greedy word wrap of *text* to *width* points at font *size*."""
    words = text.split()
    if not words:
        return [""]
    lines: list[str] = []
    cur = words[0]
    for w in words[1:]:
        cand = cur + " " + w
        if _text_width(cand, size) <= width:
            cur = cand
        else:
            lines.append(cur)
            cur = w
    lines.append(cur)
    return lines


class _Canvas:
    """Tiny content-stream builder (text with /F1 Helvetica, /F2 Helvetica-Bold)."""

    def __init__(self) -> None:
        self.ops: list[bytes] = []

    def text(self, x: float, y: float, s: str, size: float = 11, bold: bool = False) -> None:
        font = b"/F2" if bold else b"/F1"
        self.ops.append(
            b"BT " + font + b" " + _num(size).encode() + b" Tf "
            + _num(x).encode() + b" " + _num(y).encode() + b" Td "
            + _pdf_str(s) + b" Tj ET"
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, width: float = 0.75) -> None:
        self.ops.append(
            f"{_num(width)} w {_num(x1)} {_num(y1)} m {_num(x2)} {_num(y2)} l S".encode()
        )

    def paragraph(self, x: float, y: float, s: str, size: float = 11,
                  width: float = _PAGE_W - 2 * _MARGIN, leading: float | None = None) -> float:
        """Draw wrapped text starting at baseline *y*; return the next free baseline."""
        leading = leading if leading is not None else size * 1.4
        for ln in _wrap(s, size, width):
            self.text(x, y, ln, size)
            y -= leading
        return y

    def table(self, x: float, y_top: float, rows: Sequence[Sequence[str]],
              col_widths: Sequence[float], row_h: float = 20, size: float = 11) -> float:
        """Draw a fully ruled grid with one text cell per slot; header row bold.

        Returns the y coordinate of the table's bottom rule.
        """
        n_rows = len(rows)
        total_w = sum(col_widths)
        y_bottom = y_top - n_rows * row_h
        # horizontal rules
        for r in range(n_rows + 1):
            y = y_top - r * row_h
            self.line(x, y, x + total_w, y, 1.5 if r in (0, 1, n_rows) else 0.5)
        # vertical rules
        cx = x
        for w in [0, *col_widths]:
            cx += w
            self.line(cx, y_top, cx, y_bottom, 0.75)
        # cell text
        for r, row in enumerate(rows):
            base = y_top - r * row_h - row_h + (row_h - size) / 2 + size * 0.2
            cx = x
            for c, cell in enumerate(row):
                self.text(cx + 6, base, str(cell), size, bold=(r == 0))
                cx += col_widths[c]
        return y_bottom

    def data(self) -> bytes:
        return b"\n".join(self.ops) + b"\n"


def _write_pdf(path: str | os.PathLike, contents: Sequence[bytes], *,
               title: str | None = None, compress: bool = True) -> None:
    """Assemble a PDF-1.4 file from one content stream per page.

    Object layout: 1 Catalog, 2 Pages, 3 /F1 Helvetica, 4 /F2 Helvetica-Bold,
    5 Info (optional), then (page, content) pairs.  Offsets in the xref table
    are computed from the bytes actually written.
    """
    objs: list[bytes] = []  # objs[i] is object number i+1

    n_pages = len(contents)
    first_page = 6
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(n_pages))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                b"/Encoding /WinAnsiEncoding >>")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold "
                b"/Encoding /WinAnsiEncoding >>")
    info = b"<< /Producer (mineru-cli make_examples.py)"
    if title:
        info += b" /Title " + _pdf_str(title)
    info += b" >>"
    objs.append(info)
    for i, content in enumerate(contents):
        page_no = first_page + 2 * i
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_W} {_PAGE_H}] "
            f"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> "
            f"/Contents {page_no + 1} 0 R >>".encode()
        )
        if compress:
            data = zlib.compress(content, 9)
            head = f"<< /Length {len(data)} /Filter /FlateDecode >>".encode()
        else:
            data = content
            head = f"<< /Length {len(data)} >>".encode()
        objs.append(head + b"\nstream\n" + data + b"\nendstream")

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{num} 0 obj\n".encode() + body + b"\nendobj\n")
    xref_at = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n".encode())
    out.write(b"0000000000 65535 f \n")
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info 5 0 R >>\n"
        f"startxref\n{xref_at}\n%%EOF\n".encode()
    )
    Path(path).write_bytes(out.getvalue())


def write_text_pdf(path: str | os.PathLike, pages: list[list[str]], *,
                   title: str | None = None, footer: str | None = None,
                   compress: bool = True) -> None:
    """Write a simple text PDF (PDF-1.4, US Letter, Helvetica, WinAnsi).

    Args:
        path: output file.
        pages: one entry per page; each entry is a list of text lines
            (``list[list[str]]``).  A line starting with ``"# "`` is drawn as a
            bold 18 pt heading (without the marker); other lines are 11 pt body
            text, word-wrapped to the page width.  An empty string leaves a
            blank line.  Text that does not fit on the page is clipped (put
            fewer lines per page).  Characters outside cp1252 become ``?``.
            See :func:`numbered_pages` for ready-made content, and its note on
            MinerU dropping top-of-page lines that repeat across pages.
        title: optional document title stored in the /Info dictionary.
        footer: optional footer template drawn centred at the bottom of every
            page, formatted with ``n`` (1-based page number) and ``total``,
            e.g. ``"Page {n}"`` or ``"{n} / {total}"``.  Note that MinerU
            classifies such footers as ``page_number`` blocks and leaves them
            out of the Markdown; put the number in body text if it must show.
        compress: zlib (FlateDecode) content streams if true, raw otherwise.

    The output is deterministic: same arguments, same bytes.
    """
    if not pages:
        raise ValueError("a PDF needs at least one page")
    contents = []
    for n, lines in enumerate(pages, start=1):
        cv = _Canvas()
        y = _PAGE_H - _MARGIN
        for line in lines:
            if line.startswith("# "):
                y -= 6
                cv.text(_MARGIN, y, line[2:], 18, bold=True)
                y -= 30
            elif not line.strip():
                y -= 15
            else:
                y = cv.paragraph(_MARGIN, y, line, 11, leading=15)
        if footer is not None:
            label = footer.format(n=n, total=len(pages))
            cv.text((_PAGE_W - _text_width(label, 10)) / 2, 40, label, 10)
        contents.append(cv.data())
    _write_pdf(path, contents, title=title, compress=compress)


_WORDS = (
    "amber basin cedar delta ember fjord granite harbor island juniper kestrel "
    "lagoon meadow nectar orchard pebble quarry river summit timber upland "
    "valley willow yarrow zephyr beacon canyon dune estuary forest glacier "
    "hollow"
).split()


def numbered_pages(n: int, *, paragraphs: int = 1, words: int = 45) -> list[list[str]]:
    """Deterministic page contents for :func:`write_text_pdf`, one page per number.

    Returns ``n`` pages (``list[list[str]]``).  Page ``i`` (1-based) holds a
    ``"# "`` heading that differs on every page (three words chosen from ``i``,
    unique for ``i`` up to 32768), ``paragraphs`` paragraphs of ``words``
    pseudo-random words, then the line ``"This is page {i} of {n}."``.

    Why this shape: MinerU treats lines near the top of a page whose text
    repeats from page to page (ignoring digits, e.g. ``"Chapter 7"``,
    ``"Page 7"``) as running headers and drops them from the Markdown.  A
    unique heading first and the page number lower down keep every page's
    number in the Markdown.
    """
    nw = len(_WORDS)
    state = 12345
    pages = []
    for i in range(1, n + 1):
        head = " ".join((_WORDS[i % nw], _WORDS[(i // nw) % nw], _WORDS[(i // nw // nw) % nw]))
        lines = [f"# {head.capitalize()}"]
        for _ in range(paragraphs):
            picked = []
            for _ in range(words):
                state = (state * 1103515245 + 12345) % 2**31  # fixed LCG: no `random`
                picked.append(_WORDS[(state >> 16) % nw])
            lines.append(" ".join(picked).capitalize() + ".")
        lines.append(f"This is page {i} of {n}.")
        pages.append(lines)
    return pages


def write_report_pdf(path: str | os.PathLike) -> None:
    """Write the 2-page example ``report.pdf``.

    Page 1: heading "Quarterly Report", a paragraph and a ruled 3-column table
    (:data:`REPORT_TABLE`); page 2: heading "Notes" and a paragraph.  Each page
    has a centred "Page N" footer.
    """
    contents = []
    # page 1
    cv = _Canvas()
    y = _PAGE_H - _MARGIN
    cv.text(_MARGIN, y, REPORT_TITLE, 22, bold=True)
    y -= 40
    y = cv.paragraph(_MARGIN, y, REPORT_BODY, 11, leading=15)
    y -= 20
    cv.table(_MARGIN, y, REPORT_TABLE, [160, 100, 100], row_h=22, size=11)
    contents.append(cv)
    # page 2
    cv = _Canvas()
    y = _PAGE_H - _MARGIN
    cv.text(_MARGIN, y, REPORT_NOTES_TITLE, 22, bold=True)
    y -= 40
    cv.paragraph(_MARGIN, y, REPORT_NOTES, 11, leading=15)
    contents.append(cv)
    # footers
    streams = []
    for n, cv in enumerate(contents, start=1):
        label = f"Page {n}"
        cv.text((_PAGE_W - _text_width(label, 10)) / 2, 40, label, 10)
        streams.append(cv.data())
    _write_pdf(path, streams, title=REPORT_TITLE)


# --------------------------------------------------------------------------
# ZIP helpers (DOCX / XLSX)
# --------------------------------------------------------------------------

_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def _write_zip(path: str | os.PathLike, members: Iterable[tuple[str, str]]) -> None:
    """Write a ZIP with fixed timestamps/permissions, in the given member order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 0
            zf.writestr(info, text.encode("utf-8"), compresslevel=9)
    Path(path).write_bytes(buf.getvalue())


def _x(s: object) -> str:
    return _xml_escape(str(s), {'"': "&quot;"})


# --------------------------------------------------------------------------
# DOCX
# --------------------------------------------------------------------------

_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFDOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"

_DOCX_STYLES = _XML_DECL + f"""<w:styles xmlns:w="{_W_NS}">
<w:docDefaults><w:rPrDefault><w:rPr><w:rFonts w:ascii="Calibri" w:hAnsi="Calibri"/><w:sz w:val="22"/></w:rPr></w:rPrDefault></w:docDefaults>
<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/><w:qFormat/></w:style>
<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/><w:basedOn w:val="Normal"/><w:next w:val="Normal"/><w:qFormat/><w:pPr><w:keepNext/><w:spacing w:before="240" w:after="120"/><w:outlineLvl w:val="0"/></w:pPr><w:rPr><w:color w:val="2F5496"/><w:sz w:val="32"/></w:rPr></w:style>
<w:style w:type="table" w:default="1" w:styleId="TableNormal"><w:name w:val="Normal Table"/><w:tblPr><w:tblInd w:w="0" w:type="dxa"/><w:tblCellMar><w:left w:w="108" w:type="dxa"/><w:right w:w="108" w:type="dxa"/></w:tblCellMar></w:tblPr></w:style>
<w:style w:type="table" w:styleId="TableGrid"><w:name w:val="Table Grid"/><w:basedOn w:val="TableNormal"/><w:tblPr><w:tblBorders><w:top w:val="single" w:sz="4" w:space="0" w:color="000000"/><w:left w:val="single" w:sz="4" w:space="0" w:color="000000"/><w:bottom w:val="single" w:sz="4" w:space="0" w:color="000000"/><w:right w:val="single" w:sz="4" w:space="0" w:color="000000"/><w:insideH w:val="single" w:sz="4" w:space="0" w:color="000000"/><w:insideV w:val="single" w:sz="4" w:space="0" w:color="000000"/></w:tblBorders></w:tblPr></w:style>
</w:styles>
"""


def _docx_par(text: str, style: str | None = None) -> str:
    ppr = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f'<w:p>{ppr}<w:r><w:t xml:space="preserve">{_x(text)}</w:t></w:r></w:p>'


def write_docx(path: str | os.PathLike, heading: str, paragraphs: Sequence[str],
               table: Sequence[Sequence[str]]) -> None:
    """Write a minimal valid Word document (.docx) with the stdlib ``zipfile``.

    Args:
        path: output file.
        heading: text of one "Heading 1" paragraph placed first.
        paragraphs: body paragraphs (``list[str]``), one ``<w:p>`` each.
        table: rows of cells (``list[list[str]]``); the first row is the header
            (marked as a repeating header row). All rows should have the same
            length. An empty sequence writes no table.

    Parts: ``[Content_Types].xml``, ``_rels/.rels``, ``word/document.xml``,
    ``word/_rels/document.xml.rels`` and ``word/styles.xml`` (Normal,
    Heading1, TableGrid).  Deterministic output.
    """
    body = [_docx_par(heading, "Heading1")]
    body += [_docx_par(p) for p in paragraphs]
    if table:
        n_cols = max(len(r) for r in table)
        col_w = 9000 // n_cols
        tbl = ['<w:tbl><w:tblPr><w:tblStyle w:val="TableGrid"/>'
               '<w:tblW w:w="0" w:type="auto"/><w:tblLook w:val="04A0"/></w:tblPr>',
               "<w:tblGrid>" + f'<w:gridCol w:w="{col_w}"/>' * n_cols + "</w:tblGrid>"]
        for r, row in enumerate(table):
            trpr = "<w:trPr><w:tblHeader/></w:trPr>" if r == 0 else ""
            cells = "".join(
                f'<w:tc><w:tcPr><w:tcW w:w="{col_w}" w:type="dxa"/></w:tcPr>'
                f"{_docx_par(str(c))}</w:tc>"
                for c in list(row) + [""] * (n_cols - len(row))
            )
            tbl.append(f"<w:tr>{trpr}{cells}</w:tr>")
        tbl.append("</w:tbl>")
        body.append("".join(tbl))
        body.append("<w:p/>")  # Word requires a paragraph after a final table
    body.append('<w:sectPr><w:pgSz w:w="12240" w:h="15840"/>'
                '<w:pgMar w:top="1440" w:right="1440" w:bottom="1440" w:left="1440" '
                'w:header="720" w:footer="720" w:gutter="0"/></w:sectPr>')
    document = (_XML_DECL + f'<w:document xmlns:w="{_W_NS}" xmlns:r="{_R_NS}"><w:body>'
                + "\n".join(body) + "</w:body></w:document>\n")
    content_types = _XML_DECL + (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        '<Override PartName="/word/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/>'
        "</Types>\n"
    )
    rels = _XML_DECL + (
        f'<Relationships xmlns="{_PKG_RELS_NS}">'
        f'<Relationship Id="rId1" Type="{_OFFDOC}" Target="word/document.xml"/>'
        "</Relationships>\n"
    )
    doc_rels = _XML_DECL + (
        f'<Relationships xmlns="{_PKG_RELS_NS}">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>'
        "</Relationships>\n"
    )
    _write_zip(path, [
        ("[Content_Types].xml", content_types),
        ("_rels/.rels", rels),
        ("word/document.xml", document),
        ("word/_rels/document.xml.rels", doc_rels),
        ("word/styles.xml", _DOCX_STYLES),
    ])


# --------------------------------------------------------------------------
# XLSX
# --------------------------------------------------------------------------

_S_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def _col_letter(idx: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    s = ""
    idx += 1
    while idx:
        idx, rem = divmod(idx - 1, 26)
        s = chr(65 + rem) + s
    return s


def write_xlsx(path: str | os.PathLike, rows: Sequence[Sequence[object]], *,
               sheet_name: str = "Sheet1") -> None:
    """Write a minimal valid Excel workbook (.xlsx) with one worksheet.

    Args:
        path: output file.
        rows: ``list[list[str | int | float | None]]``; row 0 goes to row 1 of
            the sheet.  ``int``/``float`` become numeric cells, ``str`` become
            inline-string cells, ``None`` leaves the cell empty.  The first row
            is styled bold (as a header).
        sheet_name: worksheet name (max 31 chars, no ``[]:*?/\\``).

    Parts: ``[Content_Types].xml``, ``_rels/.rels``, ``xl/workbook.xml``,
    ``xl/_rels/workbook.xml.rels``, ``xl/styles.xml``,
    ``xl/worksheets/sheet1.xml``.  Deterministic output.
    """
    sheet_rows = []
    max_col = 0
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, val in enumerate(row):
            if val is None:
                continue
            ref = f"{_col_letter(c)}{r}"
            style = ' s="1"' if r == 1 else ""
            if isinstance(val, bool):
                cells.append(f'<c r="{ref}" t="b"{style}><v>{int(val)}</v></c>')
            elif isinstance(val, (int, float)):
                cells.append(f'<c r="{ref}"{style}><v>{val!r}</v></c>')
            else:
                cells.append(f'<c r="{ref}" t="inlineStr"{style}><is><t xml:space="preserve">'
                             f"{_x(val)}</t></is></c>")
            max_col = max(max_col, c + 1)
        sheet_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    dim = f"A1:{_col_letter(max(max_col, 1) - 1)}{max(len(rows), 1)}"
    sheet = _XML_DECL + (
        f'<worksheet xmlns="{_S_NS}" xmlns:r="{_R_NS}">'
        f'<dimension ref="{dim}"/>'
        "<sheetData>" + "".join(sheet_rows) + "</sheetData></worksheet>\n"
    )
    workbook = _XML_DECL + (
        f'<workbook xmlns="{_S_NS}" xmlns:r="{_R_NS}">'
        f'<sheets><sheet name="{_x(sheet_name)}" sheetId="1" r:id="rId1"/></sheets>'
        "</workbook>\n"
    )
    styles = _XML_DECL + (
        f'<styleSheet xmlns="{_S_NS}">'
        '<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font>'
        '<font><b/><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>\n"
    )
    content_types = _XML_DECL + (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        "</Types>\n"
    )
    rels = _XML_DECL + (
        f'<Relationships xmlns="{_PKG_RELS_NS}">'
        f'<Relationship Id="rId1" Type="{_OFFDOC}" Target="xl/workbook.xml"/>'
        "</Relationships>\n"
    )
    wb_rels = _XML_DECL + (
        f'<Relationships xmlns="{_PKG_RELS_NS}">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>'
        "</Relationships>\n"
    )
    _write_zip(path, [
        ("[Content_Types].xml", content_types),
        ("_rels/.rels", rels),
        ("xl/workbook.xml", workbook),
        ("xl/_rels/workbook.xml.rels", wb_rels),
        ("xl/styles.xml", styles),
        ("xl/worksheets/sheet1.xml", sheet),
    ])


# --------------------------------------------------------------------------
# HTML / CSV
# --------------------------------------------------------------------------

def write_html(path: str | os.PathLike, title: str, heading: str,
               paragraphs: Sequence[str], table: Sequence[Sequence[str]] = ()) -> None:
    """Write a small UTF-8 HTML5 page.

    Args:
        path: output file.
        title: ``<title>`` text.
        heading: ``<h1>`` text.
        paragraphs: ``list[str]``, one ``<p>`` each (HTML-escaped).
        table: ``list[list[str]]``; first row becomes ``<th>`` cells in
            ``<thead>``, the rest ``<td>`` rows in ``<tbody>``. Empty: no table.
    """
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="fr">', "<head>", '<meta charset="utf-8">',
           f"<title>{e(title)}</title>", "</head>", "<body>", f"<h1>{e(heading)}</h1>"]
    out += [f"<p>{e(p)}</p>" for p in paragraphs]
    if table:
        out.append("<table>")
        out.append("<thead><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in table[0])
                   + "</tr></thead>")
        out.append("<tbody>")
        for row in table[1:]:
            out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
        out.append("</tbody>")
        out.append("</table>")
    out += ["</body>", "</html>", ""]
    Path(path).write_bytes("\n".join(out).encode("utf-8"))


def write_csv(path: str | os.PathLike, rows: Sequence[Sequence[object]]) -> None:
    """Write a UTF-8 CSV (``,`` separator, ``\\n`` line ends, minimal quoting).

    Args:
        path: output file.
        rows: ``list[list[str | int | float]]``; the first row is the header.
            Cells containing a comma, quote or newline are quoted.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerows(rows)
    Path(path).write_bytes(buf.getvalue().encode("utf-8"))


# --------------------------------------------------------------------------

def make_all(outdir: str | os.PathLike) -> list[Path]:
    """Write the five example files into *outdir* (created if missing).

    Returns the written paths in :data:`EXAMPLE_FILES` order.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    write_report_pdf(out / "report.pdf")
    write_docx(out / "memo.docx", MEMO_HEADING, MEMO_PARAGRAPHS, MEMO_TABLE)
    write_xlsx(out / "budget.xlsx", BUDGET_ROWS, sheet_name=BUDGET_SHEET)
    write_html(out / "page.html", HTML_TITLE, HTML_HEADING, HTML_PARAGRAPHS, HTML_TABLE)
    write_csv(out / "data.csv", CSV_ROWS)
    return [out / name for name in EXAMPLE_FILES]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: make_examples.py [OUTDIR]", file=sys.stderr)
        return 2
    outdir = Path(args[0]) if args else Path(__file__).resolve().parent
    for p in make_all(outdir):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
