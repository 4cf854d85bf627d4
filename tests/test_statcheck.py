"""The rerun's stat helper (``statcheck``): a large local rerun stats done-records and result
files in a second process, and must reach exactly the verdicts the in-process checks reach.

- ``check`` on real files: signature, a deleted and a truncated result file, a done-record
  changed since it was indexed, no done-record.
- A rerun whose walk outlasts the first window (the folder ``zz-late`` stalls the walk, as in
  ``test_scale``): the helper checks the finished documents, a deleted and a truncated result
  are converted again, a done-record rewritten by hand is read, the rest is skipped.
- The same rerun with a helper that dies on its first request: the same verdicts, checked in
  the run's own process.
- A run killed with SIGKILL while its helper lives: the helper ends by itself.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import by_input, cli_env, load_make_examples, load_report, tagged_processes
from test_scale import DONE, RUN_TIMEOUT, convert, tiny_docs

from mineru_cli import statcheck
from mineru_cli.plan import DONE_REASON
from mineru_cli.record_index import RecordIndex, local_signature
from mineru_cli.records import result_checker
from mineru_cli.store import open_output

# A rerun through run_convert with discover._walk_local wrapped: walking a folder named zz-late
# sleeps STALL seconds first (a stall longer than the first window's 0.5 s: the rest of the
# walk is planned in the planner thread, which uses the helper).
STALL_SCRIPT = r'''
import json, os, sys, time
from mineru_cli import discover
settings = json.loads(sys.argv[1])
stall = float(os.environ["STALL"])
walk = discover._walk_local
def late_walk(folder, *args, **kwargs):
    if os.path.basename(folder) == "zz-late":
        time.sleep(stall)
    yield from walk(folder, *args, **kwargs)
discover._walk_local = late_walk
from mineru_cli.convert import run_convert
from mineru_cli.settings import load_settings
code = run_convert(load_settings(settings))
print("WATCHED " + json.dumps(code))
sys.exit(code)
'''


def finished_tree(tmp: Path, early: int = 40, late: int = 3) -> tuple[Path, Path, list[str]]:
    """``early`` tiny documents in ``src/a`` and ``late`` in ``src/zz-late``, converted (exit 0)
    into ``out``. Returns (src, out, the documents' relative paths)."""
    src, out = tmp / "src", tmp / "out"
    names = ["a/" + n for n in tiny_docs(src / "a", range(early))]
    names += ["zz-late/" + n for n in tiny_docs(src / "zz-late", range(early, early + late))]
    proc = convert(str(src), "-o", str(out), "--workers", "2", env=cli_env(tmp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return src, out, names


def result_files(out: Path, rel: str) -> list[Path]:
    """The result files a done-record lists, as paths."""
    record = json.loads((out / rel / DONE).read_text(encoding="utf-8"))
    return [out / rel / f["name"] for f in record["files"]]


def damage(out: Path, names: list[str]) -> dict[str, str]:
    """Delete a result file of one document, truncate one of another, rewrite the done-record of
    a third by hand (same content, new inode: its index entry no longer counts). Returns
    {what: relative path}."""
    deleted, truncated, rewritten = names[3], names[6], names[9]
    result_files(out, deleted)[0].unlink()
    victim = result_files(out, truncated)[-1]
    victim.write_bytes(victim.read_bytes()[:5])
    done = out / rewritten / DONE
    data = done.read_bytes()
    done.unlink()
    done.write_bytes(data)
    return {"deleted": deleted, "truncated": truncated, "rewritten": rewritten}


def stalled_rerun(tmp: Path, src: Path, out: Path, extra: dict | None = None, **env: str) -> tuple[dict, dict]:
    """The rerun with the walk stalled 2 s at ``zz-late`` (``extra``: more settings). Returns
    (documents by input, summary)."""
    report = tmp / "rerun.json"
    settings = {"inputs": [str(src)], "output": str(out), "workers": 2, "report": str(report), **(extra or {})}
    proc = subprocess.run([sys.executable, "-c", STALL_SCRIPT, json.dumps(settings)], capture_output=True, text=True,
                          env=cli_env(tmp, STALL="2", **env), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = load_report(report)
    return by_input(data), data["summary"]


def _plan_in_process(src: Path, out: Path, settings: dict) -> dict:
    """The in-process verdicts on ``src`` (``plan.plan`` over discovery's documents and the
    done-records read without a helper): ``{relative path: PlannedDocument}``."""
    from mineru_cli.discover import Discovery, discover_iter
    from mineru_cli.plan import kind_from_done_record, plan
    from mineru_cli.records import RecordReader
    from mineru_cli.settings import load_settings
    from mineru_cli.sniff import sniff_documents

    s = load_settings(settings)
    docs = list(discover_iter([str(src)], Discovery()))
    output = open_output(str(out))
    reader = RecordReader(output)
    keys = [d.rel for d in docs]
    records = reader.read(keys)
    for d, k in zip(docs, keys):
        kind_from_done_record(d, records.get(k))
    sniff_documents(docs, {})
    planned = plan(docs, s, output, "flash", keys=keys, records=records, missing_files=reader.missing)
    reader.close(write_index=lambda: False)
    return {p.source.rel: p for p in planned}


def test_check_on_real_files_gives_the_in_process_verdicts(tmp_path):
    """``statcheck.check`` on a converted OUTPUT, against the in-process checks
    (``records.result_checker``, ``plan.plan``): "done" for exactly the finished documents the
    plan skips as done without reading them, with their type and page count; the same
    signature as ``record_index.local_signature``; the same gone files for a deleted and a
    truncated result; files not checked (None) when the done-record changed since it was
    indexed; ``None`` without a done-record. Not "done" (left to the run): an input of another
    size, one only touched (the run hashes it), an item sent without size and time, another
    run's settings, no expectations."""
    from mineru_cli.plan import finished_expectations
    from mineru_cli.settings import load_settings

    src, out, names = finished_tree(tmp_path, early=12, late=0)
    what = damage(out, names)
    grown, touched = names[1], names[2]
    with open(src / grown, "ab") as fh:
        fh.write(b"\n")
    st = os.stat(src / touched)
    os.utime(src / touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    index = RecordIndex(open_output(str(out)))
    known = index.lookup(names)
    assert set(known) == set(names), "the first run indexed every document"
    index.close()
    settings = {"inputs": [str(src)], "output": str(out)}
    expect = finished_expectations(load_settings(settings), "flash")
    judge = statcheck.Index(str(out / ".mineru-cli" / "index.sqlite"))
    rows = judge.rows(names + ["a/nothing.csv"])
    assert set(rows) == set(names)

    def inputs(k):
        st = os.stat(src / k)
        return (k, st.st_size, st.st_mtime)

    items = [inputs(k) for k in names] + [("a/nothing.csv", 5, 1.0)]
    answer = statcheck.check(str(out), items, rows, expect)
    assert answer[-1] is None
    planned = _plan_in_process(src, out, settings)
    checker = result_checker(open_output(str(out)))
    finished = []
    for k, got in zip(names, answer):
        p = planned[k]
        if got[0] == "done":
            finished.append(k)
            assert (p.action, p.code, p.reason) == ("skip", "done", DONE_REASON), k
            assert got[1:] == (p.source.kind, p.pages) == (known[k][1]["input"]["type"], known[k][1]["pages"]), k
            continue
        assert got[0] == local_signature(os.stat(out / k / DONE)), k
        if k == what["rewritten"]:
            assert got[0] != known[k][0] and got[1] is None
            continue
        assert got[1] == checker(k, known[k][1]), k
    assert sorted(finished) == sorted(set(names) - {grown, touched, *what.values()})
    assert planned[touched].action == "skip" and planned[grown].action == "convert"  # hashed in the run
    assert answer[names.index(what["deleted"])][1] == [result_files(out, what["deleted"])[0].name]
    assert answer[names.index(what["truncated"])][1] == [result_files(out, what["truncated"])[-1].name]
    k = finished[0]
    assert statcheck.check(str(out), [(k, None, None)], rows, expect) == [(known[k][0], [])]
    assert statcheck.check(str(out), [inputs(k)], rows, None) == [(known[k][0], [])]
    other = finished_expectations(load_settings({**settings, "format": ["md"]}), "flash")
    assert statcheck.check(str(out), [inputs(k)], rows, other) == [(known[k][0], [])]
    # --pages counts for PDFs only: these CSV/HTML documents stay finished
    paged = finished_expectations(load_settings({**settings, "pages": "1-2"}), "flash")
    assert paged["pdf"] != expect["pdf"] and statcheck.check(str(out), [inputs(k)], rows, paged)[0][0] == "done"


def _check_verdicts(docs: dict, names: list[str], what: dict) -> None:
    assert sorted(docs) == sorted(names)
    again = sorted(k for k, d in docs.items() if d["status"] == "converted")
    assert again == sorted([what["deleted"], what["truncated"]]), again
    for k, d in docs.items():
        if k not in again:
            assert (d["status"], d["code"]) == ("skipped", "done"), (k, d)


def test_a_stalled_rerun_checks_in_the_helper_and_converts_what_was_damaged(tmp_path):
    """43 finished documents, three damaged (:func:`damage`); the rerun's walk outlasts the first
    window: the helper checks the documents planned in the planner thread. Exactly the deleted
    and the truncated result are converted again; the rewritten done-record is read and its
    document skipped; ``checked_in_helper`` counts the documents the helper checked,
    ``finished_in_helper`` those it found finished (all but the three damaged)."""
    src, out, names = finished_tree(tmp_path)
    what = damage(out, names)
    docs, summary = stalled_rerun(tmp_path, src, out)
    _check_verdicts(docs, names, what)
    counts = summary["done_records"]
    assert counts["read"] == 1, counts  # the rewritten done-record
    assert counts["from_index"] == len(names) - 1, counts
    # every document went through the planner thread: the walk stalled before the window closed
    assert counts["checked_in_helper"] == len(names) - 1, counts
    assert counts["finished_in_helper"] == len(names) - 3, counts  # not the three damaged
    # and a third run finds it all finished, through the helper again
    docs, summary = stalled_rerun(tmp_path, src, out)
    assert {(d["status"], d["code"]) for d in docs.values()} == {("skipped", "done")}
    counts = summary["done_records"]
    assert counts["checked_in_helper"] == counts["finished_in_helper"] == len(names), counts


def test_a_helper_that_dies_leaves_the_checks_to_the_run(tmp_path):
    """The helper exits on its first request (test hook ``MINERU_CLI_TEST_STATCHECK_EXIT``): the
    run checks in its own process, with the same verdicts and exit 0."""
    src, out, names = finished_tree(tmp_path)
    what = damage(out, names)
    docs, summary = stalled_rerun(tmp_path, src, out, MINERU_CLI_TEST_STATCHECK_EXIT="1")
    _check_verdicts(docs, names, what)
    counts = summary["done_records"]
    assert counts["checked_in_helper"] == counts["finished_in_helper"] == 0 and counts["read"] == 1, counts
    assert counts["from_index"] == len(names) - 1, counts


def test_the_helper_s_skips_are_the_run_s_own(tmp_path):
    """A finished tree with PDFs beside the CSV and HTML files: a rerun through the helper and
    one whose helper dies at once (checked in the run's own process) write the same report
    lines, document for document (status, code, reason, tier, pages, type, output). Again
    with ``--pages 1``: a PDF's settings are then not the recorded ones, so the helper leaves
    the PDFs to the run (which finds ``--pages 1`` selects the same page of these one-page
    PDFs and skips them with its own reason); the CSV and HTML files stay finished in the helper."""
    mk = load_make_examples()
    src = tmp_path / "src"
    names = ["a/" + n for n in tiny_docs(src / "a", range(20))]
    names += ["zz-late/" + n for n in tiny_docs(src / "zz-late", range(20, 23))]
    for folder, i in (("a", 1), ("a", 2), ("zz-late", 3)):
        mk.write_text_pdf(src / folder / f"paper{i}.pdf", [[f"A one-page paper number {i}.", "Some text."]])
        names.append(f"{folder}/paper{i}.pdf")
    out = tmp_path / "out"
    proc = convert(str(src), "-o", str(out), "--workers", "2", env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for extra, in_helper in ((None, len(names)), ({"pages": "1"}, len(names) - 3)):
        helped, summary = stalled_rerun(tmp_path, src, out, extra)
        assert summary["done_records"]["finished_in_helper"] == in_helper, summary["done_records"]
        alone, summary = stalled_rerun(tmp_path, src, out, extra, MINERU_CLI_TEST_STATCHECK_EXIT="1")
        assert summary["done_records"]["finished_in_helper"] == 0, summary["done_records"]
        assert sorted(helped) == sorted(names)
        assert helped == alone
        assert {(d["status"], d["code"]) for d in helped.values()} == {("skipped", "done")}
        pdfs = {k: d for k, d in helped.items() if k.endswith(".pdf")}
        assert {(d["type"], d["pages"], d["tier"]) for d in pdfs.values()} == {("pdf", 1, "flash")}
        assert {d["reason"] == DONE_REASON for d in pdfs.values()} == {extra is None}


def test_the_helper_ends_when_its_run_is_killed(tmp_path, process_tag):
    """A rerun stalled 120 s in its walk, its helper alive (seen by its command line); the run is
    killed with SIGKILL (the CLI process only, not its group): the helper ends by itself (end of
    input) and no process of the run is left."""
    src, out, _names = finished_tree(tmp_path)
    settings = {"inputs": [str(src)], "output": str(out), "workers": 2, "report": str(tmp_path / "r.json")}
    p = subprocess.Popen([sys.executable, "-c", STALL_SCRIPT, json.dumps(settings)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=cli_env(tmp_path, STALL="120", MINERU_CLI_TEST_TAG=process_tag))
    try:
        deadline, helper = time.monotonic() + 60, None
        while helper is None and time.monotonic() < deadline and p.poll() is None:
            for proc in tagged_processes(process_tag):
                try:
                    if "mineru_cli.statcheck" in proc.cmdline():
                        helper = proc
                except Exception:  # noqa: BLE001 - it may end meanwhile
                    continue
            time.sleep(0.05)
        assert helper is not None, f"no helper seen (run rc {p.poll()})"
        assert helper.ppid() == p.pid
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
        helper.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    left = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = tagged_processes(process_tag)
        if not left:
            break
        time.sleep(0.1)
    assert not left, [(x.pid, x.cmdline()) for x in left]


def test_the_skipped_line_is_the_report_line_byte_for_byte(tmp_path):
    """``report.skipped_json`` (a finished document's line without a ``DocumentReport``) is
    ``document_json`` of the same document: plain, non-ASCII, quotes and backslashes, a file name
    that is not UTF-8, None values, a value of an unexpected type (taken by document_json), and
    an ``@`` (a possible credential: redacted the same way). ``Reporter.skipped`` writes the same
    report and events file as ``add`` + ``finished``."""
    from mineru_cli.report import DocumentReport, Reporter, document_json, skipped_json

    cases = [("a/b.pdf", "done", "already converted (done-record matches input and settings)", "flash", 3,
              "/o/a/b.pdf/", "pdf"),
             ('é "q" \\ \udcff.pdf', "done", "r", None, None, None, None),
             ("x", None, "", "pipeline", 0, "o\n\t", "csv"),
             ("x", "done", "r", "flash", True, "o", "html"),
             ("x", "done", "r", "flash", 2.0, "o", "html"),
             ("s3://user:secret@bucket/x.pdf", "done", "r", "flash", 1, "s3://user:secret@b/o/", "pdf")]
    for c in cases:
        doc = DocumentReport(input=c[0], status="skipped", code=c[1], reason=c[2], tier=c[3], pages=c[4],
                             output=c[5], type=c[6])
        assert skipped_json(*c) == document_json(doc), c
    assert b"secret" not in skipped_json(*cases[-1])

    written = {}
    for way in ("skipped", "finished"):
        rep = Reporter(quiet=True, keep=True, stream=io.StringIO(), events=str(tmp_path / f"{way}.jsonl"))
        for c in cases:
            if way == "skipped":
                rep.skipped(*c)
            else:
                doc = rep.add(DocumentReport(input=c[0], tier=c[3], pages=c[4], type=c[6]))
                doc.status, doc.code, doc.reason, doc.output = "skipped", c[1], c[2], c[5]
                rep.finished(doc, advance=False)
        rep.write_json(str(tmp_path / f"{way}.json"))
        rep.close_events()
        report = json.loads((tmp_path / f"{way}.json").read_text(encoding="utf-8"))
        events = (tmp_path / f"{way}.jsonl").read_text(encoding="utf-8").splitlines()[1:-1]
        written[way] = (report["documents"], {k: report["summary"][k] for k in ("skipped", "total")}, events)
    assert written["skipped"] == written["finished"]
    assert written["skipped"][1] == {"skipped": len(cases), "total": len(cases)}


def _done_folders(out: Path, n: int, prefix: str) -> list[str]:
    """``n`` result folders under ``out`` holding only a done-record; returns their keys."""
    keys = []
    for i in range(n):
        key = f"{prefix}/doc{i:04d}.pdf"
        (out / key).mkdir(parents=True)
        (out / key / DONE).write_text("{}")
        keys.append(key)
    return keys


def _indexed(out: Path, keys: list[str], files: list[tuple[str, int]]) -> None:
    """Index each of ``keys`` (result folders made by :func:`_done_folders`) with a done-record
    listing ``files`` ((name, size)), as a run's flush does; the done-records on disk stay."""
    index = RecordIndex(open_output(str(out)))
    for k in keys:
        record = {"input": {"size": 1, "mtime": 1.0, "fingerprint": "sha256:x", "type": "pdf"},
                  "settings": {"tier": "flash"}, "files": [{"name": n, "size": z} for n, z in files], "pages": 1}
        index.put(k, local_signature(os.stat(out / k / DONE)), record)
    index.flush()
    index.close()


def test_large_answers_and_requests_in_flight_do_not_wait_for_each_other(tmp_path):
    """Two requests of 256 documents each, keys of 300 characters, every index entry listing 20
    long file names that do not exist: each answer and each request is more than a pipe holds
    (64 KiB). The second request is sent before the first answer is taken (the planner's
    look-ahead): a helper that waited on a full answer pipe while the run waited on a full
    request pipe would hang both. Both answers come, each with the 20 names gone."""
    import pickle
    import threading

    out = tmp_path / "out"
    names = [f"images/{'%064x' % i}.jpg" for i in range(20)]
    batches = []
    for prefix in ("a", "b"):
        keys = _done_folders(out, 256, f"{prefix}/{'x' * 200}/{'y' * 100}")
        _indexed(out, keys, [(n, 1234) for n in names])
        batches.append([(k, 1, 1.0) for k in keys])
    judge = statcheck.Index(str(out / ".mineru-cli" / "index.sqlite"))
    rows = judge.rows([k for k, _z, _t in batches[0]])
    assert len(pickle.dumps((str(out), batches[1]))) > 65536
    assert len(pickle.dumps(statcheck.check(str(out), batches[0], rows, None))) > 4 * 65536
    helper = statcheck.StatHelper()
    got: list = []

    def talk() -> None:
        helper.setup(str(out / ".mineru-cli" / "index.sqlite"), None)
        helper.ask(str(out), batches[0])
        helper.ask(str(out), batches[1])
        got.append(helper.answer())
        got.append(helper.answer())

    t = threading.Thread(target=talk, daemon=True)
    t.start()
    t.join(60)
    try:
        assert not t.is_alive(), "the run and its helper wait for each other"
        assert len(got) == 2 and [len(a) for a in got] == [256, 256]
        for answer in got:
            assert all(entry[1] == names for entry in answer)
    finally:
        helper.close()


def test_no_helper_after_close_and_an_empty_read_keeps_it(tmp_path):
    """A read of no keys (a chunk whose documents all have a problem) between a chunk asked for
    and its read does not drop the helper; after ``close`` (the run ending while the planner
    thread is still busy) no helper is started again."""
    import psutil

    from mineru_cli.records import RecordReader

    out = tmp_path / "out"
    keys = _done_folders(out, 10, "a")
    reader = RecordReader(open_output(str(out)))
    reader.use_helper()
    reader.ask(keys)
    assert reader.read([]) == {}
    got = reader.read(keys)
    assert set(got) == set(keys) and all(v == {} for v in got.values())  # read: the index lacks them
    assert reader.read([]) == {}
    assert reader.asks_ahead, "the helper was kept"
    me = psutil.Process()
    assert [p for p in me.children() if "mineru_cli.statcheck" in " ".join(p.cmdline())]
    reader.close(write_index=lambda: False)
    reader.ask(keys)
    assert reader.read(keys) is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in me.children() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                and "mineru_cli.statcheck" in " ".join(p.cmdline())]
        if not left:
            break
        time.sleep(0.1)
    assert not left, "a helper lives on after close"


def test_a_damaged_index_entry_is_read_not_judged(tmp_path):
    """An index entry whose files are not a JSON array of names and sizes: the helper does not
    judge it (files None), so the run reads the done-record itself; an odd trailing name is
    left out as ``RecordIndex.lookup`` leaves it out. A helper whose index cannot be read
    answers a string: the run checks that chunk itself and drops the helper."""
    from mineru_cli.records import RecordReader

    out = tmp_path / "out"
    (key,) = _done_folders(out, 1, "a")
    (out / key / "x.md").write_text("12345")
    sig = local_signature(os.stat(out / key / DONE))
    expect = {"pdf": '{"tier":"flash"}'}

    def row(files):
        return {key: (sig, 1, 1.0, "sha256:x", "pdf", '{"tier":"flash"}', files, 1)}

    for files in ('["x.md", 5, "y', '{"x.md": 5}', "5", "", None):
        assert statcheck.check(str(out), [(key, 1, 1.0)], row(files), expect) == [(sig, None)], files
    assert statcheck.check(str(out), [(key, 1, 1.0)], row('["x.md", 5, "y.md"]'), expect) == [("done", "pdf", 1)]
    assert statcheck.check(str(out), [(key, 1, 1.0)], row('["x.md", 4]'), expect) == [(sig, ["x.md"])]

    helper = statcheck.StatHelper()
    try:
        helper.setup(str(tmp_path / "not-an-index"), expect)  # not there: SQLite cannot open it read-only
        helper.ask(str(out), [(key, 1, 1.0)])
        answer = helper.answer(timeout=30)
    finally:
        helper.close()
    assert isinstance(answer, str) and answer.startswith("cannot open the done-record index"), answer

    # an index readable when the run opened it, damaged before the helper opens it
    _indexed(out, [key], [("x.md", 5)])
    reader = RecordReader(open_output(str(out)))
    assert reader.index.readable
    (out / ".mineru-cli" / "index.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x01" * 4000)
    reader.use_helper(expect)
    reader.ask([key], [(1, 1.0)])
    try:
        assert reader.read([key]) == {key: {}}  # the done-record on disk, read in the run
        assert not reader.asks_ahead, "the helper answered that it cannot read the index: dropped"
        assert reader.in_helper == reader.finished_in_helper == 0 and reader.from_storage == 1
    finally:
        reader.close(write_index=lambda: False)


def test_an_index_found_damaged_in_the_run_stops_the_helper_s_verdicts(tmp_path):
    """Two finished result folders, indexed; the entry of the second has settings that are not
    JSON. The helper finds the first finished and the second current but not this run's (its
    settings text differs); the run, decoding the second, finds the index damaged: it uses
    nothing of that answer, drops the helper and reads both done-records itself (as a run
    without a helper does once its index is damaged)."""
    import sqlite3

    from mineru_cli.records import Finished, RecordReader

    out = tmp_path / "out"
    keys = _done_folders(out, 2, "a")
    for k in keys:
        (out / k / "x.md").write_text("12345")
    _indexed(out, keys, [("x.md", 5)])
    con = sqlite3.connect(out / ".mineru-cli" / "index.sqlite")
    con.execute("UPDATE records SET settings = '{bad' WHERE key = ?", (keys[1].encode(),))
    con.commit()
    con.close()
    reader = RecordReader(open_output(str(out)))
    assert reader.index.readable
    reader.use_helper({"pdf": '{"tier":"flash"}'})
    try:
        reader.ask(keys[:1], [(1, 1.0)])
        assert reader.read(keys[:1]) == {keys[0]: Finished("pdf", 1)}  # the helper's verdict, taken
        reader.ask(keys, [(1, 1.0), (1, 1.0)])
        got = reader.read(keys)
        assert got == {keys[0]: {}, keys[1]: {}}, got  # the done-records on disk ("{}"), read here
        assert reader.index.damaged and not reader.asks_ahead
        assert (reader.finished_in_helper, reader.from_storage) == (1, 2)
    finally:
        reader.close(write_index=lambda: False)


def test_index_paths_with_characters_uris_give_a_meaning_to(tmp_path, monkeypatch):
    """OUTPUT in a folder named with ``%``, ``?``, ``#`` and a space: the run and the helper open
    its index (a SQLite ``file:`` URI of the path as it is), also through a path that starts
    with ``//``. ``MINERU_CLI_TRUST_MTIME=0``: no expectations, so nothing is judged finished
    without reading."""
    from mineru_cli import plan
    from mineru_cli.settings import load_settings

    out = tmp_path / "o %41?x=1#y"
    keys = _done_folders(out, 3, "a")
    _indexed(out, keys, [("x.md", 5)])
    index = RecordIndex(open_output(str(out)))
    try:
        assert index.readable and set(index.lookup(keys)) == set(keys), index.problem
    finally:
        index.close()
    path = str(out / ".mineru-cli" / "index.sqlite")
    assert set(statcheck.Index(path).rows(keys)) == set(keys)
    assert set(statcheck.Index("/" + path).rows(keys)) == set(keys)
    assert statcheck.sqlite_uri("//tmp/a b", "ro") == "file:///tmp/a%20b?mode=ro"

    s = load_settings({"inputs": [str(tmp_path)], "output": str(out)})
    assert plan.finished_expectations(s, "flash") is not None
    monkeypatch.setenv("MINERU_CLI_TRUST_MTIME", "0")
    plan._trust_mtime.cache_clear()
    try:
        assert plan.finished_expectations(s, "flash") is None
    finally:
        monkeypatch.delenv("MINERU_CLI_TRUST_MTIME")
        plan._trust_mtime.cache_clear()


def test_report_lines_with_a_registered_secret_are_redacted_and_others_are_not_walked(monkeypatch):
    """With a secret registered (``AWS_SECRET_ACCESS_KEY`` in the environment of most S3 users):
    a line holding it, as it is or as JSON escapes it (a quote, a backslash, non-ASCII), has it
    replaced by ``***`` in ``skipped_json`` and ``document_json`` alike; a line without it is
    the plain encoding, byte for byte (``redact.may_hold_secret`` says so without redacting)."""
    from mineru_cli import redact
    from mineru_cli.report import DocumentReport, document_json, skipped_json

    monkeypatch.setattr(redact, "_SECRETS", set())
    monkeypatch.setattr(redact, "_ORDER", [])
    for secret in ("s3cr3t-Value", 'q"uo\\te-é'):
        redact.register_secret(secret)
    plain = ("a/b.pdf", "done", "already converted", "flash", 1, "/o/a/b.pdf/", "pdf")
    assert not redact.may_hold_secret(skipped_json(*plain).decode())
    assert skipped_json(*plain) == json.dumps(
        DocumentReport(input="a/b.pdf", status="skipped", code="done", reason="already converted", tier="flash",
                       pages=1, output="/o/a/b.pdf/", type="pdf").__dict__, ensure_ascii=False).encode()
    for name in ("a/s3cr3t-Value.pdf", 'a/q"uo\\te-é.pdf'):
        c = (name, "done", "r", "flash", 1, f"/o/{name}/", "pdf")
        doc = DocumentReport(input=name, status="skipped", code="done", reason="r", tier="flash", pages=1,
                             output=f"/o/{name}/", type="pdf")
        line = skipped_json(*c)
        assert line == document_json(doc)
        assert json.loads(line)["input"] == "a/***.pdf" and json.loads(line)["output"] == "/o/a/***.pdf/"
