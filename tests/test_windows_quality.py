"""Issue 6: long PDFs in page windows, ``--pages``, and honest quality flags.

Real MinerU (tier flash, no model weights), the CLI as a real subprocess
(``python -m mineru_cli convert``), ``MINERU_MODEL_SOURCE=local``.

Test hooks used (engine.py ``_hold_for_tests``): ``MINERU_CLI_TEST_HOLD=<substring of the input
path>`` makes a worker sleep before a task (``MINERU_CLI_TEST_HOLD_SECONDS``, default 3600);
``MINERU_CLI_TEST_HOLD_PAGES=<first page>`` narrows it to the page window that starts at that
page, ``=merge`` to the merge of the windows; ``MINERU_CLI_TEST_HOLD_ONCE=<file>`` holds only
while the file does not exist (it is created when the hold starts).

The corpus's 20,000-page PDF (``pdf/broken/derived_20000_pages_200KB.pdf``) grows to 20+ GB
when MinerU gets it in one piece: it is only ever converted here in page windows, with a
worker memory limit. ``test_20000_pages_in_windows_memory_bounded`` converts a 2,000-page
contiguous range of it (all 20,000 pages take about 25 minutes on 2 cores; set
``MINERU_CLI_TEST_FULL_20000=1`` to convert all of them). ``benchmarks/windows_memory.py``
runs the whole file and the unwindowed comparison.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from conftest import EXAMPLES, by_input, cli_env, load_make_examples, load_report, run_cli

DONE = ".mineru-cli.done.json"
PAGE_RE = re.compile(r"This is page (\d+) of (\d+)\.")
IMG_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


mk = load_make_examples()


def write_pictures_pdf(path: Path, n: int) -> None:
    """An ``n``-page PDF (stdlib only): each page has three lines of unique text (from
    ``numbered_pages``) and one small RGB image that differs per page."""
    objs: list[bytes | None] = [b"<< /Type /Catalog /Pages 2 0 R >>", None,
                                b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    kids = []
    texts = mk.numbered_pages(n, words=12)
    for i in range(n):
        w, h = 32, 24
        px = bytes(v for y in range(h) for x in range(w)
                   for v in ((x * 8 + i * 37) % 256, (y * 10 + i * 11) % 256, (i * 53) % 256))
        img = zlib.compress(px)
        ops = [f"BT /F1 11 Tf 72 {700 - 16 * k} Td ({line.lstrip('# ')}) Tj ET" for k, line in enumerate(texts[i])]
        ops.append("q 240 0 0 180 186 300 cm /Im1 Do Q")
        content = "\n".join(ops).encode("latin-1")
        base = len(objs) + 1
        kids.append(base)
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> "
                    f"/XObject << /Im1 {base + 2} 0 R >> >> /Contents {base + 1} 0 R >>".encode())
        objs.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
        objs.append(f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceRGB "
                    f"/BitsPerComponent 8 /Filter /FlateDecode /Length {len(img)} >>\nstream\n".encode()
                    + img + b"\nendstream")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {n} >>".encode()
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for num, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + body + b"\nendobj\n"  # type: ignore[operator]
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def convert(tmp: Path, inputs, *args: str, timeout: float = 600, **env: str):
    """Run ``convert INPUTS -o tmp/out --report tmp/report.json ARGS``; returns
    (process, report or None, output folder)."""
    out, rep = tmp / "out", tmp / "report.json"
    inputs = [str(i) for i in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    proc = run_cli("convert", *inputs, "-o", str(out), "--report", str(rep), "--workers", "2", *args,
                   env=cli_env(tmp, **env), timeout=timeout)
    return proc, (load_report(rep) if rep.exists() else None), out


def read_outputs(folder: Path, stem: str) -> tuple[str, list, dict, dict]:
    md = (folder / f"{stem}.md").read_text(encoding="utf-8")
    cl = json.loads((folder / f"{stem}_content_list.json").read_text(encoding="utf-8"))
    middle = json.loads((folder / f"{stem}_middle.json").read_text(encoding="utf-8"))
    record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    return md, cl, middle, record


def window_attempts(attempts: list[dict]) -> dict[str, list[str]]:
    """``{"1-50": ["ok"], ...}``: the statuses of each page window's attempts."""
    out: dict[str, list[str]] = {}
    for a in attempts:
        if a.get("pages"):
            out.setdefault(a["pages"], []).append(a["status"])
    return out


def pdf_page_texts(cl: list) -> dict[int, str]:
    texts: dict[int, str] = {}
    for item in cl:
        texts[item["page_idx"]] = texts.get(item["page_idx"], "") + " " + (item.get("text") or "")
    return texts


# --- page windows -------------------------------------------------------------------------------

def test_300_pages_in_windows_merged_in_order_done_record_once(tmp_path):
    """300 numbered pages, 50-page windows: every page once, in order, with its own number;
    the done-record appears only after the merge, which starts when all windows are done."""
    src = tmp_path / "in"
    src.mkdir()
    mk.write_text_pdf(src / "book300.pdf", mk.numbered_pages(300))
    held = tmp_path / "merge-held"
    out, rep = tmp_path / "out", tmp_path / "report.json"
    env = cli_env(tmp_path, MINERU_CLI_TEST_HOLD="book300", MINERU_CLI_TEST_HOLD_PAGES="merge",
                  MINERU_CLI_TEST_HOLD_ONCE=str(held), MINERU_CLI_TEST_HOLD_SECONDS="3")
    proc = subprocess.Popen([sys.executable, "-m", "mineru_cli", "convert", str(src), "-o", str(out),
                             "--report", str(rep), "--workers", "2", "--window-pages", "50"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done_path = out / "book300.pdf" / DONE
    seen_while_merging = None
    deadline = time.time() + 400
    while proc.poll() is None and time.time() < deadline:
        if held.exists() and seen_while_merging is None:
            # the merge has started (and holds 3 s): every window is finished, nothing committed
            seen_while_merging = {
                "done_record": done_path.exists(),
                "windows_done": sorted(Path(p).parent.name for p in
                                       glob.glob(str(out / ".mineru-cli" / "staging" / "*" / "w" / "*" / "window_meta.json"))),
            }
        assert not (done_path.exists() and not held.exists()), "done-record written before the merge started"
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    assert seen_while_merging == {"done_record": False, "windows_done": [
        "000001-000050", "000051-000100", "000101-000150", "000151-000200", "000201-000250", "000251-000300"]}
    assert done_path.stat().st_mtime > held.stat().st_mtime

    doc = by_input(load_report(rep))["book300.pdf"]
    assert doc["status"] == "converted" and doc["pages"] == 300
    md, cl, middle, record = read_outputs(out / "book300.pdf", "book300")

    # content_list: page indices 0..299 in order, each page's text carries its own number
    idx = [item["page_idx"] for item in cl]
    assert idx == sorted(idx) and set(idx) == set(range(300))
    texts = pdf_page_texts(cl)
    for i in range(300):
        assert f"This is page {i + 1} of 300." in texts[i], f"page index {i}: {texts[i][:200]!r}"
    # markdown in page order, every page once
    assert [int(n) for n, _ in PAGE_RE.findall(md)] == list(range(1, 301))
    # middle_json: pages 0..299, the whole document
    assert [p["page_idx"] for p in middle["pages"]] == list(range(300))
    assert middle["is_full_document"] is True
    assert len(middle["extensions"]["docvortex_layout"]["pages"]) == 300
    # the merge concatenates the windows' renderings: equal to MinerU rendering the merged middle_json
    from mineru.render import render_content_list, render_markdown
    from mineru.types import MiddleJson

    assert md == render_markdown(MiddleJson.from_dict(middle))
    assert cl == render_content_list(MiddleJson.from_dict(middle))

    # the report and the done-record record the windows, each converted once, and one merge
    windows = [[1, 50], [51, 100], [101, 150], [151, 200], [201, 250], [251, 300]]
    assert record["windows"] == windows
    assert window_attempts(record["attempts"]) == {f"{a}-{b}": ["ok"] for a, b in windows}
    assert [a.get("task") for a in record["attempts"]].count("merge") == 1
    assert record["attempts"][-1]["task"] == "merge"
    assert window_attempts(doc["attempts"]) == window_attempts(record["attempts"])
    assert record["quality"]["pages"] == 300 and record["quality"]["no_text"] is False
    assert record["pages"] == 300
    # nothing of the windows is left in the output or in staging
    assert not (out / "book300.pdf" / "w").exists()
    assert not glob.glob(str(out / ".mineru-cli" / "staging" / "*" / "w"))
    assert sorted(r["name"] for r in record["files"]) == ["book300.md", "book300_content_list.json", "book300_middle.json"]


def test_windows_image_names_unique_and_links_resolve(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_pictures_pdf(src / "pics.pdf", 12)
    proc, report, out = convert(tmp_path, src, "--window-pages", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md, cl, middle, record = read_outputs(out / "pics.pdf", "pics")
    assert record["windows"] == [[1, 4], [5, 8], [9, 12]]
    links = IMG_LINK.findall(md)
    assert len(links) == 12 and len(set(links)) == 12
    assert all((out / "pics.pdf" / link).is_file() for link in links)
    assert sorted(os.listdir(out / "pics.pdf" / "images")) == sorted(os.path.basename(link) for link in links)
    images = [item for item in cl if item["type"] == "image"]
    assert [item["page_idx"] for item in images] == list(range(12))
    assert [int(n) for n, _ in PAGE_RE.findall(md)] == list(range(1, 13))


def test_windows_with_markdown_only(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_pictures_pdf(src / "pics.pdf", 6)
    proc, report, out = convert(tmp_path, src, "--window-pages", "2", "--format", "md")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((out / "pics.pdf" / DONE).read_text(encoding="utf-8"))
    assert [f["name"] for f in record["files"]] == ["pics.md"]
    md = (out / "pics.pdf" / "pics.md").read_text(encoding="utf-8")
    assert [int(n) for n, _ in PAGE_RE.findall(md)] == list(range(1, 7))
    assert record["quality"]["pages"] == 6 and record["quality"]["no_text"] is False


def test_failing_window_is_retried_alone(tmp_path):
    """The window of pages 21-40 is held past --timeout once: only that window is retried."""
    src = tmp_path / "in"
    src.mkdir()
    mk.write_text_pdf(src / "sixty.pdf", mk.numbered_pages(60))
    proc, report, out = convert(tmp_path, src, "--window-pages", "20", "--timeout", "20", "--retries", "1",
                                MINERU_CLI_TEST_HOLD="sixty", MINERU_CLI_TEST_HOLD_PAGES="21",
                                MINERU_CLI_TEST_HOLD_ONCE=str(tmp_path / "held-once"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = by_input(report)["sixty.pdf"]
    assert doc["status"] == "converted"
    assert window_attempts(doc["attempts"]) == {"1-20": ["ok"], "21-40": ["retrying", "ok"], "41-60": ["ok"]}
    retried = next(a for a in doc["attempts"] if a["status"] == "retrying")
    assert retried["code"] == "timeout"
    md, cl, _middle, record = read_outputs(out / "sixty.pdf", "sixty")
    assert [int(n) for n, _ in PAGE_RE.findall(md)] == list(range(1, 61))
    assert window_attempts(record["attempts"]) == window_attempts(doc["attempts"])


def test_failing_window_fails_the_document_naming_its_pages(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    mk.write_text_pdf(src / "sixty.pdf", mk.numbered_pages(60))
    proc, report, out = convert(tmp_path, src, "--window-pages", "20", "--timeout", "20", "--retries", "0",
                                MINERU_CLI_TEST_HOLD="sixty", MINERU_CLI_TEST_HOLD_PAGES="21")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = by_input(report)["sixty.pdf"]
    assert doc["status"] == "failed" and doc["code"] == "timeout"
    assert doc["reason"].startswith("pages 21-40: timeout"), doc["reason"]
    assert "pages 21-40" in proc.stdout
    statuses = window_attempts(doc["attempts"])
    assert statuses["21-40"] == ["failed"]
    # the other windows ran once each (they may finish before or after the failure is known)
    assert all(v == ["ok"] for k, v in statuses.items() if k != "21-40")
    assert not any(a.get("task") == "merge" for a in doc["attempts"])
    assert not (out / "sixty.pdf" / DONE).exists()


# --- --pages --------------------------------------------------------------------------------------

@pytest.mark.parametrize("window", ["100", "3"])
def test_pages_converts_exactly_those_pages(tmp_path, window):
    src = tmp_path / "in"
    src.mkdir()
    mk.write_text_pdf(src / "twelve.pdf", mk.numbered_pages(12))
    proc, report, out = convert(tmp_path, src, "--pages", "1-5,10", "--window-pages", window)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = by_input(report)["twelve.pdf"]
    assert doc["status"] == "converted" and doc["pages"] == 6
    md, cl, middle, record = read_outputs(out / "twelve.pdf", "twelve")
    assert sorted({item["page_idx"] for item in cl}) == [0, 1, 2, 3, 4, 9]
    assert [p["page_idx"] for p in middle["pages"]] == [0, 1, 2, 3, 4, 9]
    assert [int(n) for n, _ in PAGE_RE.findall(md)] == [1, 2, 3, 4, 5, 10]
    texts = pdf_page_texts(cl)
    assert all(f"This is page {i + 1} of 12." in texts[i] for i in (0, 1, 2, 3, 4, 9))
    assert record["settings"]["pages"] == "1-5,10"
    assert record["windows"] == ([] if window == "100" else [[1, 3], [4, 5], [10, 10]])
    assert middle["is_full_document"] is False


def test_pages_outside_the_document_fails_clearly(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    mk.write_text_pdf(src / "twelve.pdf", mk.numbered_pages(12))
    proc, report, _out = convert(tmp_path, src, "--pages", "20-30")
    assert proc.returncode == 1
    doc = by_input(report)["twelve.pdf"]
    assert doc["code"] == "bad_page_range" and "selects no page" in doc["reason"]


# --- quality ------------------------------------------------------------------------------------

GBK_LINES = ["关于红军作战的原则", "对国防问题的意见", "同各方接洽要有谦逊态度", "中日战争爆发后的形势与任务",
             "对独立自主的山地游击战争的解释", "南方游击区谈判改编时应坚持的方针", "关于敌情判断及八路军的战略部署"]
EUROPEAN = ["Bienvenue au café: crème brûlée, piñata cake and smørrebrød are served every day in Zürich.",
            "Größe, Straße, Äpfel, Öl, übermäßig; São Paulo: informações sobre a situação da nação.",
            "Þjóðin fæðist á Íslandi. Ég óska þér góðs gengis í framtíðinni."]
SCANS = {"mineru_small_ocr_scanned_zh.pdf", "docling_ocr_test_rotated_90.pdf"}  # image-only PDFs
GBK_PDF = "pdfjs_XiaoBiaoSong_gbk_no_tounicode.pdf"


@pytest.fixture(scope="module")
def quality_run(corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    gen = tmp / "generated"
    gen.mkdir()
    # GBK bytes shown through WinAnsi (Helvetica, no ToUnicode): Latin-1 mojibake in the text layer
    mk.write_text_pdf(gen / "gbk_as_winansi.pdf", [[line.encode("gb2312").decode("cp1252") for line in GBK_LINES]])
    mk.write_text_pdf(gen / "european.pdf", [["# Européen", *EUROPEAN]])
    inputs = [corpus / "pdf" / "normal", corpus / "images" / "unstructured_double_column_scan.jpg",
              corpus / "pdf" / "broken" / GBK_PDF, gen]
    proc, report, out = convert(tmp, inputs, timeout=900)
    return proc, by_input(report), out


def test_scans_are_flagged_no_text_with_ocr_hint(quality_run):
    proc, docs, _out = quality_run
    for name in (*SCANS, "unstructured_double_column_scan.jpg"):
        d = docs[name]
        assert d["status"] == "converted" and d["quality"]["no_text"] is True, name
        assert any("tier basic" in w and "OCR" in w for w in d["warnings"]), d["warnings"]
    assert docs["mineru_small_ocr_scanned_zh.pdf"]["quality"]["empty_pages"] == 8


def test_text_pdfs_are_not_flagged(quality_run, corpus):
    _proc, docs, _out = quality_run
    normal = [p.name for p in (corpus / "pdf" / "normal").iterdir() if p.suffix == ".pdf" and p.name not in SCANS]
    assert len(normal) >= 15
    for name in normal:
        q = docs[name]["quality"]
        assert docs[name]["status"] == "converted", name
        assert q["no_text"] is False and q["garbled_text"] is False, (name, q)
        assert q["garbled_score"] < 0.05, (name, q)
    assert docs["european.pdf"]["quality"]["garbled_text"] is False
    assert docs["european.pdf"]["quality"]["garbled_score"] == 0.0


def test_gbk_no_tounicode_pdf_decodes_to_chinese_and_is_not_flagged(quality_run):
    """The corpus's XiaoBiaoSong PDF: its fonts are named in GBK (宋体, 仿宋_GB2312), WinAnsi,
    no ToUnicode, and its strings are GBK bytes. A naive extractor (pypdf) gives Latin-1
    mojibake, but MinerU 4 (PDFium) takes the charset from the font name and extracts correct
    Chinese: flagging it garbled would be a false positive."""
    _proc, docs, out = quality_run
    d = docs[GBK_PDF]
    assert d["quality"]["garbled_text"] is False and d["quality"]["no_text"] is False
    md = (out / GBK_PDF / (GBK_PDF[:-4] + ".md")).read_text(encoding="utf-8")
    flat = re.sub(r"\s+", "", md)
    for title in ("关于红军作战的原则", "对国防问题的意见", "中日战争爆发后的形势与任务"):
        assert title in flat
    assert not any("\u0080" <= c <= "\u00ff" for c in md), "Latin-1 characters in the markdown"


def test_generated_mojibake_pdf_is_flagged_garbled(quality_run):
    _proc, docs, _out = quality_run
    d = docs["gbk_as_winansi.pdf"]
    assert d["quality"]["garbled_text"] is True and d["quality"]["garbled_score"] > 0.8, d["quality"]
    assert any(w.startswith("garbled_text") for w in d["warnings"])


# --- --on-empty and --retry-ocr --------------------------------------------------------------------

def test_on_empty_fail_fails_a_no_text_document(corpus, tmp_path):
    scan = corpus / "images" / "docling_qr_bill_scan.jpg"
    proc, report, out = convert(tmp_path, scan, "--on-empty", "fail")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    d = by_input(report)["docling_qr_bill_scan.jpg"]
    assert d["status"] == "failed" and d["code"] == "no_text"
    assert "tier basic" in d["reason"] and "--on-empty fail" in d["reason"]
    assert not (out / "docling_qr_bill_scan.jpg" / DONE).exists()


def test_on_empty_warn_converts_with_the_warning(corpus, tmp_path):
    scan = corpus / "images" / "docling_qr_bill_scan.jpg"
    proc, report, out = convert(tmp_path, scan, "--on-empty", "warn")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = by_input(report)["docling_qr_bill_scan.jpg"]
    assert d["status"] == "converted" and d["quality"]["no_text"] is True
    assert any(w.startswith("no_text") for w in d["warnings"])
    assert "no_text" in proc.stdout
    record = json.loads((out / "docling_qr_bill_scan.jpg" / DONE).read_text(encoding="utf-8"))
    assert record["quality"]["no_text"] is True


def test_retry_ocr_without_weights_says_what_is_needed(corpus, tmp_path):
    """No OCR models here: --retry-ocr warns once that it needs tier basic, names the download
    command, keeps the flagged result and records why it was not retried."""
    scan = corpus / "images" / "docling_qr_bill_scan.jpg"
    text_pdf = EXAMPLES / "report.pdf"
    proc, report, out = convert(tmp_path, [scan, text_pdf], "--retry-ocr",
                                MINERU_MODEL_BASE_DIR=str(tmp_path / "no-models"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("--retry-ocr needs tier basic") == 1, proc.stderr
    assert "mineru-kit models download --tier basic" in proc.stderr
    docs = by_input(report)
    d = docs["docling_qr_bill_scan.jpg"]
    assert d["status"] == "converted" and d["tier"] == "flash"
    assert d["quality"]["ocr_retry"]["done"] is False
    assert "needs tier basic" in d["quality"]["ocr_retry"]["reason"]
    assert any("--retry-ocr needs tier basic" in w for w in d["warnings"])
    assert not any(a.get("code") == "retry_ocr" for a in d["attempts"])
    assert "ocr_retry" not in docs["report.pdf"]["quality"]  # not flagged: nothing to retry
    record = json.loads((out / "docling_qr_bill_scan.jpg" / DONE).read_text(encoding="utf-8"))
    assert record["quality"]["ocr_retry"]["done"] is False and record["ocr_mode"] == "txt"


# --- the 20,000-page PDF --------------------------------------------------------------------------

class TreeSampler(threading.Thread):
    """Samples, every ``interval`` s, the resident memory of each child of ``pid`` together
    with its descendants (a worker and MinerU's render processes) and keeps the largest."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        from mineru_cli.pool import children_tree_rss

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.wait(self.interval):
            try:
                largest = max(children_tree_rss(root).values(), default=0)
            except psutil.Error:
                return
            self.peak = max(self.peak, largest)


def run_sampled(tmp: Path, *args: str, timeout: float) -> tuple[int, dict, int, float]:
    """Run convert with a tree sampler; returns (exit code, report, sampled peak, seconds)."""
    rep = tmp / "report.json"
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "mineru_cli", "convert", *args, "--report", str(rep)],
                            env=cli_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        sampler.stop.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    return proc.returncode, load_report(rep), sampler.peak, time.time() - started


@pytest.mark.slow
@pytest.mark.corpus
def test_20000_pages_in_windows_memory_bounded(corpus, tmp_path):
    """The 20,000-page PDF in 100-page windows: pages in order, and a worker's peak memory
    bounded by the window, not the document.

    The bound is measured, not guessed: a worker converting one 50-page and one 100-page
    piece of the same file gives its memory as base + slope x pages (about 140 MB + 2 MB per
    page on this file). A windowed run may use what one 100-page window needs, plus a margin
    for sampling and allocator noise (25 %, at least 64 MB); the same pages in one piece
    would need base + slope x pages (4 GB for 2,000 pages, 40 GB for 20,000)."""
    pdf = corpus / "pdf" / "broken" / "derived_20000_pages_200KB.pdf"
    full = os.environ.get("MINERU_CLI_TEST_FULL_20000") == "1"
    first, last = (1, 20000) if full else (18001, 20000)
    n = last - first + 1
    limit = ["--max-worker-memory", "3GB", "--max-pages", "0"]

    peaks = {}
    for pages in (50, 100):  # calibration: one piece each, one worker
        sub = tmp_path / f"cal{pages}"
        sub.mkdir()
        _code, report, sampled, _s = run_sampled(sub, str(pdf), "-o", str(sub / "out"), "--pages", f"1-{pages}",
                                                 "--window-pages", "100", "--workers", "1", *limit, timeout=300)
        assert report["documents"][0]["status"] == "converted"
        peaks[pages] = max(report["summary"]["peak_worker_rss"], sampled)
    slope = max(0, (peaks[100] - peaks[50]) / 50)
    bound = peaks[100] + max(64 << 20, peaks[100] // 4)
    unwindowed_estimate = peaks[100] + slope * (n - 100)

    out = tmp_path / "out"
    _code, report, sampled, seconds = run_sampled(
        tmp_path, str(pdf), "-o", str(out), "--pages", f"{first}-{last}", "--window-pages", "100",
        "--workers", "2", *limit, timeout=3600 if full else 900)
    doc = report["documents"][0]
    assert doc["status"] == "converted" and doc["pages"] == n
    reported = report["summary"]["peak_worker_rss"]
    print(f"\n{n} pages in {seconds:.0f} s; peak worker RSS: reported {reported / 1e6:.0f} MB, "
          f"sampled {sampled / 1e6:.0f} MB; one 50-page piece {peaks[50] / 1e6:.0f} MB, one 100-page piece "
          f"{peaks[100] / 1e6:.0f} MB; bound {bound / 1e6:.0f} MB; unwindowed estimate {unwindowed_estimate / 1e9:.1f} GB")
    assert reported <= bound and sampled <= bound
    assert unwindowed_estimate > 3 * max(reported, sampled)

    stem = "derived_20000_pages_200KB"
    folder = out / pdf.name
    cl = json.loads((folder / f"{stem}_content_list.json").read_text(encoding="utf-8"))
    idx = [item["page_idx"] for item in cl]
    assert idx == sorted(idx) and set(idx) == set(range(first - 1, last))
    md = (folder / f"{stem}.md").read_text(encoding="utf-8")
    assert md.count("Heres to the crazy ones.") == n  # the page's first line, once per page
    record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    assert len(record["windows"]) == n // 100
    assert record["windows"][0] == [first, first + 99] and record["windows"][-1] == [last - 99, last]
    assert len(window_attempts(record["attempts"])) == n // 100


# --- unit: the quality score ----------------------------------------------------------------------

CORRECT_TEXTS = {
    "zh": "关于红军作战的原则。对国防问题的意见，同各方接洽要有谦逊态度……中日战争爆发后的形势与任务：“独立自主”",
    "ja": "日本国民は、正当に選挙された国会における代表者を通じて行動し、われらとわれらの子孫のために",
    "ko": "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.",
    "fr": EUROPEAN[0] + " À la française, où êtes-vous? Ça a été une journée très agréable.",
    "de": "Größe, Straße, Äpfel, Öl, Übermäßig, Fußgängerübergänge, Grüße aus München.",
    "pt": "As informações sobre a situação da nação: ação, educação, população. INFORMAÇÕES E OBSERVAÇÕES.",
    "is": EUROPEAN[2] + " Hæstiréttur úrskurðaði í málinu.",
    "cs": "Příliš žluťoučký kůň úpěl ďábelské ódy. Šéfové výrobců žádají úředníky o účinné řízení.",
    "pl": "Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
    "vi": "Tiếng Việt là ngôn ngữ chính thức của Việt Nam. Chúng tôi đã học ở trường đại học.",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "ar": "تحسين الإنتاجية وحل المشكلات من خلال البرمجة",
}


@pytest.mark.parametrize("lang", sorted(CORRECT_TEXTS))
def test_garbled_score_correct_text_is_not_flagged(lang):
    from mineru_cli.quality import assess

    text = CORRECT_TEXTS[lang]
    q = assess({"pages": []}, text)
    assert q["garbled_text"] is False and q["garbled_score"] < 0.1, (lang, q)


@pytest.mark.parametrize("lang,encoding", [("zh", "gb2312"), ("zh", "gbk"), ("zh", "utf-8"), ("ko", "euc_kr"),
                                           ("ko", "utf-8"), ("ja", "euc_jp"), ("ja", "utf-8")])
@pytest.mark.parametrize("shown_as", ["cp1252", "latin-1"])
def test_garbled_score_flags_mojibake(lang, encoding, shown_as):
    from mineru_cli.quality import assess

    moji = CORRECT_TEXTS[lang].encode(encoding).decode(shown_as, errors="replace")
    q = assess({"pages": []}, moji)
    assert q["garbled_text"] is True and q["garbled_score"] > 0.6, (lang, encoding, shown_as, moji[:40], q)


def test_garbled_score_counts_replacement_characters_and_ignores_image_links():
    from mineru_cli.quality import assess

    assert assess({"pages": []}, "\ufffd" * 30 + "abc")["garbled_text"] is True
    few = assess({"pages": []}, CORRECT_TEXTS["zh"] * 3 + "\ufffd\ufffd")
    assert few["garbled_text"] is False
    q = assess({"pages": [{"page_idx": 0, "blocks": []}]}, "![](images/page_0_image_0.jpg)")
    assert q["no_text"] is True and q["empty_pages"] == 1 and q["text_chars"] == 0


def test_quality_of_windows_combines_exactly():
    from mineru_cli.quality import assess, combine

    good = CORRECT_TEXTS["fr"]
    bad = CORRECT_TEXTS["zh"].encode("gbk").decode("cp1252")
    page = {"page_idx": 0, "blocks": [{"type": "text", "content": [{"type": "text", "content": "x"}]}]}
    parts = [assess({"pages": [page]}, good), assess({"pages": [page, {"blocks": []}]}, bad)]
    whole = assess({"pages": [page, page, {"blocks": []}]}, good + bad)
    assert combine(parts) == whole
    assert combine([assess({"pages": [{"blocks": []}]}, "")])["no_text"] is True


# --- unit: --retry-ocr decisions ------------------------------------------------------------------

class FakeTierModels:
    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.download_command = "mineru-kit models download --tier basic"

    def missing_names(self) -> list[str]:
        return [] if self.ready else ["MinerU-4_models_onnx"]


def test_ocr_retry_tier_with_injected_probe():
    from mineru_cli.ocr_retry import ocr_retry_tier

    asked = []

    def probe(tier):
        asked.append(tier)
        return FakeTierModels(ready=True)

    assert ocr_retry_tier("flash", probe=probe) == ("basic", "tier basic models are present")
    assert asked == ["basic"]
    tier, why = ocr_retry_tier("flash", probe=lambda t: FakeTierModels(ready=False))
    assert tier is None and "needs tier basic" in why and "MinerU-4_models_onnx" in why
    assert "mineru-kit models download --tier basic" in why

    def broken(tier):
        raise RuntimeError("registry unreadable")

    tier, why = ocr_retry_tier("flash", probe=broken)
    assert tier is None and "registry unreadable" in why
    asked.clear()
    assert ocr_retry_tier("standard", probe=probe)[0] == "standard" and asked == []  # has OCR: no probe


def test_ocr_retry_decision():
    from mineru_cli.ocr_retry import ocr_retry_decision

    no_text, garbled, fine = {"no_text": True}, {"garbled_text": True}, {"no_text": False, "garbled_text": False}
    kw = dict(ocr_tier="basic", why_not="")
    assert ocr_retry_decision("pdf", no_text, retry_ocr=False, ocr_mode="txt", **kw) == (False, "")
    assert ocr_retry_decision("pdf", fine, retry_ocr=True, ocr_mode="txt", **kw) == (False, "")
    retry, why = ocr_retry_decision("pdf", no_text, retry_ocr=True, ocr_mode="txt", **kw)
    assert retry and "tier basic" in why and "ocr_mode=ocr" in why
    assert ocr_retry_decision("jpg", garbled, retry_ocr=True, ocr_mode="auto", **kw)[0] is True
    assert ocr_retry_decision("pdf", no_text, retry_ocr=True, ocr_mode="ocr", **kw)[0] is False  # once only
    assert ocr_retry_decision("docx", no_text, retry_ocr=True, ocr_mode="txt", **kw) == \
        (False, "--retry-ocr: OCR does not apply to docx files")
    assert ocr_retry_decision("pdf", no_text, retry_ocr=True, ocr_mode="txt", ocr_tier=None,
                              why_not="needs tier basic") == (False, "needs tier basic")


def test_retry_ocr_reconverts_flagged_document_and_records_both_attempts(tmp_path):
    """With an OCR tier available (injected), a flagged document is resubmitted at that tier
    with ocr_mode="ocr"; the second result is committed with the first one in its record."""
    from mineru_cli import outcomes as cv
    from mineru_cli import tasks
    from mineru_cli.sniff import SourceDocument
    from mineru_cli.plan import PlannedDocument, settings_key
    from mineru_cli.report import DocumentReport, Reporter
    from mineru_cli.settings import Settings
    from mineru_cli.store import open_output

    pdf = tmp_path / "scan.pdf"
    mk.write_text_pdf(pdf, mk.numbered_pages(1))
    s = Settings(inputs=[str(pdf)], output=str(tmp_path / "out"), retry_ocr=True)
    out = open_output(s.output)
    source = SourceDocument(uri=str(pdf), rel="scan.pdf", size=pdf.stat().st_size, mtime=pdf.stat().st_mtime,
                            kind="pdf")
    p = PlannedDocument(source=source, key="scan.pdf", stem="scan", tier="flash", ocr_mode="txt", pages=1)
    p.settings_key = settings_key(s, "flash", "txt")
    rep = Reporter(quiet=True)
    st = cv.DocState(planned=p, report=rep.add(DocumentReport(input="scan.pdf")), ocr_tier="basic")
    resubmitted, committed = [], []

    flagged = {"ok": True, "pages": 1, "seconds": 1.0, "quality": {"no_text": True, "garbled_text": False,
                                                                    "empty_pages": 1, "pages": 1}}
    cv._finish_conversion(st, flagged, s, out, rep, lambda st, rec: committed.append(rec), "4.0.12",
                          resubmit=lambda st: resubmitted.append(tasks.task_base(st, s, out, str(tmp_path))))
    assert committed == [] and len(resubmitted) == 1
    assert resubmitted[0]["tier"] == "basic" and resubmitted[0]["ocr_mode"] == "ocr"

    (Path(out.staging_root) / p.id).mkdir(parents=True, exist_ok=True)
    ocr_result = {"ok": True, "pages": 1, "seconds": 5.0, "quality": {"no_text": False, "garbled_text": False,
                                                                       "empty_pages": 0, "pages": 1}}
    cv._finish_conversion(st, ocr_result, s, out, rep, lambda st, rec: committed.append(rec), "4.0.12",
                          resubmit=lambda st: resubmitted.append(st))
    assert len(resubmitted) == 1 and len(committed) == 1  # retried once, then committed
    record = committed[0]
    assert record["tier"] == "basic" and record["ocr_mode"] == "ocr"
    assert record["settings"] == settings_key(s, "flash", "txt")  # the request, so a rerun skips it
    retry = record["quality"]["ocr_retry"]
    assert retry["done"] is True and retry["first"]["tier"] == "flash" and retry["first"]["ocr_mode"] == "txt"
    assert retry["first"]["quality"]["no_text"] is True and record["quality"]["no_text"] is False
    assert any(a.get("code") == "retry_ocr" for a in record["attempts"])
