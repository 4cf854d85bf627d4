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
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, by_input, cli_env, load_report, run_cli

DONE = ".mineru-cli.done.json"
SECRET = "S3cr3tValue9rq"
CORRUPT_REASON = "Data format error"


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
    return folder


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """One real convert run over a mixed folder: 5 documents convert, broken.pdf fails
    (corrupt), bands.png is flagged no_text; the secret is a storage option."""
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
    assert (s["converted"], s["skipped"], s["failed"], s["flagged"], s["total"]) == (6, 0, 1, 1, 7)
    docs = by_input(report)
    assert docs["broken.pdf"]["code"] == "corrupt" and CORRUPT_REASON in docs["broken.pdf"]["reason"]
    assert docs["bands.png"]["quality"]["no_text"] is True
    # the report's new timing keys: each converted document ran on a worker between started and ended
    for name, d in docs.items():
        if d["status"] == "converted":
            assert d["started"] <= d["ended"] and d["worker"] > 0 and d["type"], (name, d)
            assert all({"started", "ended", "worker"} <= set(a) for a in d["attempts"])
    assert s["decision"]["backend"] == "cpu" and s["decision"]["tier"] == "flash" and s["decision"]["tier_reason"]
    assert len(mixed_run["counter"].read_text().splitlines()) == 6  # the test hook counts real conversions


def test_html_report_content_and_no_secret(mixed_run):
    html = mixed_run["html"].read_text(encoding="utf-8")
    assert SECRET not in html and SECRET not in mixed_run["report"].read_text(encoding="utf-8")
    assert "notes-***.csv" in html
    assert 'id="n-converted">6<' in html and 'id="n-failed">1<' in html and 'id="n-flagged">1<' in html
    assert "corrupt" in html and CORRUPT_REASON in html and "no_text" in html
    assert "<svg" in html and "<rect" in html  # the time chart, inline
    # nothing external: no http(s) or protocol-relative src/href, no <link> or external script
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I), "external resource in the HTML"
    assert "<link" not in html.lower() and "<script src" not in html.lower()
    # output links are relative and point at the result folders (OUTPUT is local)
    links = re.findall(r'<a href="([^"]+)"', html)
    assert "out/report.pdf/" in links
    assert len(links) == 6
    for link in links:
        if "***" in link:  # the name holding the secret: redacted, so that link cannot resolve
            continue
        assert not link.startswith(("/", "file:")) and (mixed_run["html"].parent / link).is_dir(), link


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_html_report_in_headless_chromium(mixed_run):
    """Chromium opens the file (file:// only), the screenshot is taken, and the DOM Chromium
    built holds the counts and the failure's reason."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (chromium, chromium-browser, google-chrome): apt-get install chromium")
    html, tmp = mixed_run["html"], mixed_run["tmp"]
    shot = tmp / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-proxy-server",
             "--disable-background-networking", f"--user-data-dir={tmp / 'chromium-profile'}"]
    url = html.resolve().as_uri()
    proc = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1400,1000", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000, "screenshot missing or blank"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert '<b id="n-converted">6</b>' in text and '<b id="n-failed">1</b>' in text
    assert '<b id="n-flagged">1</b>' in text
    assert "broken.pdf" in text and CORRUPT_REASON in text
    assert "7 of 7 documents" in text  # the table's script ran: it counts the rows it shows
    assert SECRET not in text


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
    assert data["totals"]["converted"] == 6 and data["totals"]["failed"] == 1 and data["totals"]["flagged"] == 1
    assert [(g["code"], g["count"]) for g in data["failures"]] == [("corrupt", 1)]
    assert data["failures"][0]["documents"][0]["input"] == "broken.pdf"
    assert ("no_text", 1) in [(g["code"], g["count"]) for g in data["flags"]]
    assert len(data["slowest"]) == 6 and data["slowest"][0]["seconds"] >= data["slowest"][-1]["seconds"]

    # a run without failures: exit 0 (a rerun: everything done, broken.pdf left out)
    rerun = tmp_path / "rerun.json"
    proc = run_cli("convert", str(mixed_run["tmp"] / "in"), "-o", str(mixed_run["out"]), "--exclude", "broken.pdf",
                   "--storage-option", f"password={SECRET}", "--report", str(rerun), env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("report", str(rerun), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["totals"]["skipped"] == 6

    # several runs compared, drawn as HTML later
    cmp_html = tmp_path / "cmp.html"
    proc = run_cli("report", str(rep), str(rerun), "-o", str(cmp_html), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the last run decides
    changed = {c["input"]: c["statuses"] for c in json.loads(proc.stdout)["compare"]["changed"]}
    assert changed["report.pdf"] == ["converted", "skipped (done)"]
    assert changed["broken.pdf"] == ["failed (corrupt)", None]
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
