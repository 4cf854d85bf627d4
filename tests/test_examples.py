"""The committed example documents: reproducible, and converted by real MinerU."""

from __future__ import annotations

import os

os.environ["MINERU_MODEL_SOURCE"] = "local"

import re
from pathlib import Path

import pypdfium2
import pytest

from conftest import EXAMPLES, load_make_examples

mk = load_make_examples()


class _MemoryWriter:
    """Minimal writer for ``ParseResult.save``: keeps every output in a dict."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def write(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def write_string(self, path: str, data: str) -> None:
        self.files[path] = data.encode("utf-8")


@pytest.fixture(scope="module")
def parser():
    from mineru.parser import MinerUParser

    return MinerUParser(tier="flash", parse_mode="txt")


def _convert(parser, path: Path) -> tuple[str, int]:
    result = parser.parse(str(path))
    writer = _MemoryWriter()
    result.save(writer)
    return writer.files["markdown.md"].decode("utf-8"), len(result.pages)


def _lines(markdown: str) -> list[str]:
    return [line.strip() for line in markdown.splitlines()]


# (a) -------------------------------------------------------------------------

def test_regenerated_examples_are_byte_identical(tmp_path):
    written = mk.make_all(tmp_path)
    assert [p.name for p in written] == list(mk.EXAMPLE_FILES)
    for name in mk.EXAMPLE_FILES:
        committed = EXAMPLES / name
        assert committed.is_file(), f"{name} not committed; run examples/make_examples.py"
        assert (tmp_path / name).read_bytes() == committed.read_bytes(), (
            f"{name} differs from a fresh generation; rerun examples/make_examples.py"
        )


def test_generation_is_deterministic(tmp_path):
    mk.make_all(tmp_path / "a")
    mk.make_all(tmp_path / "b")
    for name in mk.EXAMPLE_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# (b) -------------------------------------------------------------------------

def test_report_pdf_converts(parser):
    md, pages = _convert(parser, EXAMPLES / "report.pdf")
    lines = _lines(md)
    assert pages == 2
    # First-page title becomes a level-1 doc title, the page-2 heading a level-2 title.
    assert "# Quarterly Report" in lines
    assert "## Notes" in lines
    assert "Revenue grew in every region" in md
    assert "All figures are preliminary" in md
    # The ruled table is recovered as a Markdown table, cell for cell.
    assert "| Region | Q1 | Q2 |" in lines
    assert "| North | 120 | 135 |" in lines
    assert "| South | 98 | 104 |" in lines
    assert "| West | 87 | 87 |" in lines
    # "Page N" footers are classified as page_number blocks and left out.
    assert "Page 1" not in md and "Page 2" not in md


def test_memo_docx_converts(parser):
    md, pages = _convert(parser, EXAMPLES / "memo.docx")
    lines = _lines(md)
    assert pages == 1
    # MinerU maps Word "Heading 1" to a level-2 Markdown heading (only the
    # "Title" style becomes "#"); either way it is a heading, not body text.
    assert any(re.fullmatch(r"#{1,2} Project Memo", line) for line in lines), md
    assert "## Project Memo" in lines
    for paragraph in mk.MEMO_PARAGRAPHS:
        assert paragraph in lines
    assert "| Item | Owner | Due |" in lines
    assert "| Parser setup | Alice | 2026-02-01 |" in lines
    assert "| Batch runner | Bob | 2026-03-15 |" in lines


def test_budget_xlsx_converts(parser):
    md, pages = _convert(parser, EXAMPLES / "budget.xlsx")
    lines = _lines(md)
    assert pages == 1
    assert "| Category | Amount |" in lines
    assert "| Salaries | 52000 |" in lines
    assert "| Hardware | 8500 |" in lines
    assert "| Travel | 3200 |" in lines
    assert "| Software | 1750 |" in lines


def test_page_html_converts(parser):
    md, pages = _convert(parser, EXAMPLES / "page.html")
    lines = _lines(md)
    assert pages == 1
    assert "# Café Menu" in lines
    assert "crème brûlée, piñata cake and smørrebrød" in md
    assert "Zürich" in md
    assert "| Dish | Price | Origin |" in lines
    assert "| Crème brûlée | 6.50 | France |" in lines
    assert "| Apfelstrudel | 5.75 | Österreich |" in lines


def test_data_csv_converts(parser):
    md, pages = _convert(parser, EXAMPLES / "data.csv")
    lines = _lines(md)
    assert pages == 1
    assert "| id | name | city | score |" in lines
    assert "| 1 | Alice | Paris | 91 |" in lines
    # The quoted cell keeps its comma and stays one cell.
    assert "| 3 | Carol | Portland, Oregon | 85 |" in lines
    assert "| 5 | Eve | Oslo | 99 |" in lines


# (c) -------------------------------------------------------------------------

def test_write_text_pdf_page_count(tmp_path):
    path = tmp_path / "twelve.pdf"
    mk.write_text_pdf(path, mk.numbered_pages(12), title="Twelve", footer="Page {n}")
    pdf = pypdfium2.PdfDocument(str(path))
    try:
        assert len(pdf) == 12
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            text = textpage.get_text_range()
            assert f"This is page {index + 1} of 12." in text
            assert f"Page {index + 1}" in text
            textpage.close()
            page.close()
    finally:
        pdf.close()


def test_write_text_pdf_is_deterministic_and_uncompressed_option(tmp_path):
    pages = [["# Hello", "Ünïcödé-ish (parens) and back\\slash"], ["Second page"]]
    mk.write_text_pdf(tmp_path / "a.pdf", pages)
    mk.write_text_pdf(tmp_path / "b.pdf", pages)
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    mk.write_text_pdf(tmp_path / "raw.pdf", pages, compress=False)
    raw = (tmp_path / "raw.pdf").read_bytes()
    assert raw.startswith(b"%PDF-1.4") and b"/FlateDecode" not in raw
    pdf = pypdfium2.PdfDocument(str(tmp_path / "raw.pdf"))
    try:
        assert len(pdf) == 2
        text = pdf[0].get_textpage().get_text_range()
        assert "Ünïcödé-ish (parens) and back\\slash" in text
    finally:
        pdf.close()
