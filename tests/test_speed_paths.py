"""The shortcuts taken for speed (issue 8) give the same results as the long way.

1. Workers do not run MinerU's neural type classifier (Magika) on text files whose extension
   decides their type anyway (engine.skip_magika_where_extension_decides): the type and the
   converted markdown must be what MinerU itself gives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import struct
import zlib
from pathlib import Path

import pytest

from conftest import by_input, cli_env, corpus_dir, load_make_examples, load_report, run_cli, run_convert_watched

os.environ.setdefault("MINERU_MODEL_SOURCE", "local")


def _png_bytes() -> bytes:
    """A 2x2 grey PNG (stdlib only)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80\x80" for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _text_inputs(folder: Path) -> list[Path]:
    """Text files of every kind the shortcut covers, plus the corpus's csv/html files."""
    mk = load_make_examples()
    folder.mkdir(parents=True, exist_ok=True)
    mk.write_csv(folder / "data.csv", [["id", "name"], [1, "Ada"], [2, "Grace"]])
    (folder / "tabs.tsv").write_text("id\tname\n1\tAda\n2\tGrace\n", encoding="utf-8")
    mk.write_html(folder / "page.html", "Title", "Heading", ["One paragraph."], [["a", "b"], ["1", "2"]])
    (folder / "short.htm").write_text("<p>just a fragment</p>\n", encoding="utf-8")
    (folder / "prose.html").write_text("No markup at all, only a sentence.\n", encoding="utf-8")
    (folder / "numbers.csv").write_text("1;2;3\n4;5;6\n", encoding="utf-8")
    c = corpus_dir()
    if c is not None:
        for p in sorted((c / "office").iterdir()):
            if p.suffix.lower() in (".csv", ".html", ".htm", ".tsv"):
                shutil.copy(p, folder / p.name)
    return sorted(folder.iterdir())


def test_detection_without_magika_gives_mineru_types(tmp_path, monkeypatch):
    """For every csv/tsv/html/htm text file the type equals docvortex's own answer (with the real
    classifier), the classifier is not called for them, and a PNG named .csv still reaches it."""
    from docvortex.document import detection

    from mineru_cli import engine

    files = _text_inputs(tmp_path / "in")
    png_as_csv = tmp_path / "in" / "picture.csv"
    png_as_csv.write_bytes(_png_bytes())
    files.append(png_as_csv)
    mk = load_make_examples()
    mk.write_text_pdf(tmp_path / "two.pdf", mk.numbered_pages(2))
    for name in ("late_pdf.csv", "late_pdf.html"):  # text, then a PDF after the first KiB
        (tmp_path / "in" / name).write_bytes(b"#" * 1100 + b"\n" + (tmp_path / "two.pdf").read_bytes())
        files.append(tmp_path / "in" / name)

    expected = {p.name: detection.guess_suffix_by_path(p) for p in files}
    assert expected["data.csv"] == "csv" and expected["tabs.tsv"] == "tsv" and expected["page.html"] == "html"
    assert expected["picture.csv"] == "png"  # MinerU reads content, not the name

    real = detection._magika
    calls: list[str] = []

    def counting_magika():
        inst = real()

        class Spy:
            def identify_path(self, path):
                calls.append(os.path.basename(os.fspath(path)))
                return inst.identify_path(path)

            def identify_bytes(self, data):
                return inst.identify_bytes(data)

        return Spy()

    monkeypatch.setattr(detection, "_magika", counting_magika)
    assert engine.skip_magika_where_extension_decides() is True
    assert engine.skip_magika_where_extension_decides() is True  # idempotent
    proxy = detection._magika()
    got = {p.name: detection.guess_suffix_by_path(p) for p in files}
    assert got == expected
    assert sorted(calls) == ["late_pdf.csv", "late_pdf.html", "picture.csv"], calls
    from mineru_cli.sniff import sniff_text  # discovery types the late PDF the same way: not text

    assert sniff_text((tmp_path / "in" / "late_pdf.csv").read_bytes()[:65536], "late_pdf.csv") is None
    assert sniff_text((tmp_path / "in" / "data.csv").read_bytes()[:65536], "data.csv") == "csv"
    assert proxy.skipped == len(files) - 3


def test_cli_markdown_equals_mineru_for_text_files(tmp_path):
    """Through the CLI (workers with the shortcut) the markdown of each text file is byte for
    byte what MinerU's own parse + save gives in this process (no shortcut here)."""
    from docvortex.document import detection
    from mineru.parser import MinerUParser

    assert getattr(detection._magika, "_mineru_cli", None) is None, "shortcut leaked into the test process"
    files = _text_inputs(tmp_path / "in")
    out = tmp_path / "out"
    p = run_cli("convert", str(tmp_path / "in"), "-o", str(out), "--report", str(tmp_path / "r.json"),
                "--workers", "1", env=cli_env(tmp_path))
    docs = by_input(load_report(tmp_path / "r.json"))
    parser = MinerUParser(tier="flash", parse_mode="txt")

    class Mem:
        def __init__(self):
            self.files = {}

        def write(self, path, data):
            self.files[path] = data

        def write_string(self, path, data):
            self.files[path] = data.encode("utf-8")

    compared = 0
    for f in files:
        doc = next(d for k, d in docs.items() if k.endswith(f.name))
        assert doc["status"] == "converted", (f.name, doc, p.stderr[-2000:])
        mem = Mem()
        parser.parse(str(f)).save(mem)
        ours = (out / f.name / (f.stem + ".md")).read_bytes()
        assert ours == mem.files["markdown.md"], f.name
        compared += 1
    assert compared >= 4


def test_no_model_folder_answers_tier_auto_like_mineru(tmp_path, monkeypatch):
    """2. ``--tier auto`` on a machine with no MinerU model folder is answered without importing
    MinerU's registry; the answer (flash) is the one MinerU's own verification gives, and any
    setting that could point MinerU at weights elsewhere turns the shortcut off."""
    from mineru_cli import models

    for k in [k for k in os.environ if k.startswith("MINERU_") and k != "MINERU_MODEL_SOURCE"]:
        monkeypatch.delenv(k)
    home = tmp_path / "mineru-home"
    monkeypatch.setenv("MINERU_HOME", str(home))
    assert models.absent_model_folder() == str(home / "models")
    quick = models.resolve_tier("auto")
    assert quick[0] == "flash" and str(home / "models") in quick[1]
    # the long way in a fresh process (MinerU reads MINERU_HOME when it is imported)
    code = ("from mineru_cli import models; import json; "
            "print(json.dumps(models.resolve_tier('auto', real_probe=False)))")
    env = dict(os.environ, MINERU_HOME=str(home), MINERU_MODEL_SOURCE="local")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    long_way = json.loads(done.stdout.strip().splitlines()[-1])
    assert long_way[0] == quick[0] == "flash"
    assert "no model weights found" in long_way[1]
    assert not home.exists(), "asking MinerU must not create its home (nor write a config.yaml)"

    assert models.absent_model_folder({"MINERU_HOME": str(home), "MINERU_MODEL_BASE_DIR": "/weights"}) is None
    assert models.absent_model_folder({"MINERU_HOME": str(home), "MINERU_CONFIG": "/etc/mineru.yaml"}) is None
    assert models.absent_model_folder({"MINERU_HOME": str(home), "MINERU_MODEL_SOURCE": "local"}) == str(home / "models")
    (home / "models").mkdir(parents=True)
    assert models.absent_model_folder() is None
    (home / "models").rmdir()
    (home / "config.yaml").write_text("model:\n  base_dir: /weights\n", encoding="utf-8")
    assert models.absent_model_folder() is None


def test_flash_without_probing_equals_the_probed_decision(tmp_path, monkeypatch):
    """``backend.flash_without_probing`` answers without the GPU, engine and memory probes
    only where the probed decision is the same: on this machine, with no model folder, every
    combination of ``--tier auto|flash`` and ``--backend auto|cpu`` gives the backend, tier and
    tier reason that ``decide_backend(probe_machine(...))`` gives, and the same worker lanes. A
    models folder, a server URL, an explicit GPU engine or tier turn it off (None)."""
    from mineru_cli.backend import decide_backend, flash_without_probing, probe_machine, worker_lanes
    from mineru_cli.settings import Settings

    for k in [k for k in os.environ if k.startswith("MINERU_") and k != "MINERU_MODEL_SOURCE"]:
        monkeypatch.delenv(k)
    home = tmp_path / "mineru-home"
    monkeypatch.setenv("MINERU_HOME", str(home))
    compared = 0
    for tier in ("auto", "flash"):
        for backend in ("auto", "cpu"):
            for needs_tier in (True, False):
                s = Settings(tier=tier, backend=backend)
                quick = flash_without_probing(s, needs_tier)
                assert quick is not None
                if not needs_tier:
                    continue  # no PDF or image: the tier does not depend on the machine
                full = decide_backend(s, probe_machine(s))
                assert (quick.backend, quick.tier, quick.tier_reason) == (full.backend, full.tier, full.tier_reason)
                assert [(l.label, l.env, l.workers) for l in worker_lanes(quick, s)] == \
                    [(l.label, l.env, l.workers) for l in worker_lanes(full, s)]
                compared += 1
    assert compared == 4
    assert "no model weights" in flash_without_probing(Settings(), True).tier_reason
    assert flash_without_probing(Settings(backend="vllm"), True) is None
    assert flash_without_probing(Settings(tier="basic"), True) is None
    assert flash_without_probing(Settings(server_url="http://127.0.0.1:9"), True) is None
    monkeypatch.setenv("MINERU_MODEL_VLM_SERVER_URL", "http://127.0.0.1:9")
    assert flash_without_probing(Settings(), True) is None
    monkeypatch.delenv("MINERU_MODEL_VLM_SERVER_URL")
    (home / "models").mkdir(parents=True)
    assert flash_without_probing(Settings(), True) is None
    assert flash_without_probing(Settings(), False) is not None  # Office files only: flash anyway


def _planned(name: str, kind: str, pages: int | None, page_range: str = ""):
    from mineru_cli.sniff import SourceDocument
    from mineru_cli.plan import PlannedDocument

    return PlannedDocument(source=SourceDocument(uri=f"/in/{name}", rel=name, size=1000, mtime=0.0, kind=kind),
                           key=name, stem=name.rsplit(".", 1)[0], pages=pages, page_range=page_range)


def test_spread_long_documents_decisions():
    """3. A PDF longer than its share of the run is split among the workers; not when the run
    has enough other work, not below 2 x 25 pages, never above --window-pages."""
    from mineru_cli.windows import spread_long_documents

    alone = [_planned("long.pdf", "pdf", 100)]
    assert spread_long_documents(alone, 2, max_window=100) == ["long.pdf"]
    assert alone[0].windows == [(1, 50), (51, 100)]

    three = [_planned("long.pdf", "pdf", 100)]
    spread_long_documents(three, 3, max_window=100)
    assert three[0].windows == [(1, 34), (35, 68), (69, 100)]

    crowd = [_planned("long.pdf", "pdf", 100)] + [_planned(f"d{i}.docx", "docx", None) for i in range(200)]
    assert spread_long_documents(crowd, 2, max_window=100) == []  # share 150 > 100 pages
    assert crowd[0].windows == []

    short = [_planned("short.pdf", "pdf", 40)]
    assert spread_long_documents(short, 2, max_window=100) == [] and short[0].windows == []

    assert spread_long_documents([_planned("long.pdf", "pdf", 100)], 1, max_window=100) == []

    ranged = [_planned("long.pdf", "pdf", 300, page_range="1-60,201-260")]  # 120 selected pages
    spread_long_documents(ranged, 2, max_window=100)
    assert ranged[0].windows == [(1, 60), (201, 260)]

    capped = [_planned("huge.pdf", "pdf", 1000)]
    capped[0].windows = [(1, 100)] + [(a, a + 99) for a in range(101, 1000, 100)]  # from --window-pages 100
    spread_long_documents(capped, 2, max_window=100)
    assert capped[0].windows[0] == (1, 100) and len(capped[0].windows) == 10  # already smaller than the share


def test_one_long_pdf_uses_both_workers_and_merges_in_order(tmp_path):
    """The CLI splits one 100-page PDF into two windows when --window-pages is not given (the
    result has every page once, in order), and not when it is given."""
    mk = load_make_examples()
    src = tmp_path / "in"
    src.mkdir()
    mk.write_text_pdf(src / "long.pdf", mk.numbered_pages(100))
    runs = {}
    for name, extra in (("auto", []), ("given", ["--window-pages", "100"])):
        out = tmp_path / f"out-{name}"
        p = run_cli("convert", str(src), "-o", str(out), "--report", str(tmp_path / f"{name}.json"),
                    "--workers", "2", "--format", "md,content_list", *extra, env=cli_env(tmp_path))
        assert p.returncode == 0, p.stderr[-3000:]
        doc = load_report(tmp_path / f"{name}.json")["documents"][0]
        runs[name] = (doc, (out / "long.pdf" / "long.md").read_text(encoding="utf-8"),
                      json.loads((out / "long.pdf" / "long_content_list.json").read_text(encoding="utf-8")))
    auto_doc, auto_md, auto_cl = runs["auto"]
    assert sorted(a["pages"] for a in auto_doc["attempts"] if "pages" in a) == ["1-50", "51-100"]
    assert auto_doc["attempts"][-1]["task"] == "merge" and auto_doc["pages"] == 100
    given_doc, given_md, given_cl = runs["given"]
    assert len(given_doc["attempts"]) == 1 and "pages" not in given_doc["attempts"][0]
    assert sorted({c["page_idx"] for c in auto_cl}) == list(range(100))
    assert [c["page_idx"] for c in auto_cl] == sorted(c["page_idx"] for c in auto_cl)
    # every page's opening words, in page order, in both results
    firsts = [" ".join(page[0].split()[:6]) for page in mk.numbered_pages(100)]
    for md in (auto_md, given_md):
        at = [md.find(f) for f in firsts]
        assert all(i >= 0 for i in at) and at == sorted(at)


def test_settings_skip_pydantic_plugin_lookup_and_restore_the_variable(tmp_path, monkeypatch):
    """4. Settings are built with pydantic's plugin lookup off (no scan of every installed
    distribution's entry points) and the user's PYDANTIC_DISABLE_PLUGINS is left as it was,
    for the workers."""
    import importlib.metadata

    from mineru_cli import cli

    monkeypatch.chdir(tmp_path)
    scans: list = []
    real = importlib.metadata.entry_points

    def spy(*a, **k):
        scans.append(k.get("group"))
        return real(*a, **k)

    monkeypatch.setattr("pydantic.plugin._loader.entry_points", spy)
    monkeypatch.setattr("pydantic.plugin._loader._plugins", None)  # no answer cached from earlier models
    monkeypatch.delitem(sys.modules, "mineru_cli.settings", raising=False)  # models built again, under the spy
    for before in (None, "logfire"):
        if before is None:
            monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
        else:
            monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", before)
        s = cli._load_settings({"inputs": ["a"], "output": str(tmp_path / "o"), "workers": 3}, None)
        assert s.workers == 3 and s.output == str(tmp_path / "o")
        assert os.environ.get("PYDANTIC_DISABLE_PLUGINS") == before
    assert "pydantic" not in scans


def test_no_more_workers_than_tasks(tmp_path):
    """5. A run starts no more workers than it has tasks (documents or page windows): one CSV
    with --workers 2 runs on one worker; GPU lanes are filled in order."""
    from mineru_cli.run import fit_lanes
    from mineru_cli.jobs import Lane

    cpu = [Lane("cpu", {}, 4)]
    assert [l.workers for l in fit_lanes(cpu, 1)] == [1]
    assert [l.workers for l in fit_lanes(cpu, 3)] == [3]
    assert [l.workers for l in fit_lanes(cpu, 10)] == [4]
    assert [l.workers for l in fit_lanes(cpu, 0)] == [1]
    gpus = [Lane("gpu0", {"CUDA_VISIBLE_DEVICES": "0"}, 1), Lane("gpu1", {"CUDA_VISIBLE_DEVICES": "1"}, 1)]
    assert [(l.label, l.workers) for l in fit_lanes(gpus, 1)] == [("gpu0", 1)]
    assert [(l.label, l.workers) for l in fit_lanes(gpus, 5)] == [("gpu0", 1), ("gpu1", 1)]

    mk = load_make_examples()
    src = tmp_path / "in"
    src.mkdir()
    mk.write_csv(src / "one.csv", [["a", "b"], [1, 2]])
    for n, expected in ((1, 1), (2, 2)):
        if n == 2:
            mk.write_csv(src / "two.csv", [["c", "d"], [3, 4]])
        p = run_cli("convert", str(src), "-o", str(tmp_path / f"out{n}"), "--workers", "2",
                    "--report", str(tmp_path / f"r{n}.json"), env=cli_env(tmp_path))
        assert p.returncode == 0, p.stderr[-2000:]
        summary = load_report(tmp_path / f"r{n}.json")["summary"]
        assert summary["workers"] == expected and summary["converted"] == n, summary


def test_mineru_vlm_settings_without_a_config_file_equal_minerus_own(tmp_path):
    """``read_mineru_vlm_settings`` answers MinerU's defaults without importing ``mineru.config``
    when there is no configuration file and no MINERU_MODEL_VLM_* variable; with either, it
    asks MinerU. Each answer is compared with MinerU's own ``config.model.vlm``, read in a
    fresh process with the same environment."""
    home = tmp_path / "mineru-home"
    base = {k: v for k, v in os.environ.items() if not k.startswith("MINERU_") and not k.startswith("MINERU_VL")}
    base.update(MINERU_HOME=str(home), MINERU_MODEL_SOURCE="local")
    ours = ("import json, sys; from mineru_cli.backend import read_mineru_vlm_settings as r; v = r(); "
            "print(json.dumps([v.server_url, v.model, v.api_key, 'mineru.config' in sys.modules]))")
    theirs = ("import json; from mineru.config import config; v = config.model.vlm; "
              "print(json.dumps([v.server_url, v.model, v.api_key]))")

    def answer(code: str, env: dict) -> list:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    plain = answer(ours, base)
    assert plain == ["", "", "", False]
    assert answer(theirs, base) == plain[:3]
    assert not home.exists()

    env = dict(base, MINERU_MODEL_VLM_SERVER_URL=" http://127.0.0.1:30000/v1 ", MINERU_MODEL_VLM_MODEL="m")
    via_env = answer(ours, env)
    assert via_env[3] is True and via_env[:3] == answer(theirs, env)
    assert via_env[0] != env["MINERU_MODEL_VLM_SERVER_URL"], "MinerU normalizes the URL: the long way is needed"

    home.mkdir()
    (home / "config.yaml").write_text("model:\n  vlm:\n    server_url: http://127.0.0.1:30001\n", encoding="utf-8")
    via_file = answer(ours, base)
    assert via_file[3] is True and via_file[:3] == answer(theirs, base)
    assert via_file[0].startswith("http://127.0.0.1:30001")


def watching_script(watched: dict[str, str]) -> str:
    """A script for conftest.run_convert_watched: runs convert with each function of
    ``watched`` (``{label: "module.attribute"}`` in mineru_cli) counted, and prints
    ``WATCHED {label: sorted names}``: the document's relative path or the file's base name of
    each call (what a rerun reads of its local inputs)."""
    return r'''
import json, sys
from mineru_cli import discover, plan, sniff
WATCHED = %r
calls = {label: [] for label in WATCHED}
def counting(label, fn):
    def wrapper(first, *args, **kwargs):
        calls[label].append(getattr(first, "rel", None) or str(first).rsplit("/", 1)[-1])
        return fn(first, *args, **kwargs)
    return wrapper
for label, target in WATCHED.items():
    module, name = target.split(".")
    mod = {"discover": discover, "plan": plan, "sniff": sniff}[module]
    setattr(mod, name, counting(label, getattr(mod, name)))
from mineru_cli.convert import run_convert
from mineru_cli.settings import load_settings
code = run_convert(load_settings(json.loads(sys.argv[1])))
print("WATCHED " + json.dumps({k: sorted(v) for k, v in calls.items()}))
sys.exit(code)
''' % (watched,)


LOCAL_READS_SCRIPT = watching_script({"sniff": "sniff.sniff_local", "probe": "plan.pdf_probe"})


def test_rerun_reads_no_finished_local_input(tmp_path):
    """3. A rerun types a finished, unchanged local file (same size and mtime as its
    done-record) from the done-record: no file is opened to sniff its type and no PDF is
    opened to count pages (on 1,000 mixed documents that was 1 s of a 1.5 s rerun). A changed
    file is read and converted again; a changed ``--pages`` reads and probes the PDF."""
    mk = load_make_examples()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    mk.write_csv(src / "scores.csv", [["id", "score"], [1, 90]])
    mk.write_docx(src / "memo.docx", "Memo", ["The memo text."], [["a", "b"], ["1", "2"]])
    mk.write_text_pdf(src / "three.pdf", mk.numbered_pages(3), title="Three pages")
    env = cli_env(tmp_path)
    first = run_cli("convert", str(src), "-o", str(out), env=env, timeout=300)
    assert first.returncode == 0 and "3 converted" in first.stdout, first.stdout + first.stderr

    def rerun(name: str, **flags) -> tuple[dict, dict]:
        settings = {"inputs": [str(src)], "output": str(out), **flags}
        return run_convert_watched(LOCAL_READS_SCRIPT, settings, tmp_path / f"{name}.json", env)

    calls, docs = rerun("unchanged")
    assert calls == {"sniff": [], "probe": []}
    assert {k: d["code"] for k, d in docs.items()} == {"memo.docx": "done", "scores.csv": "done", "three.pdf": "done"}
    assert docs["three.pdf"]["pages"] == 3  # from the done-record
    # limits lowered on a rerun apply to documents about to be converted: finished ones stay finished
    calls, docs = rerun("limits", max_file_size=1, max_pages=1, dry_run=True)
    assert calls == {"sniff": [], "probe": []} and {d["code"] for d in docs.values()} == {"done"}

    mk.write_csv(src / "scores.csv", [["id", "score"], [1, 90], [2, 75]])
    calls, docs = rerun("changed")
    assert calls == {"sniff": ["scores.csv"], "probe": []}
    assert docs["scores.csv"]["status"] == "converted" and docs["memo.docx"]["code"] == "done"

    calls, docs = rerun("pages", pages="1-2", dry_run=True)
    assert calls == {"sniff": ["three.pdf"], "probe": ["three.pdf"]}
    assert docs["three.pdf"]["status"] == "pending" and docs["three.pdf"]["pages"] == 2  # of 3: --pages 1-2
    assert docs["three.pdf"]["reason"] == "output-affecting settings changed"

    # a done-record whose input is not an object is no record: converted again, no crash
    record = out / "memo.docx" / ".mineru-cli.done.json"
    record.write_text(record.read_text().replace('"input":{', '"input":"oops","was":{', 1))
    calls, docs = rerun("bad-record", dry_run=True)
    assert calls == {"sniff": ["memo.docx"], "probe": []} and docs["memo.docx"]["status"] == "pending"
    # a record that says "pdf" for a DOCX: a --pages change makes it read, it is a DOCX (for which
    # --pages does not count), and so it is finished after all
    run_cli("convert", str(src), "-o", str(out), "--force", env=env, timeout=300)
    record.write_text(record.read_text().replace('"type":"docx"', '"type":"pdf"', 1))
    calls, docs = rerun("wrong-type", pages="1-2", dry_run=True)
    assert "memo.docx" in calls["sniff"] and docs["memo.docx"]["code"] == "done"

    (src / "empty.pdf").write_bytes(b"")  # a new file is read as before: an empty .pdf fails
    calls, docs = rerun("new", dry_run=True)
    assert calls == {"sniff": ["empty.pdf"], "probe": []}
    assert docs["empty.pdf"]["code"] == "empty" and docs["empty.pdf"]["status"] == "failed"


TOUCH_SCRIPT = watching_script({"sniff": "sniff.sniff_local", "hash": "plan.fingerprint_local"})


def test_touched_input_is_hashed_once_then_trusted_again(tmp_path):
    """A finished input whose modification time changed but whose bytes did not (``touch``, a
    copy, a checkout) is hashed, found the same and skipped; its done-record then takes the
    new time, so the next rerun neither hashes nor reads it. Before, the record kept the old
    time and the file was hashed (and sniffed) on every rerun. ``--dry-run`` writes nothing."""
    mk = load_make_examples()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    mk.write_csv(src / "scores.csv", [["id", "score"], [1, 90]])
    mk.write_html(src / "page.html", "Page", "Opening hours", ["Open daily from nine."])
    env = cli_env(tmp_path)
    first = run_cli("convert", str(src), "-o", str(out), env=env, timeout=300)
    assert first.returncode == 0 and "2 converted" in first.stdout, first.stdout + first.stderr
    record_path = out / "scores.csv" / ".mineru-cli.done.json"
    before = json.loads(record_path.read_text())
    st = (src / "scores.csv").stat()
    os.utime(src / "scores.csv", (st.st_atime, st.st_mtime + 100))
    new_mtime = (src / "scores.csv").stat().st_mtime

    def rerun(name: str, **flags) -> tuple[dict, dict]:
        settings = {"inputs": [str(src)], "output": str(out), **flags}
        return run_convert_watched(TOUCH_SCRIPT, settings, tmp_path / f"{name}.json", env)

    calls, docs = rerun("dry", dry_run=True)
    assert calls == {"sniff": ["scores.csv"], "hash": ["scores.csv"]} and docs["scores.csv"]["code"] == "done"
    assert json.loads(record_path.read_text()) == before  # a dry run writes nothing

    calls, docs = rerun("touched")
    assert calls == {"sniff": ["scores.csv"], "hash": ["scores.csv"]}
    assert {k: d["code"] for k, d in docs.items()} == {"page.html": "done", "scores.csv": "done"}
    after = json.loads(record_path.read_text())
    assert after["input"]["mtime"] == new_mtime != before["input"]["mtime"]
    assert {**after, "input": {**after["input"], "mtime": before["input"]["mtime"]}} == before
    assert not (out / "scores.csv" / ".mineru-cli.done.json.tmp").exists()

    calls, docs = rerun("trusted")
    assert calls == {"sniff": [], "hash": []}
    assert {k: d["code"] for k, d in docs.items()} == {"page.html": "done", "scores.csv": "done"}


GC_SCRIPT = r"""
import gc, json, weakref
before = gc.get_threshold()
from mineru_cli.engine import init_worker
init_worker(quiet_mineru=True)
after, frozen = gc.get_threshold(), gc.get_freeze_count()

class Node:
    pass

# reference cycles that hold a payload are still reclaimed by the collector alone
gone = []
for _ in range(20):
    a, b = Node(), Node()
    a.other, b.other, a.payload = b, a, bytearray(1 << 20)
    weakref.finalize(a, gone.append, 1)
    del a, b
junk = [[] for _ in range(50_000)]  # allocations that trigger generation-0 passes
del junk
print(json.dumps({"before": before, "after": after, "frozen": frozen, "reclaimed": len(gone)}))
"""


def test_worker_runs_the_garbage_collector_less_often(tmp_path):
    """A worker (``engine.init_worker``, what the pool runs in each new worker process) freezes
    what the MinerU import made and raises the collector's thresholds (``engine.tune_gc``; why
    and the measurement: its docstring and benchmarks/RESULTS.md); cyclic garbage is still
    collected without an explicit ``gc.collect()``."""
    proc = subprocess.run([sys.executable, "-c", GC_SCRIPT], capture_output=True, text=True,
                          env=cli_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    from mineru_cli.worker import WORKER_GC_THRESHOLD

    assert tuple(got["before"]) == (700, 10, 10)  # CPython's default
    assert tuple(got["after"]) == WORKER_GC_THRESHOLD == (10_000, 20, 100)
    assert got["frozen"] > 20_000  # objects of the MinerU import, out of every collection
    assert got["reclaimed"] == 20
