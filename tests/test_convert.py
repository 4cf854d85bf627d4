"""Issue 2: the main job, end to end on real documents with real MinerU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO, by_input, cli_env, load_report, run_cli

IMG_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def assert_complete(folder: Path, stem: str) -> str:
    """The four outputs exist, content_list is MinerU's list, every image link resolves."""
    md = folder / f"{stem}.md"
    assert md.is_file(), f"missing {md}"
    cl = json.loads((folder / f"{stem}_content_list.json").read_text(encoding="utf-8"))
    assert isinstance(cl, list) and all("type" in b and "page_idx" in b for b in cl)
    middle = json.loads((folder / f"{stem}_middle.json").read_text(encoding="utf-8"))
    assert "pages" in middle
    record = json.loads((folder / ".mineru-cli.done.json").read_text(encoding="utf-8"))
    assert record["tier"] and record["input"]["fingerprint"].startswith("sha256:")
    text = md.read_text(encoding="utf-8")
    for link in IMG_LINK.findall(text):
        assert not link.startswith("data:"), "images must not be inlined as base64"
        assert (folder / link).is_file(), f"{folder.name}: image link {link} does not resolve"
    return text


@pytest.fixture(scope="module")
def examples_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ex") / "out"
    rep = out.parent / "report.json"
    proc = run_cli("convert", str(EXAMPLES), "-o", str(out), "--report", str(rep), "--workers", "2")
    return proc, out, load_report(rep)


def test_examples_convert_with_content(examples_run):
    proc, out, report = examples_run
    assert proc.returncode == 0, proc.stderr
    docs = by_input(report)
    assert {k for k, d in docs.items() if d["status"] == "converted"} == {
        "report.pdf", "memo.docx", "budget.xlsx", "page.html", "data.csv"}
    assert docs["make_examples.py"]["status"] == "skipped"
    assert docs["make_examples.py"]["reason"].startswith("not a document")
    assert report["summary"]["converted"] == 5 and report["summary"]["failed"] == 0
    assert report["summary"]["total"] == len(report["documents"]) == 6
    pdf = assert_complete(out / "report.pdf", "report")
    assert "# Quarterly Report" in pdf and "| North | 120 | 135 |" in pdf and "## Notes" in pdf
    assert "| Item | Owner | Due |" in assert_complete(out / "memo.docx", "memo")
    assert "| Salaries | 52000 |" in assert_complete(out / "budget.xlsx", "budget")
    assert "Crème brûlée" in assert_complete(out / "page.html", "page")
    assert "Portland, Oregon" in assert_complete(out / "data.csv", "data")
    assert docs["report.pdf"]["tier"] == "flash" and docs["report.pdf"]["pages"] == 2
    # the tier is printed once for the run
    assert proc.stdout.count("tier: flash") == 1


def test_rerun_skips_everything(examples_run):
    _proc, out, _report = examples_run
    rep = out.parent / "report2.json"
    proc = run_cli("convert", str(EXAMPLES), "-o", str(out), "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    docs = load_report(rep)["documents"]
    assert sorted(d["code"] for d in docs if d["status"] == "skipped") == ["done"] * 5 + ["not_a_document"]


def test_corpus_office_pdf_images(corpus, tmp_path):
    out, rep = tmp_path / "out", tmp_path / "r.json"
    proc = run_cli("convert", str(corpus / "office"), str(corpus / "pdf" / "normal"), str(corpus / "images"),
                   "-o", str(out), "--report", str(rep), "--workers", "2", timeout=900)
    report = load_report(rep)
    docs = by_input(report)
    n_inputs = sum(1 for d in ("office", "pdf/normal", "images") for p in (corpus / d).iterdir() if p.is_file())
    assert report["summary"]["total"] == n_inputs == len(docs)
    # the one password-protected xlsx fails; everything else in these folders converts
    failed = {k: d for k, d in docs.items() if d["status"] == "failed"}
    assert set(failed) == {"unstructured_password_protected.xlsx"}, failed
    assert failed["unstructured_password_protected.xlsx"]["code"] == "encrypted"
    assert proc.returncode == 1
    md = assert_complete(out / "mineru_docx_01_zh.docx", "mineru_docx_01_zh")
    assert "# MinerU supports DOCX document parsing now" in md and "MinerU支持docx解析了" in md
    assert "| 2 | 4 | 6 | 8 |" in assert_complete(out / "mineru_xlsx_01.xlsx", "mineru_xlsx_01")
    duck = assert_complete(out / "docling_wiki_duck.html", "docling_wiki_duck")
    assert "# Duck - Wikipedia" in duck and "## Taxonomy" in duck
    assert "# Test Table Slide" in assert_complete(out / "mineru_pptx_01.pptx", "mineru_pptx_01")
    assert "# Poetry" in assert_complete(out / "docling_epub_purvis_poetry.epub", "docling_epub_purvis_poetry")
    tex = assert_complete(out / "samplefiles_latex_multicolumn.pdf", "samplefiles_latex_multicolumn")
    assert "# Two-Column Document with Lorem Ipsum" in tex and "Lorem ipsum dolor sit amet" in tex
    assert "# TABLEFORMER: Robust Transformer Modeling for Table-Text Encoding" in assert_complete(out / "mineru_demo3_tableformer_tables.pdf", "mineru_demo3_tableformer_tables")
    # a file name with CJK characters, spaces and parentheses
    assert_complete(out / "中文 知识库 模板 (副本).pdf", "中文 知识库 模板 (副本)")
    # scans at tier flash: converted, but flagged as having no text
    scan = docs["unstructured_double_column_scan.jpg"]
    assert scan["status"] == "converted" and scan["quality"]["no_text"] is True
    assert any("OCR" in w for w in scan["warnings"])
    assert docs["mineru_small_ocr_scanned_zh.pdf"]["quality"]["no_text"] is True
    assert docs["samplefiles_latex_multicolumn.pdf"]["quality"]["no_text"] is False


def test_bad_inputs_folder(corpus, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "report.pdf", src / "good.pdf")
    (src / "zero.pdf").write_bytes(b"")
    (src / "text.pdf").write_text("this is just a note, not a PDF\n")
    shutil.copy(corpus / "pdf" / "broken" / "derived_docx_renamed_as.pdf", src / "renamed.pdf")
    out, rep = tmp_path / "out", tmp_path / "r.json"
    proc = run_cli("convert", str(src), "-o", str(out), "--report", str(rep))
    assert proc.returncode == 1
    docs = by_input(load_report(rep))
    assert docs["good.pdf"]["status"] == "converted"
    assert docs["renamed.pdf"]["status"] == "converted"
    assert "Lorem ipsum" in assert_complete(out / "renamed.pdf", "renamed")
    assert (docs["zero.pdf"]["status"], docs["zero.pdf"]["code"]) == ("failed", "empty")
    assert (docs["text.pdf"]["status"], docs["text.pdf"]["code"]) == ("failed", "not_a_document")
    assert "plain text" in docs["text.pdf"]["reason"]
    assert "# Quarterly Report" in assert_complete(out / "good.pdf", "good")
    # one line per failed document, naming the file and the reason
    assert re.search(r"failed\s+zero\.pdf: empty file", proc.stdout)
    assert re.search(r"failed\s+text\.pdf: not a document", proc.stdout)


def test_same_stem_and_case_only_names(tmp_path):
    src = tmp_path / "in" / "a"
    src.mkdir(parents=True)
    shutil.copy(EXAMPLES / "report.pdf", src / "report.pdf")
    shutil.copy(EXAMPLES / "memo.docx", src / "report.docx")
    shutil.copy(EXAMPLES / "data.csv", src / "Data.csv")
    shutil.copy(EXAMPLES / "data.csv", src / "data.csv")
    long_name = "n" * 240 + ".csv"  # fits the input disk, but <stem>_content_list.json would not
    shutil.copy(EXAMPLES / "data.csv", src / long_name)
    out, rep = tmp_path / "out", tmp_path / "r.json"
    proc = run_cli("convert", str(tmp_path / "in"), "-o", str(out), "--report", str(rep))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = by_input(load_report(rep))
    assert all(d["status"] == "converted" for d in docs.values()), docs
    outputs = [d["output"] for d in docs.values()]
    assert len(set(o.casefold() for o in outputs)) == 5, outputs
    assert "Quarterly Report" in (out / "a" / "report.pdf" / "report.md").read_text()
    assert "Project Memo" in (out / "a" / "report.docx" / "report.md").read_text()
    # case-only different names never share a folder, even on case-insensitive storage
    case_folders = sorted(p.name for p in (out / "a").iterdir() if p.name.lower().startswith("data.csv"))
    assert len(case_folders) == 2 and "Data.csv" in case_folders
    long_out = Path(docs[f"a/{long_name}"]["output"].rstrip("/"))
    assert len(long_out.name.encode()) <= 200 and long_out.is_dir()
    assert any(p.suffix == ".md" for p in long_out.iterdir())


def test_include_exclude_hidden_symlinks(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    shutil.copy(EXAMPLES / "data.csv", src / "sub" / "one.csv")
    shutil.copy(EXAMPLES / "page.html", src / "two.html")
    shutil.copy(EXAMPLES / "data.csv", src / ".hidden" / "three.csv")
    shutil.copy(EXAMPLES / "data.csv", src / ".dot.csv")
    os.symlink(src / "two.html", src / "link.html")
    rep = tmp_path / "r.json"
    proc = run_cli("convert", str(src), "-o", str(tmp_path / "o1"), "--report", str(rep), "--include", "*.csv", "--include", "*.html",
                   "--exclude", "two.*")
    docs = by_input(load_report(rep))
    assert set(docs) == {"sub/one.csv", "link.html"}, docs
    assert docs["link.html"]["status"] == "skipped" and "symbolic link" in docs["link.html"]["reason"]
    assert load_report(rep)["summary"]["hidden_ignored"] == 2
    assert proc.returncode == 0
    rep2 = tmp_path / "r2.json"
    run_cli("convert", str(src), "-o", str(tmp_path / "o2"), "--report", str(rep2), "--hidden", "--follow-symlinks")
    docs2 = by_input(load_report(rep2))
    assert {k for k, d in docs2.items() if d["status"] == "converted"} == {
        "sub/one.csv", "two.html", ".hidden/three.csv", ".dot.csv", "link.html"}


def test_symlink_loop_is_not_followed_forever(tmp_path):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    shutil.copy(EXAMPLES / "data.csv", src / "a" / "x.csv")
    os.symlink(src, src / "a" / "loop")
    rep = tmp_path / "r.json"
    proc = run_cli("convert", str(src), "-o", str(tmp_path / "o"), "--report", str(rep), "--follow-symlinks", timeout=120)
    assert proc.returncode == 0
    assert [d["input"] for d in load_report(rep)["documents"]] == ["a/x.csv"]
    assert "symbolic link loop" in proc.stderr


def test_format_selection(tmp_path):
    out = tmp_path / "o"
    proc = run_cli("convert", str(EXAMPLES / "report.pdf"), "-o", str(out), "--format", "md,images")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (out / "report.pdf").iterdir())
    assert names == [".mineru-cli.done.json", "images", "report.md"]


def test_memory_filesystem_output(tmp_path):
    """OUTPUT through fsspec only: the in-process memory:// filesystem receives every file."""
    script = tmp_path / "run_mem.py"
    script.write_text(
        "import json, sys\n"
        "if __name__ == '__main__':\n"
        "    import fsspec\n"
        "    from mineru_cli.settings import load_settings\n"
        "    from mineru_cli.convert import run_convert\n"
        f"    s = load_settings({{'inputs': [{str(EXAMPLES / 'memo.docx')!r}, {str(EXAMPLES / 'report.pdf')!r}], "
        "'output': 'memory://results/run1', 'workers': 1, 'staging_dir': sys.argv[1]})\n"
        "    code = run_convert(s)\n"
        "    fs = fsspec.filesystem('memory')\n"
        "    files = sorted(p for p in fs.find('/results/run1'))\n"
        "    md = fs.cat_file('/results/run1/report.pdf/report.md').decode()\n"
        "    print(json.dumps({'code': code, 'files': files, 'md': md}))\n")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "staging")], capture_output=True, text=True,
                          env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["code"] == 0
    assert "/results/run1/memo.docx/memo.md" in data["files"]
    assert "/results/run1/report.pdf/.mineru-cli.done.json" in data["files"]
    assert "/results/run1/report.pdf/report_content_list.json" in data["files"]
    assert "| North | 120 | 135 |" in data["md"]
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())


def test_help_is_light_and_documents_exit_codes():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "Exit codes" in proc.stdout and "143" in proc.stdout
    proc = run_cli("convert", "--help")
    assert proc.returncode == 0 and "--tier" in proc.stdout and "130 interrupted" in proc.stdout
    code = ("import sys, mineru_cli.cli, mineru_cli.convert, mineru_cli.settings; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mineru', 'torch', 's3fs', 'ray', 'docvortex')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_usage_and_environment_exit_codes(tmp_path):
    proc = run_cli("convert", str(EXAMPLES / "data.csv"), "-o", str(tmp_path / "o"), "--tier", "bogus")
    assert proc.returncode == 2 and "tier" in proc.stderr
    proc = run_cli("convert", str(tmp_path / "missing"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "missing" in proc.stderr
    # explicit tier whose weights are missing: fails before the batch, fast, names models and command
    models = tmp_path / "models"
    proc = run_cli("convert", str(EXAMPLES / "report.pdf"), "-o", str(tmp_path / "o"), "--tier", "basic",
                   env=cli_env(MINERU_MODEL_BASE_DIR=str(models)), timeout=60)
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "MinerU-4_models_onnx" in line and "mineru-kit models download --tier basic" in line
    assert not (tmp_path / "o" / "report.pdf").exists()


def test_settings_sources_precedence(tmp_path):
    (tmp_path / "mineru-cli.toml").write_text('format = "md"\nretries = 7\n')
    from mineru_cli.settings import load_settings

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        s = load_settings({})
        assert s.format == ["md"] and s.retries == 7
        os.environ["MINERU_CLI_RETRIES"] = "3"
        try:
            assert load_settings({}).retries == 3  # env beats file
            assert load_settings({"retries": 1}).retries == 1  # flag beats env
        finally:
            del os.environ["MINERU_CLI_RETRIES"]
    finally:
        os.chdir(cwd)


def test_pyproject_table_and_env_through_cli(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\n\n[tool.mineru-cli]\nformat = ["md"]\n')
    out = tmp_path / "o"
    proc = run_cli("convert", str(EXAMPLES / "data.csv"), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "data.csv").iterdir()) == [".mineru-cli.done.json", "data.md"]
    proc = run_cli("convert", str(EXAMPLES / "data.csv"), "-o", str(tmp_path / "o2"), cwd=tmp_path,
                   env=cli_env(MINERU_CLI_FORMAT='["middle"]'))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "o2" / "data.csv").iterdir()) == [".mineru-cli.done.json", "data_middle.json"]


def test_log_file_keeps_tracebacks(corpus, tmp_path):
    log = tmp_path / "run.log"
    proc = run_cli("convert", str(corpus / "pdf" / "broken" / "pdfjs_Pages-tree-refs_cycle.pdf"), "-o", str(tmp_path / "o"),
                   "--log-file", str(log))
    assert proc.returncode == 1
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "pdfjs_Pages-tree-refs_cycle.pdf" in text


def test_bad_pages_and_empty_format_are_usage_errors(tmp_path):
    for args, word in ((["--pages", "abc"], "pages"), (["--pages", "5-2"], "pages"), (["--format", ""], "format")):
        proc = run_cli("convert", str(EXAMPLES / "report.pdf"), "-o", str(tmp_path / "o"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert f"invalid setting {word}" in proc.stderr
    assert not (tmp_path / "o" / "report.pdf").exists()


def test_earlier_output_inside_an_input_is_not_converted_again(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "report.pdf", src / "report.pdf")
    assert run_cli("convert", str(src), "-o", str(src / "out")).returncode == 0
    rep = tmp_path / "r.json"
    proc = run_cli("convert", str(src), "-o", str(src / "out2"), "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    report = load_report(rep)
    assert [d["input"] for d in report["documents"]] == ["report.pdf"]
    assert report["summary"]["results_ignored"] == 1 and "1 earlier result folders ignored" in proc.stdout


def test_server_url_secrets_are_redacted(tmp_path):
    url = "http://alice:S3cr3tPW@127.0.0.1:9/v1?api_key=TOPSECRET"
    doctor = run_cli("doctor", "--server-url", url)
    conv = run_cli("convert", str(EXAMPLES / "report.pdf"), "-o", str(tmp_path / "o"), "--server-url", url)
    assert doctor.returncode == 3 and conv.returncode == 3
    for text in (doctor.stdout + doctor.stderr, conv.stdout + conv.stderr):
        assert "S3cr3tPW" not in text and "TOPSECRET" not in text
    assert "127.0.0.1:9" in conv.stderr


def test_environment_lists_and_errors_name_the_variable(tmp_path):
    out = tmp_path / "o"
    proc = run_cli("convert", str(EXAMPLES / "data.csv"), "-o", str(out), env=cli_env(MINERU_CLI_FORMAT="md,middle"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "data.csv").iterdir()) == [".mineru-cli.done.json", "data.md", "data_middle.json"]
    proc = run_cli("convert", str(EXAMPLES / "data.csv"), "-o", str(out), env=cli_env(MINERU_CLI_WORKERS="abc"))
    assert proc.returncode == 2 and "(environment variable MINERU_CLI_WORKERS)" in proc.stderr


def test_file_name_that_is_not_utf8(tmp_path):
    """A file named with a Latin-1 byte (``caf\\xe9.csv``; Python holds it as the lone surrogate
    ``\\udce9``, PEP 383) is converted next to a plain one and skipped on the rerun. Its done-record
    and the report hold the name as the JSON escape ``\\udce9``, which reads back as the same
    name; the console shows that escape. Before, writing its staged record raised
    UnicodeEncodeError and the whole run stopped with a traceback."""
    src = tmp_path / "in"
    src.mkdir()
    raw = os.path.join(os.fsencode(src), b"caf\xe9.csv")
    with open(raw, "wb") as fh:
        fh.write(b"name,price\ncoffee,3\n")
    shutil.copy(EXAMPLES / "data.csv", src / "ok.csv")
    out, rep = tmp_path / "out", tmp_path / "r.json"
    proc = run_cli("convert", str(src), "-o", str(out), "--report", str(rep))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = os.fsdecode(b"caf\xe9.csv")
    assert bad == "caf\udce9.csv"
    assert "converted  caf\\udce9.csv" in proc.stdout
    assert b"\\udce9" in rep.read_bytes()
    rep.read_bytes().decode("utf-8")  # the report is valid UTF-8
    docs = by_input(load_report(rep))
    assert {k: d["status"] for k, d in docs.items()} == {bad: "converted", "ok.csv": "converted"}
    folder = os.path.join(os.fsencode(out), b"caf\xe9.csv")
    with open(os.path.join(folder, b"caf\xe9.md"), "rb") as fh:
        assert b"coffee" in fh.read()
    with open(os.path.join(folder, b".mineru-cli.done.json"), "rb") as fh:
        record = json.loads(fh.read().decode("utf-8"))
    assert record["input"]["rel"] == bad
    again = run_cli("convert", str(src), "-o", str(out), "--report", str(rep))
    assert again.returncode == 0, again.stdout + again.stderr
    assert {k: (d["status"], d["code"]) for k, d in by_input(load_report(rep)).items()} == {
        bad: ("skipped", "done"), "ok.csv": ("skipped", "done")}


def test_rerun_replaces_a_result_whose_files_were_deleted_or_changed(tmp_path):
    """A finished result whose done-record lists a file that is gone (deleted by hand, a partial
    copy of OUTPUT) or has another size is converted again on the rerun, with the reason; the
    untouched result is skipped. Before, the done-record alone decided and the loss stayed."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        shutil.copy(EXAMPLES / "data.csv", src / name)
    out, rep = tmp_path / "out", tmp_path / "r.json"
    first = run_cli("convert", str(src), "-o", str(out))
    assert first.returncode == 0 and "3 converted" in first.stdout, first.stdout + first.stderr
    (out / "a.csv" / "a.md").unlink()
    with open(out / "b.csv" / "b_content_list.json", "a") as fh:
        fh.write("\n")
    dry = run_cli("convert", str(src), "-o", str(out), "--dry-run", "--report", str(rep))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    docs = by_input(load_report(rep))
    assert {k: (d["status"], d["reason"]) for k, d in docs.items()} == {
        "a.csv": ("pending", "result incomplete: a.md missing or changed since it was written"),
        "b.csv": ("pending", "result incomplete: b_content_list.json missing or changed since it was written"),
        "c.csv": ("skipped", "already converted (done-record matches input and settings)")}
    again = run_cli("convert", str(src), "-o", str(out), "--report", str(rep))
    assert again.returncode == 0, again.stdout + again.stderr
    assert {k: d["status"] for k, d in by_input(load_report(rep)).items()} == {
        "a.csv": "converted", "b.csv": "converted", "c.csv": "skipped"}
    assert (out / "a.csv" / "a.md").read_text() == (out / "c.csv" / "c.md").read_text()
    assert json.loads((out / "b.csv" / "b_content_list.json").read_text())
    third = run_cli("convert", str(src), "-o", str(out))
    assert "0 converted, 3 skipped" in third.stdout, third.stdout


def test_dry_run_with_pages_shows_the_selected_pages(tmp_path):
    """``--dry-run --pages`` says which pages of how many would be converted (it showed the PDF's
    total as if every page were converted)."""
    from conftest import load_make_examples

    mk = load_make_examples()
    src = tmp_path / "in"
    src.mkdir()
    mk.write_text_pdf(src / "five.pdf", mk.numbered_pages(5), title="Five pages")
    out, dry_rep, real_rep = tmp_path / "out", tmp_path / "dry.json", tmp_path / "real.json"
    proc = run_cli("convert", str(src), "-o", str(out), "--dry-run", "--pages", "2-3,5", "--report", str(dry_rep))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^would convert\s+five\.pdf\s+\(pages 2-3,5 of 5, tier flash\) -> ", proc.stdout, re.M), proc.stdout
    whole = run_cli("convert", str(src), "-o", str(out), "--dry-run")
    assert re.search(r"^would convert\s+five\.pdf\s+\(5 pages, tier flash\) -> ", whole.stdout, re.M), whole.stdout
    # the dry run's report counts the pages the real run converts
    real = run_cli("convert", str(src), "-o", str(out), "--pages", "2-3,5", "--report", str(real_rep))
    assert real.returncode == 0, real.stdout + real.stderr
    dry_doc, real_doc = json.loads(dry_rep.read_text())["documents"][0], json.loads(real_rep.read_text())["documents"][0]
    assert (dry_doc["status"], dry_doc["pages"]) == ("pending", 3), dry_doc
    assert (real_doc["status"], real_doc["pages"]) == ("converted", 3), real_doc
    # a range counted from the end is clipped at page 1 as one past the end is clipped at the last
    # page (it was "bad page range 'r40-r1'"); an end before the start on this PDF says so
    back = run_cli("convert", str(src), "-o", str(out), "--dry-run", "--pages", "r40-r1")
    assert re.search(r"^would convert\s+five\.pdf\s+\(pages 1-5 of 5, tier flash; output-affecting settings changed\) -> ",
                     back.stdout, re.M), back.stdout  # converted before (pages 2-3,5): says why again
    mixed = run_cli("convert", str(src), "-o", str(out), "--dry-run", "--pages", "r1-3")
    assert "would fail  five.pdf: --pages: bad page range 'r1-3': on this 5-page PDF its end comes before its start" \
        in mixed.stdout, mixed.stdout


def test_pages_spelled_differently_select_the_same_pages_and_skip(tmp_path):
    """A rerun whose ``--pages`` selects the same pages of a finished PDF as the done-record's
    (``2,3,5`` after ``2-3,5``; ``1-1000`` or ``r5-r1`` on a 5-page PDF converted whole) skips
    it; it converted it again because the spec was compared as typed. Other pages convert."""
    from conftest import load_make_examples

    mk = load_make_examples()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    mk.write_text_pdf(src / "five.pdf", mk.numbered_pages(5), title="Five pages")
    mk.write_text_pdf(src / "three.pdf", mk.numbered_pages(3), title="Three pages")
    first = run_cli("convert", str(src / "five.pdf"), "-o", str(out), "--pages", "2-3,5")
    assert first.returncode == 0 and "1 converted" in first.stdout, first.stdout + first.stderr
    for spec in ("2,3,5", "5,2-3", "2-3,5"):
        again = run_cli("convert", str(src / "five.pdf"), "-o", str(out), "--pages", spec)
        assert again.returncode == 0 and "0 converted, 1 skipped" in again.stdout, (spec, again.stdout)
    other = run_cli("convert", str(src / "five.pdf"), "-o", str(out), "--pages", "2-3", "--dry-run")
    assert "would convert  five.pdf  (pages 2-3 of 5, tier flash; output-affecting settings changed)" in other.stdout

    whole = run_cli("convert", str(src / "three.pdf"), "-o", str(out / "w"))
    assert whole.returncode == 0 and "1 converted" in whole.stdout, whole.stdout + whole.stderr
    for spec in ("1-1000", "r3-r1", "1-3", "r40-r1"):
        again = run_cli("convert", str(src / "three.pdf"), "-o", str(out / "w"), "--pages", spec, "--report",
                        str(tmp_path / "r.json"))
        assert again.returncode == 0 and "0 converted, 1 skipped" in again.stdout, (spec, again.stdout)
        doc = json.loads((tmp_path / "r.json").read_text())["documents"][0]
        assert doc["code"] == "done" and f"--pages {spec} selects the same pages" in doc["reason"], doc
    part = run_cli("convert", str(src / "three.pdf"), "-o", str(out / "w"), "--pages", "1-2")
    assert part.returncode == 0 and "1 converted" in part.stdout, part.stdout + part.stderr
    back = run_cli("convert", str(src / "three.pdf"), "-o", str(out / "w"))  # all pages: not what 1-2 made
    assert back.returncode == 0 and "1 converted" in back.stdout, back.stdout + back.stderr
