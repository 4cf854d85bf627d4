"""Issue 18: the HTML run report (checked in a real headless Chromium), the formats rendered by
mineru.render with the render-only rerun, and the ``report`` command with its exit codes.

Real runs throughout: MinerU converts in worker processes (Office/HTML/CSV and text PDFs at
tier flash need no model weights); a picture with no text is flagged ``no_text`` at flash,
a PDF whose body is garbage fails as ``corrupt``.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from urllib.parse import unquote

import pytest

from conftest import EXAMPLES, by_input, cli_env, load_report, run_cli

DONE = ".mineru-cli.done.json"
SECRET = "S3cr3tValue9rq"
CORRUPT_REASON = "Data format error"
HOSTILE = "<img src=x onerror=alert(1)>.html"
AMP_QUOTE = 'a&b "q".csv'
HASH_PCT = "hash#frag 100%.csv"
N_CONVERTED, N_TOTAL = 9, 10


def _picture_without_text(path: Path) -> None:
    """A PNG of coloured bands and no text: at tier flash MinerU gives no text (``no_text``)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(img)
    for i, colour in enumerate(("#4477aa", "#66ccee", "#228833", "#ccbb44")):
        draw.rectangle([40 + i * 140, 60, 150 + i * 140, 420], fill=colour)
    img.save(path)


def _mixed_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("report.pdf", "memo.docx", "data.csv", "page.html"):
        shutil.copy(EXAMPLES / name, folder / name)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage that is no PDF\n")
    _picture_without_text(folder / "bands.png")
    # a secret in a document's name: it would reach the report and the HTML if not redacted
    shutil.copy(EXAMPLES / "data.csv", folder / f"notes-{SECRET}.csv")
    # names that are markup, or need escaping in HTML or in a URL
    shutil.copy(EXAMPLES / "page.html", folder / HOSTILE)
    shutil.copy(EXAMPLES / "data.csv", folder / AMP_QUOTE)
    shutil.copy(EXAMPLES / "data.csv", folder / HASH_PCT)
    return folder


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """One real convert run over a mixed folder: 9 documents convert (three with names that
    are markup or need escaping), broken.pdf fails (corrupt), bands.png is flagged no_text; the
    secret is a storage option."""
    tmp = tmp_path_factory.mktemp("mixed")
    src = _mixed_folder(tmp / "in")
    out, rep, html = tmp / "out", tmp / "run.json", tmp / "report.html"
    counter = tmp / "conversions.log"
    proc = run_cli("convert", str(src), "-o", str(out), "--report", str(rep), "--html-report", str(html),
                   "--storage-option", f"password={SECRET}", "--workers", "2",
                   env=cli_env(tmp, MINERU_CLI_TEST_CONVERSIONS=str(counter)), timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # broken.pdf failed
    return {"tmp": tmp, "proc": proc, "out": out, "report": rep, "html": html, "counter": counter}


def test_mixed_run_report_has_the_counts_failure_and_flag(mixed_run):
    report = load_report(mixed_run["report"])
    s = report["summary"]
    assert (s["converted"], s["skipped"], s["failed"], s["flagged"], s["total"]) == (N_CONVERTED, 0, 1, 1, N_TOTAL)
    assert s["interrupted"] is None and s["dry_run"] is False
    docs = by_input(report)
    assert docs["broken.pdf"]["code"] == "corrupt" and CORRUPT_REASON in docs["broken.pdf"]["reason"]
    assert docs["bands.png"]["quality"]["no_text"] is True
    # the report's new timing keys: each converted document ran on a worker between started and ended
    for name, d in docs.items():
        if d["status"] == "converted":
            assert d["started"] <= d["ended"] and d["worker"] > 0 and d["type"], (name, d)
            assert all({"started", "ended", "worker"} <= set(a) for a in d["attempts"])
    assert s["decision"]["backend"] == "cpu" and s["decision"]["tier"] == "flash" and s["decision"]["tier_reason"]
    assert len(mixed_run["counter"].read_text().splitlines()) == N_CONVERTED  # the test hook counts real conversions


def test_html_report_content_and_no_secret(mixed_run):
    html = mixed_run["html"].read_text(encoding="utf-8")
    assert SECRET not in html and SECRET not in mixed_run["report"].read_text(encoding="utf-8")
    assert "notes-***.csv" in html
    assert f'id="n-converted">{N_CONVERTED}<' in html and 'id="n-failed">1<' in html and 'id="n-flagged">1<' in html
    # names are escaped (autoescape): the markup in a name is text, never an element
    assert "<td>&lt;img src=x onerror=alert(1)&gt;.html</td>" in html and "<img" not in html
    assert "<td>a&amp;b &#34;q&#34;.csv</td>" in html
    assert '<span id="shown" class="muted"></span>' in html  # only the script fills it in
    assert "corrupt" in html and CORRUPT_REASON in html and "no_text" in html
    assert "<svg" in html and "<rect" in html  # the time chart, inline
    # nothing external: no http(s) or protocol-relative src/href, no <link> or external script
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I), "external resource in the HTML"
    assert "<link" not in html.lower() and "<script src" not in html.lower()
    # output links are relative, URL-encoded, and point at the result folders (OUTPUT is local)
    links = re.findall(r'<a href="([^"]+)"', html)
    assert "out/report.pdf/" in links and "out/hash%23frag%20100%25.csv/" in links
    assert "out/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.html/" in links
    assert "out/a%26b%20%22q%22.csv/" in links
    assert len(links) == N_CONVERTED - 1  # the name holding the secret has none: it was redacted
    for link in links:
        assert "***" not in link and "#" not in link and " " not in link, link
        assert not link.startswith(("/", "file:")) and (mixed_run["html"].parent / unquote(link)).is_dir(), link
    row = next(r for r in html.split("<tr ") if "notes-***.csv" in r and "data-status" in r)
    assert "<a " not in row and "name hidden: holds a secret" in row


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser_flags(tmp: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-proxy-server",
            "--disable-background-networking", f"--user-data-dir={tmp / 'chromium-profile'}"]


def _dump_dom(html: Path, tmp: Path, fragment: str = "") -> str:
    """The DOM headless Chromium built for the file ``html`` (its scripts run), opened with
    ``#fragment``; skips the test without Chromium."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (chromium, chromium-browser, google-chrome): apt-get install chromium")
    url = html.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    dom = subprocess.run([browser, *_browser_flags(tmp), "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


ROW = re.compile(r'<tr data-status="(\w+)" data-flagged="[^"]*"( style="display: none;")?>\s*<td>(.*?)</td>'
                 r'.*?<td class="num" data-v="[^"]*">.*?<td class="num" data-v="([^"]*)">', re.S)


def _rows(dom: str) -> list[tuple[str, bool, str, float]]:
    """The document table's rows in the dumped DOM, in order: (status, shown, input, seconds)."""
    body = dom[dom.index('<table id="documents">'):]
    return [(st, not hidden, name, float(sec)) for st, hidden, name, sec in ROW.findall(body)]


def test_html_report_in_headless_chromium(mixed_run):
    """Chromium opens the file (file:// only), the screenshot is taken, and the DOM Chromium
    built holds the counts and the failure's reason; the script ran (it fills in the row count)
    and the hostile names are text, not elements."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (chromium, chromium-browser, google-chrome): apt-get install chromium")
    html, tmp = mixed_run["html"], mixed_run["tmp"]
    shot = tmp / "report.png"
    flags = _browser_flags(tmp)
    url = html.resolve().as_uri()
    proc = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1400,1000", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000, "screenshot missing or blank"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert f'<b id="n-converted">{N_CONVERTED}</b>' in text and '<b id="n-failed">1</b>' in text
    assert '<b id="n-flagged">1</b>' in text
    assert "broken.pdf" in text and CORRUPT_REASON in text
    # the table's script ran: it fills in the count of the rows it shows (empty in the file)
    assert f'<span id="shown" class="muted">{N_TOTAL} of {N_TOTAL} documents</span>' in text
    assert SECRET not in text
    # the hostile names are text in the DOM Chromium built, never an <img> element
    assert "<img" not in text and "<td>&lt;img src=x onerror=alert(1)&gt;.html</td>" in text
    assert '<td>a&amp;b "q".csv</td>' in text
    rows = _rows(text)
    assert len(rows) == N_TOTAL and all(shown for _st, shown, _n, _s in rows)


def test_html_report_filters_and_sorts_from_the_fragment(mixed_run):
    """The page's script reads the URL fragment on load: ``#status=failed`` shows only the
    failed row, ``#sort=seconds&dir=desc`` orders the rows slowest first, ``#q=`` filters by text."""
    html, tmp = mixed_run["html"], mixed_run["tmp"]
    rows = _rows(_dump_dom(html, tmp, "status=failed"))
    assert [(st, name) for st, shown, name, _s in rows if shown] == [("failed", "broken.pdf")]
    assert len(rows) == N_TOTAL
    dom = _dump_dom(html, tmp, "status=failed")
    assert f"1 of {N_TOTAL} documents" in dom

    rows = _rows(_dump_dom(html, tmp, "sort=seconds&dir=desc"))
    seconds = [sec for _st, _shown, _n, sec in rows]
    assert seconds == sorted(seconds, reverse=True) and seconds[0] > seconds[-1]
    docs = load_report(mixed_run["report"])["documents"]
    assert rows[0][2] == max(docs, key=lambda d: d["seconds"])["input"]
    rows = _rows(_dump_dom(html, tmp, "sort=seconds&dir=asc"))
    assert [sec for _st, _shown, _n, sec in rows] == sorted(seconds)

    rows = _rows(_dump_dom(html, tmp, "q=hash%23frag"))
    assert [name for _st, shown, name, _s in rows if shown] == [HASH_PCT]


def test_render_only_rerun_for_new_formats(tmp_path):
    """A finished result with its middle JSON gets html and docx by rendering, no conversion
    (counted through the engine's test hook); the done-record, written last, lists old and new
    files; --dry-run says so; without the middle JSON the document is converted again."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("report.pdf", "memo.docx", "data.csv"):
        shutil.copy(EXAMPLES / name, src / name)
    out, counter = tmp_path / "out", tmp_path / "conversions.log"
    env = cli_env(tmp_path, MINERU_CLI_TEST_CONVERSIONS=str(counter))
    proc = run_cli("convert", str(src), "-o", str(out), "--format", "md,middle,images", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(counter.read_text().splitlines()) == 3
    md_before = (out / "report.pdf" / "report.md").stat()
    counter.unlink()

    proc = run_cli("convert", str(src), "-o", str(out), "--format", "md,middle,images,html,docx", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("would render") == 3 and "render only: html, docx from middle JSON" in proc.stdout
    assert "0 to convert" in proc.stdout and "3 to render from middle JSON" in proc.stdout
    assert not (out / "report.pdf" / "report.html").exists()

    rep = tmp_path / "rerun.json"
    proc = run_cli("convert", str(src), "-o", str(out), "--format", "md,middle,images,html,docx",
                   "--report", str(rep), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not counter.exists(), f"converted again: {counter.read_text()}"
    docs = by_input(load_report(rep))
    assert {n: (d["status"], d["rendered"]) for n, d in docs.items()} == {
        n: ("converted", ["html", "docx"]) for n in ("report.pdf", "memo.docx", "data.csv")}
    assert load_report(rep)["summary"]["rendered"] == 3
    # rendering is not converting: those pages are left out of pages/s
    proc = run_cli("report", str(rep), "--json")
    totals = json.loads(proc.stdout)["totals"]
    assert (totals["rendered"], totals["converted_pages"], totals["pages_per_second"]) == (3, 0, None)
    assert "rendered 3: new formats from the middle JSON" in run_cli("report", str(rep)).stdout
    folder = out / "report.pdf"
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "North" in html and html.lstrip().lower().startswith("<!doctype html")
    assert (folder / "report.docx").read_bytes()[:2] == b"PK"
    assert (folder / "report.md").stat().st_ino == md_before.st_ino  # the converted files stayed
    record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    names = {f["name"] for f in record["files"]}
    assert {"report.md", "report_middle.json", "report.html", "report.docx"} <= names
    assert any(n.startswith("images/") for n in names)
    assert record["settings"]["formats"] == sorted(["md", "middle", "images", "html", "docx"])
    assert record["rendered"]["formats"] == ["html", "docx"]

    # the same formats again: finished, nothing done
    proc = run_cli("convert", str(src), "-o", str(out), "--format", "md,middle,images,html,docx", env=env)
    assert proc.returncode == 0 and "3 skipped" in proc.stdout, proc.stdout
    assert not counter.exists()

    # a damaged middle JSON (same size, so the result looks complete): render_error naming the
    # file and --force, the other documents rendered; --force converts it again
    middle = out / "data.csv" / "data_middle.json"
    middle.write_bytes(b"{" + b"x" * (middle.stat().st_size - 1))
    bad = tmp_path / "bad.json"
    proc = run_cli("convert", str(src), "-o", str(out), "--format", "md,middle,images,html,docx,latex",
                   "--report", str(bad), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    docs = by_input(load_report(bad))
    assert docs["data.csv"]["status"] == "failed" and docs["data.csv"]["code"] == "render_error"
    assert "data_middle.json" in docs["data.csv"]["reason"] and "--force" in docs["data.csv"]["reason"]
    assert "damaged" in docs["data.csv"]["reason"] and len(docs["data.csv"]["attempts"]) == 1
    assert {n: d["rendered"] for n, d in docs.items() if n != "data.csv"} == {
        "report.pdf": ["latex"], "memo.docx": ["latex"]}
    assert not counter.exists()
    proc = run_cli("convert", str(src), "-o", str(out), "--format", "md,middle,images,html,docx,latex",
                   "--include", "data.csv", "--force", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(counter.read_text().splitlines()) == 1 and json.loads(middle.read_text(encoding="utf-8"))
    counter.unlink()

    # no middle JSON in the finished result: a new format converts the document again
    out2 = tmp_path / "out2"
    assert run_cli("convert", str(src / "data.csv"), "-o", str(out2), "--format", "md", env=env).returncode == 0
    counter.unlink()
    proc = run_cli("convert", str(src / "data.csv"), "-o", str(out2), "--format", "md,latex", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(counter.read_text().splitlines()) == 1
    tex = (out2 / "data.csv" / "data.tex").read_text(encoding="utf-8")
    assert "\\documentclass" in tex and "Madrid" in tex and tex.rstrip().endswith("\\end{document}")


def test_new_formats_in_a_first_run_and_from_page_windows(tmp_path):
    """All four rendered formats in a plain conversion, and docx/html from a PDF converted in
    page windows (rendered after the merge; its images are used for the DOCX and not kept)."""
    out = tmp_path / "out"
    proc = run_cli("convert", str(EXAMPLES / "memo.docx"), "-o", str(out),
                   "--format", "md,html,latex,docx,content_list_v2", env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # html without images: its pictures would link a folder that is not written; said once
    warning = ("warning: --format html without images: the HTML pages link their pictures from images/, "
               "which is not written; add images to --format to keep them")
    assert proc.stderr.count(warning) == 1, proc.stderr
    folder = out / "memo.docx"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["memo.md", "memo.html", "memo.tex", "memo.docx", "memo_content_list_v2.json", DONE])
    v2 = json.loads((folder / "memo_content_list_v2.json").read_text(encoding="utf-8"))
    assert isinstance(v2, list) and len(v2) == 1 and v2[0]  # one page of blocks

    out = tmp_path / "win"
    proc = run_cli("convert", str(EXAMPLES / "report.pdf"), "-o", str(out), "--format", "md,html,docx",
                   "--window-pages", "1", env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = out / "report.pdf"
    record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    assert record["windows"] == [[1, 1], [2, 2]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(["report.md", "report.html", "report.docx", DONE])
    assert "North" in (folder / "report.html").read_text(encoding="utf-8")


def test_report_command_terminal_json_html_and_exit_codes(mixed_run, tmp_path):
    rep = mixed_run["report"]
    proc = run_cli("report", str(rep))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the run had a failure
    assert "failures by code" in proc.stdout and "corrupt" in proc.stdout and "broken.pdf" in proc.stdout
    assert "slowest" in proc.stdout and SECRET not in proc.stdout

    proc = run_cli("report", str(rep), "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["totals"]["converted"] == N_CONVERTED and data["totals"]["failed"] == 1 and data["totals"]["flagged"] == 1
    assert [(g["code"], g["count"]) for g in data["failures"]] == [("corrupt", 1)]
    assert data["failures"][0]["documents"][0]["input"] == "broken.pdf"
    assert ("no_text", 1) in [(g["code"], g["count"]) for g in data["flags"]]
    assert len(data["slowest"]) == N_CONVERTED and data["slowest"][0]["seconds"] >= data["slowest"][-1]["seconds"]

    # a run without failures: exit 0 (a rerun: everything done, broken.pdf left out)
    rerun = tmp_path / "rerun.json"
    proc = run_cli("convert", str(mixed_run["tmp"] / "in"), "-o", str(mixed_run["out"]), "--exclude", "broken.pdf",
                   "--storage-option", f"password={SECRET}", "--report", str(rerun), env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("report", str(rerun), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["totals"]["skipped"] == N_CONVERTED

    # several runs compared, drawn as HTML later
    cmp_html = tmp_path / "cmp.html"
    proc = run_cli("report", str(rep), str(rerun), "-o", str(cmp_html), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the last run decides
    changed = {c["input"]: (c["change"], c["statuses"]) for c in json.loads(proc.stdout)["compare"]["changed"]}
    # converted then skipped (done) is the normal rerun: no change; broken.pdf was left out
    assert changed == {"broken.pdf": ("gone", ["failed (corrupt)", None])}
    page = cmp_html.read_text(encoding="utf-8")
    assert "Runs compared" in page and "failed (corrupt)" in page and SECRET not in page

    # usage errors: exit 2, one line naming the file and the reason
    missing = tmp_path / "missing.json"
    proc = run_cli("report", str(missing))
    assert proc.returncode == 2 and proc.stderr.strip() == f"mineru-cli: error: report {missing}: not found"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = run_cli("report", str(bad))
    assert proc.returncode == 2 and f"report {bad}: not valid JSON" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    proc = run_cli("report", str(other))
    assert proc.returncode == 2 and "not a mineru-cli report" in proc.stderr


def test_report_command_refuses_malformed_reports_in_one_line(tmp_path):
    """Reports of the wrong shape, and paths that are rich markup: one line, exit 2, no traceback."""
    cases = {
        "docs.json": ('{"summary": {}, "documents": [1, "x", {"status": "failed"}]}', "documents[0] is 1, not an object"),
        "secs.json": ('{"summary": {"seconds": "n/a"}, "documents": []}', 'summary.seconds is "n/a", not a number'),
        "pages.json": ('{"summary": {}, "documents": [{"input": "a.pdf", "pages": "2"}]}',
                       'documents[0].pages is "2", not a number'),
        "att.json": ('{"summary": {}, "documents": [{"input": "a.pdf", "attempts": [3]}]}',
                     "documents[0].attempts holds something that is not an object"),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        for extra in ([], ["--json"]):
            proc = run_cli("report", str(path), *extra)
            assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
            assert proc.stderr.strip() == f"mineru-cli: error: report {path}: not a mineru-cli report: {reason}", \
                proc.stderr
    # paths holding rich markup are printed as they are
    good = '{"summary": {"seconds": 1.5}, "documents": [{"input": "[bold]x[/bold].pdf", "status": "converted", ' \
           '"pages": 1, "seconds": 1.0, "attempts": [{"attempt": 1, "status": "converted"}]}]}'
    (tmp_path / "a[").mkdir()
    odd = tmp_path / "a[" / "b]" / "run.json"
    odd.parent.mkdir()
    odd.write_text(good)
    closing = tmp_path / "a[" / "[red]y.json"
    closing.write_text(good)
    for path in (odd, closing):  # .../a[/b]/run.json was a MarkupError; [red]y.json lost its [red]
        proc = run_cli("report", str(path), cwd=tmp_path / "a[")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "[bold]x[/bold].pdf" in proc.stdout
    proc = run_cli("report", "b]/run.json", cwd=tmp_path / "a[")
    assert "run b]/run.json" in proc.stdout, proc.stdout
    proc = run_cli("report", "[red]y.json", "b]/run.json", cwd=tmp_path / "a[")
    assert proc.returncode == 0 and "run [red]y.json" not in proc.stdout and "[red]y.json" in proc.stdout


def test_html_output_that_is_a_json_report_is_refused(mixed_run, tmp_path):
    rep = tmp_path / "run.json"
    rep.write_bytes(mixed_run["report"].read_bytes())
    before = rep.read_bytes()
    proc = run_cli("report", str(rep), "-o", str(rep))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"mineru-cli: error: -o {rep}: is the JSON report {rep}; writing the HTML there would overwrite it "
        "(give another file)"), proc.stderr
    link = tmp_path / "link.json"
    link.symlink_to(rep)
    assert run_cli("report", str(mixed_run["report"]), str(rep), "-o", str(link)).returncode == 2
    assert rep.read_bytes() == before
    out = tmp_path / "out"
    proc = run_cli("convert", str(EXAMPLES / "data.csv"), "-o", str(out), "--report", str(tmp_path / "same.json"),
                   "--html-report", str(tmp_path / "." / "same.json"), env=cli_env(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--html-report" in proc.stderr and "would overwrite it" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "same.json").exists()


def test_dry_run_report(tmp_path):
    """A dry run's report says so (summary.dry_run), counts its documents to convert (status
    pending) in their own card and filter, links none of them, and ``report`` exits 0 as the
    dry run did, though a document would fail."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "data.csv", src / "data.csv")
    (src / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage that is no PDF\n")
    rep, html = tmp_path / "dry.json", tmp_path / "dry.html"
    proc = run_cli("convert", str(src), "-o", str(tmp_path / "out"), "--dry-run", "--report", str(rep),
                   "--html-report", str(html), env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = load_report(rep)
    assert report["summary"]["dry_run"] is True and report["summary"]["interrupted"] is None
    assert {n: d["status"] for n, d in by_input(report).items()} == {"data.csv": "pending", "broken.pdf": "failed"}
    page = html.read_text(encoding="utf-8")
    assert 'id="dry-run"' in page and "Dry run: nothing was converted" in page
    assert '<b id="n-pending">1</b>to convert' in page and '<option value="pending">to convert</option>' in page
    assert "<a href" not in page  # nothing was written: no link
    proc = run_cli("report", str(rep), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["dry_run"] is True and data["totals"]["pending"] == 1 and data["totals"]["failed"] == 1
    proc = run_cli("report", str(rep))
    assert proc.returncode == 0 and "dry run: nothing was converted" in proc.stdout and "to convert" in proc.stdout


def test_compare_orders_regressions_first_and_labels_collide(tmp_path):
    """``report A B``: a document that failed in the last run comes first; runs whose files have
    the same name are labelled with their folder."""
    def run(statuses: dict) -> dict:
        return {"summary": {"seconds": 1.0}, "documents": [
            {"input": n, "status": st.split()[0], "code": st.split()[1] if " " in st else None}
            for n, st in statuses.items()]}

    mon, tue = tmp_path / "mon" / "run.json", tmp_path / "tue" / "run.json"
    mon.parent.mkdir()
    tue.parent.mkdir()
    mon.write_text(json.dumps(run({"a.pdf": "converted", "b.pdf": "converted", "c.pdf": "failed corrupt",
                                   "d.pdf": "converted", "e.pdf": "skipped empty"})))
    tue.write_text(json.dumps(run({"a.pdf": "skipped done", "b.pdf": "failed timeout", "c.pdf": "converted",
                                   "e.pdf": "failed corrupt", "f.pdf": "converted"})))
    proc = run_cli("report", str(mon), str(tue), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the last run had failures
    cmp = json.loads(proc.stdout)["compare"]
    assert cmp["labels"] == ["mon/run.json", "tue/run.json"]
    assert [(c["input"], c["change"]) for c in cmp["changed"]] == [
        ("b.pdf", "regression"), ("e.pdf", "regression"), ("c.pdf", "fixed"), ("f.pdf", "new"), ("d.pdf", "gone")]
    proc = run_cli("report", str(mon), str(tue))
    assert "mon/run.json" in proc.stdout and "regression" in proc.stdout


QUOTE_SECRET = 's3cr"et\\x9'


def test_secret_with_quote_and_backslash_is_redacted_everywhere(tmp_path):
    """A secret holding ``"`` and ``\\`` is escaped in JSON text (``s3cr\\"et\\\\x9``): neither form
    appears in the JSON report, the done-records (but the names of the result files, which the
    record needs and the folder's name holds anyway), the log, the HTML or ``report``'s output;
    and the rerun still finds the results done."""
    escaped = json.dumps(QUOTE_SECRET)[1:-1]
    assert escaped != QUOTE_SECRET
    src = tmp_path / "in"
    (src / f"d-{QUOTE_SECRET}").mkdir(parents=True)
    shutil.copy(EXAMPLES / "data.csv", src / f"q-{QUOTE_SECRET}.csv")
    shutil.copy(EXAMPLES / "data.csv", src / f"d-{QUOTE_SECRET}" / "data.csv")
    out, rep, html, log = tmp_path / "out", tmp_path / "run.json", tmp_path / "r.html", tmp_path / "run.log"
    args = [str(src), "-o", str(out), "--storage-option", f"password={QUOTE_SECRET}"]
    proc = run_cli("convert", *args, "--report", str(rep), "--html-report", str(html), "--log-file", str(log),
                   env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def clean(text: str, what: str) -> None:
        assert QUOTE_SECRET not in text and escaped not in text and "s3cr" not in text, f"secret in {what}"

    for path in (rep, html, log):
        clean(path.read_text(encoding="utf-8"), path.name)
    clean(proc.stdout + proc.stderr, "the output")
    assert {d["input"] for d in load_report(rep)["documents"]} == {"q-***.csv", "d-***/data.csv"}
    clean((out / f"d-{QUOTE_SECRET}" / "data.csv" / DONE).read_text(encoding="utf-8"), "the done-record")
    record = json.loads((out / f"q-{QUOTE_SECRET}.csv" / DONE).read_text(encoding="utf-8"))
    assert {f["name"] for f in record.pop("files")} == {f"q-{QUOTE_SECRET}{end}" for end in (
        ".md", "_content_list.json", "_middle.json")}
    clean(json.dumps(record), "the done-record")
    assert record["input"]["rel"] == "q-***.csv"
    for extra in ([], ["--json"]):
        proc = run_cli("report", str(rep), *extra, env=cli_env(tmp_path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        clean(proc.stdout + proc.stderr, f"report {extra}")
    proc = run_cli("convert", *args, "--report", str(tmp_path / "rerun.json"), env=cli_env(tmp_path))
    assert proc.returncode == 0 and "2 skipped" in proc.stdout, proc.stdout + proc.stderr


def test_secret_that_is_a_word_of_the_page_does_not_break_it(tmp_path):
    """A registered secret equal to a word of the template's JavaScript (``status``): the data
    is redacted, the page is not (its script still runs and fills in the row count)."""
    html = tmp_path / "r.html"
    run = {"summary": {"seconds": 2.0}, "documents": [
        {"input": "status-report.pdf", "status": "converted", "pages": 1, "seconds": 1.0},
        {"input": "b.pdf", "status": "failed", "code": "corrupt", "reason": "bad status byte", "seconds": 0.5}]}
    code = ("import json, sys; from mineru_cli.redact import register_secret; "
            "from mineru_cli.html_report import write_html_report; register_secret('status'); "
            "write_html_report([json.loads(sys.argv[1])], sys.argv[2])")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(run), str(html)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    page = html.read_text(encoding="utf-8")
    assert "<td>***-report.pdf</td>" in page and "bad *** byte" in page
    assert 'getElementById("status-filter")' in page  # the page itself is not redacted
    dom = _dump_dom(html, tmp_path)
    assert '<span id="shown" class="muted">2 of 2 documents</span>' in dom
    rows = _rows(_dump_dom(html, tmp_path, "status=failed"))
    assert [(name, shown) for _st, shown, name, _s in rows] == [("***-report.pdf", False), ("b.pdf", True)]


def test_interrupted_run_report(tmp_path, process_tag):
    """A run stopped by SIGINT (exit 130): summary.interrupted is "SIGINT", the HTML and the
    terminal summary say the run did not finish, and ``report`` exits 1 though nothing failed
    but the interrupted document."""
    from test_reliability import Cli

    cli = Cli(tmp_path, process_tag)
    try:
        src = tmp_path / "in"
        src.mkdir()
        shutil.copy(EXAMPLES / "data.csv", src / "a.csv")
        shutil.copy(EXAMPLES / "data.csv", src / "HELD.csv")
        rep, html = tmp_path / "run.json", tmp_path / "run.html"
        p = cli.start(str(src), "-o", str(tmp_path / "out"), "--report", str(rep), "--html-report", str(html),
                      "--workers", "1", "--order", "path", MINERU_CLI_TEST_HOLD="HELD",
                      MINERU_CLI_GRACE_SECONDS="1")
        cli.wait_for_worker(p, "HELD")
        p.send_signal(signal.SIGINT)
        assert cli.wait(p, timeout=60) == 130, cli.output(p)
    finally:
        cli.cleanup()
    report = load_report(rep)
    assert report["summary"]["interrupted"] == "SIGINT" and report["summary"]["dry_run"] is False
    st = {n: (d["status"], d["code"]) for n, d in by_input(report).items()}
    assert st == {"HELD.csv": ("failed", "interrupted"), "a.csv": ("skipped", "interrupted")}
    page = html.read_text(encoding="utf-8")
    assert 'id="interrupted"' in page and "Interrupted by SIGINT: the run did not finish" in page
    proc = run_cli("report", str(rep))
    assert proc.returncode == 1 and "interrupted by SIGINT: the run did not finish" in proc.stdout, proc.stdout
    proc = run_cli("report", str(rep), "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["interrupted"] == "SIGINT"
    # the same report with the failure taken out: still 1, the run did not finish
    report["documents"] = [d for d in report["documents"] if d["status"] != "failed"]
    report["summary"]["failed"] = 0
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(report))
    proc = run_cli("report", str(partial), "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["totals"]["failed"] == 0


def test_html_redacts_url_credentials_and_registered_secrets():
    """The HTML goes through the same redaction as the logs: credentials in URLs and registered
    secret values never appear, wherever they are in the report."""
    from mineru_cli.html_report import render_report
    from mineru_cli.redact import register_secret

    register_secret("tok-Zq81MNBVxx")
    run = {"summary": {"converted": 0, "skipped": 0, "failed": 1, "total": 1, "pages": 0, "seconds": 1.0,
                       "output": {"url": "s3://AKIAEXAMPLE:hunter2pass@bucket/out", "local_root": None}},
           "documents": [{"input": "a.pdf", "status": "failed", "code": "storage_error",
                          "reason": "upload to s3://AKIAEXAMPLE:hunter2pass@bucket/out/a.pdf/ failed (token tok-Zq81MNBVxx)",
                          "seconds": 0.5, "attempts": [], "output": None, "warnings": []}]}
    html = render_report([run])
    assert "hunter2pass" not in html and "tok-Zq81MNBVxx" not in html
    assert "s3://bucket/out/a.pdf/" in html and "storage_error" in html


def test_help_imports_no_jinja2_or_rich():
    code = ("import sys, mineru_cli.cli, mineru_cli.convert, mineru_cli.html_report; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('jinja2', 'rich', 'mineru')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_render_only_rerun_to_s3(s3_server, tmp_path):
    """The same render-only rerun with OUTPUT on S3 (moto on loopback): the worker reads the
    middle JSON from the bucket, the html object is uploaded next to the old ones, the
    done-record (written last) lists both, and nothing is converted again."""
    from test_s3 import s3_env

    if not s3_server.running:
        s3_server.start()
    bucket = s3_server.bucket("mineru-render")
    url = f"s3://{bucket}/out"
    counter = tmp_path / "conversions.log"
    env = s3_env(tmp_path, MINERU_CLI_TEST_CONVERSIONS=str(counter))
    args = [str(EXAMPLES / "memo.docx"), "-o", url, "--endpoint-url", s3_server.endpoint]
    first = run_cli("convert", *args, "--format", "md,middle", env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(counter.read_text().splitlines()) == 1
    counter.unlink()
    again = run_cli("convert", *args, "--format", "md,middle,html", env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "rendered   memo.docx  (html from the middle JSON" in again.stdout
    assert not counter.exists()
    fs = s3_server.fs()
    assert fs.cat_file(f"{bucket}/out/memo.docx/memo.html").lstrip().lower().startswith(b"<!doctype html")
    record = json.loads(fs.cat_file(f"{bucket}/out/memo.docx/{DONE}"))
    assert {f["name"] for f in record["files"]} == {"memo.md", "memo_middle.json", "memo.html"}
    assert fs.exists(f"{bucket}/out/memo.docx/memo.md")
