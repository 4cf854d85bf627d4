"""A run's cost in the parent must not grow with the run (issue 17), seen from outside.

Real CLI subprocesses, real worker processes, real MinerU; S3 is the session's moto server
(``ThreadedMotoServer`` on loopback) behind ``tests/s3proxy.py``, which counts every request by
S3 operation. What is checked:

- a rerun over S3 makes requests per listing page, not per document (and writes nothing);
- the ``--events`` file of a run killed with SIGKILL is valid JSON Lines up to its last line,
  and a rerun finishes the job;
- documents are converted while a local walk is still going on;
- progress: ``--quiet`` progress lines off a terminal, the rich bar on a pseudo-terminal;
- the done-record index (``OUTPUT/.mineru-cli/index.sqlite``): used while signatures match,
  bypassed for a changed done-record, rebuilt when damaged, and never hiding a missing result;
- the JSON report of a couple of hundred documents of very different sizes: every input once,
  in discovery order, each with exactly the keys of ``report.DocumentReport``.

No test asserts a duration: the machine has 2 cores and other jobs run beside the suite.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import by_input, cli_env, load_make_examples, load_report, run_cli, s3_env, tagged_processes

mk = load_make_examples()

DONE = ".mineru-cli.done.json"
INDEX = Path(".mineru-cli") / "index.sqlite"
RUN_TIMEOUT = 240  # seconds: a hang fails the test instead of blocking the suite
PAGE = 10  # keys per ListObjectsV2 page in the S3 tests (MINERU_CLI_LIST_PAGE_SIZE)
WRITE_OPS = ("PutObject", "DeleteObject", "DeleteObjects", "CreateMultipartUpload", "UploadPart",
             "CompleteMultipartUpload", "AbortMultipartUpload", "PutObjectTagging")


# --- helpers ---------------------------------------------------------------------------------------



def tiny_doc(folder: Path, i: int, width: int = 3) -> Path:
    """A tiny document ``doc<i>.csv`` (even ``i``) or ``doc<i>.html`` (odd) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if i % 2 == 0:
        path = folder / f"doc{i:0{width}d}.csv"
        mk.write_csv(path, [["item", "count"], [f"thing {i}", str(i)]])
    else:
        path = folder / f"doc{i:0{width}d}.html"
        mk.write_html(path, f"Page {i}", f"Heading {i}", [f"Paragraph number {i}."])
    return path


def tiny_docs(folder: Path, numbers) -> list[str]:
    """:func:`tiny_doc` for each of ``numbers``; returns the file names."""
    return [tiny_doc(folder, i).name for i in numbers]


def put_tiny_docs(s3_server, bucket: str, prefix: str, numbers, tmp: Path) -> list[str]:
    """Tiny documents (:func:`tiny_doc`) under ``bucket/prefix/``, written straight to moto (not
    through the proxy). Returns their names."""
    fs = s3_server.fs()
    names = []
    for i in numbers:
        local = tiny_doc(tmp, i)
        fs.pipe_file(f"{bucket}/{prefix}/{local.name}", local.read_bytes())
        names.append(local.name)
    return names


def s3_objects(s3_server, bucket: str, prefix: str) -> list[str]:
    """Every key under ``bucket/prefix/`` (s3fs straight to moto, not through the proxy)."""
    return sorted(s3_server.fs().find(f"{bucket}/{prefix}"))


def ops(proxy) -> dict[str, int]:
    """Requests the proxy saw, by S3 operation."""
    counts: dict[str, int] = {}
    for r in proxy.requests():
        counts[r.op] = counts.get(r.op, 0) + 1
    return counts


def convert(*args: str, env: dict, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    proc = run_cli("convert", *args, env=env, timeout=timeout)
    return proc


def statuses(report: dict) -> dict[str, str]:
    return {k: d["status"] for k, d in by_input(report).items()}


# --- 1. a rerun over S3 costs listing pages, not requests per document ----------------------------

class S3Rerun:
    """One S3 layout under test: inputs (``in_url``: an S3 prefix or a local folder) and OUTPUT
    (``out_url``: an S3 prefix or a local folder), run through the counting proxy."""

    def __init__(self, s3_server, proxy, tmp: Path, bucket: str, *, s3_in: bool, s3_out: bool) -> None:
        self.s3, self.proxy, self.tmp, self.bucket = s3_server, proxy, tmp, bucket
        self.s3_in, self.s3_out = s3_in, s3_out
        self.src = tmp / "src"
        self.in_url = f"s3://{bucket}/in" if s3_in else str(self.src)
        self.out_url = f"s3://{bucket}/out" if s3_out else str(tmp / "out")
        self.env = s3_env(tmp, MINERU_CLI_LIST_PAGE_SIZE=str(PAGE))
        self.n = 0
        self.runs = 0

    def add(self, count: int) -> list[str]:
        numbers = range(self.n, self.n + count)
        self.n += count
        if self.s3_in:
            return put_tiny_docs(self.s3, self.bucket, "in", numbers, self.tmp / "staged-src")
        return tiny_docs(self.src, numbers)

    def run(self) -> dict:
        """One run through the proxy, its counters reset first; returns the report."""
        self.runs += 1
        report = self.tmp / f"run{self.runs}.json"
        self.proxy.reset()
        proc = convert(self.in_url, "-o", self.out_url, "--endpoint-url", self.proxy.endpoint, "--report",
                       str(report), env=self.env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return load_report(report)

    def output_objects(self) -> int:
        return len(s3_objects(self.s3, self.bucket, "out")) if self.s3_out else 0

    def expected_lists(self) -> dict[str, int]:
        """ListObjectsV2 a rerun makes: the input prefix's pages, OUTPUT's pages (the
        ``OutputListing``, PAGE keys each) and the read probe of OUTPUT (one listing of at most
        one key: ``storage.holds_nothing``)."""
        want = {}
        if self.s3_in:
            want["in pages"] = math.ceil(self.n / PAGE)
        if self.s3_out:
            want["out pages"] = math.ceil(self.output_objects() / PAGE)
            want["out probe"] = 1
        return want

    def lists_seen(self) -> dict[str, int]:
        seen: dict[str, int] = {}
        for r in self.proxy.requests("ListObjectsV2"):
            assert r.path.strip("/") == self.bucket, r
            prefix, keys = r.query.get("prefix"), r.query.get("max-keys")
            if prefix == "in/" and keys == str(PAGE):
                what = "in pages"
            elif prefix == "out/" and keys == str(PAGE):
                what = "out pages"
            elif prefix == "out/" and keys == "1":
                what = "out probe"
            else:
                what = f"other {r.query}"
            seen[what] = seen.get(what, 0) + 1
        return seen

    def check_rerun(self, report: dict) -> dict[str, int]:
        """A rerun over a finished OUTPUT: everything skipped, no write, no HEAD, at most one
        GET (the index object of an S3 OUTPUT), ListObjectsV2 exactly the pages. Returns the
        counts by operation."""
        assert set(statuses(report).values()) == {"skipped"}, report["summary"]
        assert report["summary"]["skipped"] == self.n
        counts = ops(self.proxy)
        gets = [r.path for r in self.proxy.requests("GetObject")]
        if self.s3_out:
            assert gets == [f"/{self.bucket}/out/.mineru-cli/index.sqlite"], gets
        else:
            assert gets == [], gets
        assert counts.get("HeadObject", 0) == 0, self.proxy.requests("HeadObject")
        for op in WRITE_OPS:
            assert counts.get(op, 0) == 0, (op, self.proxy.requests(op))
        assert self.lists_seen() == self.expected_lists()
        assert set(counts) <= {"ListObjectsV2", "GetObject"}, counts
        summary = report["summary"]["done_records"]
        assert summary["from_index"] == self.n and summary["read"] == 0, summary
        return counts


@pytest.mark.parametrize("s3_in,s3_out", [(True, True), (False, True), (True, False)],
                         ids=["s3-to-s3", "local-to-s3", "s3-to-local"])
def test_s3_rerun_makes_requests_per_listing_page_not_per_document(s3_proxy, s3_server, tmp_path, s3_in, s3_out):
    """30 tiny documents, converted; a rerun is counted at the proxy. Then 30 more, converted
    (a first run for those), and a rerun of all 60: GETs and HEADs stay where they were (none,
    or the one GET of the index object), ListObjectsV2 grows by listing pages only."""
    run = S3Rerun(s3_server, s3_proxy, tmp_path, s3_server.bucket(f"scale-{uuid.uuid4().hex[:12]}"),
                  s3_in=s3_in, s3_out=s3_out)
    measured = {}
    first = run.add(30)
    assert statuses(run.run()) == dict.fromkeys(first, "converted")
    measured[30] = run.check_rerun(run.run())

    more = run.add(30)
    report = run.run()
    assert statuses(report) == {**dict.fromkeys(first, "skipped"), **dict.fromkeys(more, "converted")}
    # the run that converts the new ones asks nothing about the finished ones
    about_old = [r for r in s3_proxy.requests() if any(f"/{n}" in r.path for n in first)]
    assert about_old == [], about_old[:5]
    measured[60] = run.check_rerun(run.run())
    print(f"\nrequests of a rerun over {'S3' if s3_in else 'local'} inputs -> {'S3' if s3_out else 'local'} "
          f"OUTPUT (page size {PAGE}): {measured}; listings {run.lists_seen()}")
    assert measured[60].get("GetObject", 0) == measured[30].get("GetObject", 0)
    assert measured[60].get("HeadObject", 0) == measured[30].get("HeadObject", 0) == 0


# --- 2. the events file of a run killed with SIGKILL ---------------------------------------------

def read_events(path: Path) -> list[dict]:
    """Every line of an events file as JSON (a line that does not parse fails the test)."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), f"the last line is cut: {raw[-200:]!r}"
    lines = raw.decode("utf-8").split("\n")[:-1]
    events = []
    for n, line in enumerate(lines, 1):
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name} line {n} is not JSON: {line[:300]!r}")
    return events


def check_document_events(events: list[dict]) -> list[dict]:
    """The start line first, then document events with exactly the report's keys, each input
    once; returns the document events."""
    from mineru_cli.report import report_fields

    assert events and events[0]["event"] == "start", events[:1]
    assert set(events[0]) == {"event", "started", "pid"}, events[0]
    docs = [e for e in events[1:] if e["event"] == "document"]
    keys = {"event", *report_fields()}
    for e in docs:
        assert set(e) == keys, (sorted(set(e) ^ keys), e)
    inputs = [e["input"] for e in docs]
    assert len(inputs) == len(set(inputs)), sorted(i for i in inputs if inputs.count(i) > 1)
    return docs


def wait_for_gone(tag: str, timeout: float = 30) -> list:
    """Wait until no process carries ``tag`` (conftest.tagged_processes); returns those left."""
    deadline = time.monotonic() + timeout
    left = tagged_processes(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = tagged_processes(tag)
    return left


def test_events_file_of_a_run_killed_with_sigkill_is_valid_and_a_rerun_finishes(tmp_path, process_tag):
    """300 tiny documents; the run (its own process group: CLI, workers, MinerU's render
    processes) is killed with SIGKILL once its events file has 20 lines. The file is valid JSON
    Lines: the start line, then document events with the report's keys, each input once, and
    every document it says was converted has its done-record. A rerun finishes: exit 0, its
    events file ends with the summary of its report, and converted + skipped is all 300."""
    src, out = tmp_path / "src", tmp_path / "out"
    names = tiny_docs(src, range(300))
    ev, ev2, rep = tmp_path / "ev.jsonl", tmp_path / "ev2.jsonl", tmp_path / "rerun.json"
    env = cli_env(tmp_path / "tmp", MINERU_CLI_TEST_TAG=process_tag)
    (tmp_path / "tmp").mkdir()
    with open(tmp_path / "killed.out", "wb") as so, open(tmp_path / "killed.err", "wb") as se:
        p = subprocess.Popen([sys.executable, "-m", "mineru_cli", "convert", str(src), "-o", str(out),
                              "--events", str(ev), "--workers", "2"], env=env, stdout=so, stderr=se,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and p.poll() is None:
            if ev.exists() and ev.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.02)
        assert p.poll() is None, f"the run ended (rc {p.returncode}) before 20 events:\n" + \
            (tmp_path / "killed.err").read_text()
        os.killpg(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    left = wait_for_gone(process_tag)
    assert not left, f"processes of the killed run still alive: {[x.pid for x in left]}"

    events = read_events(ev)
    assert len(events) >= 20
    docs = check_document_events(events)
    assert events[0]["pid"] == p.pid
    assert len(docs) == len(events) - 1, "a killed run writes no summary line"
    assert set(e["input"] for e in docs) <= set(names)
    converted = [e["input"] for e in docs if e["status"] == "converted"]
    assert converted, [e["status"] for e in docs]
    for name in converted:
        assert (out / name / DONE).is_file(), f"{name}: reported converted, no done-record"
    assert len(docs) < 300, "the run was killed too late to test anything"
    print(f"\nkilled after {len(docs)} document events ({len(converted)} converted)")

    proc = convert(str(src), "-o", str(out), "--events", str(ev2), "--report", str(rep), "--workers", "2", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = load_report(rep)
    events2 = read_events(ev2)
    docs2 = check_document_events(events2[:-1])
    summary = events2[-1]
    assert summary["event"] == "summary", summary
    for k in ("converted", "skipped", "failed", "total", "pages"):
        assert summary[k] == report["summary"][k], (k, summary[k], report["summary"][k])
    s = report["summary"]
    assert (s["converted"], s["failed"], s["total"]) == (300 - s["skipped"], 0, 300)
    assert s["skipped"] >= len(converted)
    assert sorted(e["input"] for e in docs2) == sorted(names)
    rerun = by_input(report)
    for name in converted:  # finished before the kill: not converted again
        assert (rerun[name]["status"], rerun[name]["code"]) == ("skipped", "done"), rerun[name]
    for e in docs2:
        assert {k: v for k, v in e.items() if k != "event"} == rerun[e["input"]]


# --- 3. documents are dispatched while a local walk is still going on ---------------------------

# Runs convert (conftest.run_convert_watched) with discover._walk_local wrapped: walking a folder
# named zz-late waits until the first document's done-record exists (120 s at most), and prints
# what released it. _walk_local recurses through the module's global, so the wrapper sees every
# folder.
LATE_WALK_SCRIPT = r'''
import json, os, sys, time
from mineru_cli import discover
settings = json.loads(sys.argv[1])
first_done = os.path.join(settings["output"], "aa", "first.csv", ".mineru-cli.done.json")
walk = discover._walk_local
released = []
def late_walk(folder, *args, **kwargs):
    if os.path.basename(folder) == "zz-late":
        deadline = time.monotonic() + 120
        while not os.path.exists(first_done) and time.monotonic() < deadline:
            time.sleep(0.05)
        released.append({"by": "done-record" if os.path.exists(first_done) else "timeout", "at": time.time()})
    yield from walk(folder, *args, **kwargs)
discover._walk_local = late_walk
from mineru_cli.convert import run_convert
from mineru_cli.settings import load_settings
code = run_convert(load_settings(settings))
print("WATCHED " + json.dumps(released))
sys.exit(code)
'''


def test_local_documents_are_dispatched_before_the_walk_ends(tmp_path):
    """The walk stops at the folder ``zz-late`` until the first document's done-record exists
    (120 s at most): released by the done-record means a document was converted and committed
    while discovery was still walking. Then everything converts."""
    from conftest import run_convert_watched

    src, out = tmp_path / "src", tmp_path / "out"
    (src / "aa").mkdir(parents=True)
    mk.write_csv(src / "aa" / "first.csv", [["a", "b"], ["1", "2"]])
    early = tiny_docs(src / "aa", range(1, 4))
    late = tiny_docs(src / "zz-late", range(4, 8))
    settings = {"inputs": [str(src)], "output": str(out), "order": "path"}
    released, docs = run_convert_watched(LATE_WALK_SCRIPT, settings, tmp_path / "report.json",
                                         cli_env(tmp_path), timeout=RUN_TIMEOUT)
    assert [r["by"] for r in released] == ["done-record"], released
    expected = ["aa/" + n for n in sorted(["first.csv", *early])] + ["zz-late/" + n for n in late]
    assert list(docs) == expected
    assert {d["status"] for d in docs.values()} == {"converted"}
    summary = load_report(tmp_path / "report.json")["summary"]
    assert summary["discovery_complete"] is True
    record = json.loads((out / "aa" / "first.csv" / DONE).read_text(encoding="utf-8"))
    # the report's clock says the same: a document was dispatched, and committed, before the walk ended
    # (the summary's times are rounded to the millisecond: so is what is compared with them)
    assert summary["first_dispatch"] < summary["discovery_ended"]
    assert record["committed_at"] <= released[0]["at"]
    assert round(released[0]["at"], 3) <= summary["discovery_ended"]
    assert round(docs["aa/first.csv"]["ended"], 3) <= summary["discovery_ended"]


# --- 4. progress ---------------------------------------------------------------------------------

_COUNT = r"\d[\d,]*"
_WHAT = rf"\({_COUNT} converted, {_COUNT} skipped, {_COUNT} failed\)"
_TAIL = rf"{_COUNT} pages; \d+\.\d documents/s"
PROGRESS_LINE = re.compile(
    rf"^progress: (?:discovering, {_COUNT} found; {_COUNT} done {_WHAT}; {_TAIL}"
    rf"|{_COUNT} of {_COUNT} documents done {_WHAT}; {_TAIL}; ETA (?:\d+ s|\d+ min|\d+\.\d h|unknown))$")


def test_quiet_progress_lines_off_a_terminal(tmp_path):
    """``--quiet`` off a terminal, ``MINERU_CLI_PROGRESS_INTERVAL=1``, 40 documents, one of
    them held 3 s in its worker (the test hook), so the run lasts past the interval: progress
    lines in the documented format, no line per document, the summary at the end."""
    src, out = tmp_path / "src", tmp_path / "out"
    names = tiny_docs(src, range(40))
    env = cli_env(tmp_path, MINERU_CLI_PROGRESS_INTERVAL="1", MINERU_CLI_TEST_HOLD=names[-1],
                  MINERU_CLI_TEST_HOLD_SECONDS="3")
    proc = convert(str(src), "-o", str(out), "--quiet", "--workers", "2", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    progress = [l for l in lines if l.startswith("progress: ")]
    assert progress, proc.stdout
    for line in progress:
        assert PROGRESS_LINE.match(line), line
    assert not [l for l in lines if l.startswith(("converted ", "skipped ", "failed "))], proc.stdout
    assert re.match(r"^done: 40 converted, 0 skipped, 0 failed of 40 documents; \d+ pages in [\d.]+ s$", lines[-1]), \
        proc.stdout
    assert [l for l in lines if not l.startswith("progress: ")] == [lines[-1]], proc.stdout
    # once the walk ended the line has the total and an ETA (40 documents: the first window ends it)
    assert all(" of 40 documents done " in l for l in progress), progress


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def run_on_pty(args: list[str], env: dict, timeout: float = RUN_TIMEOUT) -> tuple[int, str]:
    """Run ``python -m mineru_cli ARGS`` with stdin, stdout and stderr on a pseudo-terminal
    (160 x 50); returns (exit code, everything it wrote, ANSI escapes removed, ``\\r`` as
    line ends)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    try:
        p = subprocess.Popen([sys.executable, "-m", "mineru_cli", *args], env=env, stdin=slave, stdout=slave,
                             stderr=slave, close_fds=True)
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if p.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    return code, ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def test_progress_bar_on_a_terminal(tmp_path):
    """stdout and stderr on a pseudo-terminal (TERM=xterm, COLUMNS=160): rich draws the bar,
    with the rate and, once the walk ended, the totals and an ETA. One document is held 3 s in
    its worker (the test hook) so the bar is drawn while documents are still converting."""
    src, out = tmp_path / "src", tmp_path / "out"
    names = tiny_docs(src, range(40))
    env = cli_env(tmp_path, TERM="xterm", COLUMNS="160", LINES="50", MINERU_CLI_TEST_HOLD=names[-1],
                  MINERU_CLI_TEST_HOLD_SECONDS="3")
    code, text = run_on_pty(["convert", str(src), "-o", str(out), "--workers", "2"], env)
    assert code == 0, text
    assert "documents/s" in text, text[-3000:]
    bars = [l for l in text.splitlines() if "documents/s" in l]
    assert any(re.search(rf"converting .*{_COUNT} of 40 documents done {_WHAT}; {_TAIL}; ETA ", l) for l in bars), \
        bars[-5:]
    assert re.search(r"done: 40 converted, 0 skipped, 0 failed of 40 documents", text), text[-2000:]


# --- 5. the done-record index ---------------------------------------------------------------------

def index_entries(out: Path) -> int:
    """Entries of ``OUTPUT/.mineru-cli/index.sqlite`` (read only; fails on a damaged file)."""
    import sqlite3

    con = sqlite3.connect(f"file:{out / INDEX}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        con.close()


class LocalRuns:
    """Runs over one local folder of ``n`` tiny documents into one local OUTPUT; each run's
    conversions are counted by the workers' test hook (``MINERU_CLI_TEST_CONVERSIONS``)."""

    def __init__(self, tmp: Path, n: int) -> None:
        self.tmp, self.src, self.out = tmp, tmp / "src", tmp / "out"
        self.names = tiny_docs(self.src, range(n))
        self.runs = 0

    def run(self, *extra: str, code: int = 0) -> tuple[dict, list[str], subprocess.CompletedProcess]:
        """Returns (report, inputs converted by MinerU in this run, process)."""
        self.runs += 1
        report, counted = self.tmp / f"run{self.runs}.json", self.tmp / f"conversions{self.runs}.txt"
        proc = convert(str(self.src), "-o", str(self.out), "--report", str(report), "--workers", "2", *extra,
                       env=cli_env(self.tmp, MINERU_CLI_TEST_CONVERSIONS=str(counted)))
        assert proc.returncode == code, proc.stdout + proc.stderr
        converted = sorted(Path(l.split("\t", 1)[1]).name for l in counted.read_text().splitlines()) \
            if counted.exists() else []
        return load_report(report), converted, proc


def test_index_is_written_and_a_rerun_reads_no_done_record(tmp_path):
    """(a) A first run writes the index with one entry per document; a rerun takes every
    done-record from it (``from_index`` = N, ``read`` = 0) and converts nothing."""
    runs = LocalRuns(tmp_path, 12)
    report, converted, _ = runs.run()
    assert converted == runs.names
    assert (runs.out / INDEX).is_file() and index_entries(runs.out) == 12
    assert report["summary"]["done_records"] == {"from_index": 0, "read": 0, "indexed": 12, "index_problem": None, "checked_in_helper": 0, "finished_in_helper": 0}

    report, converted, _ = runs.run()
    assert converted == [] and set(statuses(report).values()) == {"skipped"}
    assert report["summary"]["done_records"] == {"from_index": 12, "read": 0, "indexed": 0, "index_problem": None, "checked_in_helper": 0, "finished_in_helper": 0}


def test_a_done_record_changed_by_hand_is_read_not_taken_from_the_index(tmp_path):
    """(b) One done-record replaced by hand with one of other settings (``settings.formats``):
    its signature no longer matches the index, so the rerun reads it (``read`` = 1) and
    converts that document again; the other eleven come from the index and are skipped."""
    runs = LocalRuns(tmp_path, 12)
    runs.run()
    victim = runs.names[5]
    path = runs.out / victim / DONE
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["settings"]["formats"] == ["content_list", "images", "md", "middle"]
    record["settings"]["formats"] = ["md"]
    path.write_text(json.dumps(record), encoding="utf-8")

    report, converted, _ = runs.run()
    assert converted == [victim]
    assert statuses(report) == {n: "converted" if n == victim else "skipped" for n in runs.names}
    assert report["summary"]["done_records"]["from_index"] == 11
    assert report["summary"]["done_records"]["read"] == 1
    assert json.loads(path.read_text(encoding="utf-8"))["settings"]["formats"] == [
        "content_list", "images", "md", "middle"]
    # the new done-record went into the index: the next rerun reads nothing
    report, converted, _ = runs.run()
    assert converted == [] and report["summary"]["done_records"] == {"from_index": 12, "read": 0, "indexed": 0, "index_problem": None, "checked_in_helper": 0, "finished_in_helper": 0}


def test_a_damaged_index_is_bypassed_and_rebuilt(tmp_path):
    """(c) The index overwritten with garbage: the rerun reads every done-record instead, skips
    everything, exit 0, and writes the index again (it read at least a tenth of the run), so
    the next rerun takes every record from it."""
    runs = LocalRuns(tmp_path, 12)
    runs.run()
    (runs.out / INDEX).write_bytes(os.urandom(3000) + b"not an index" * 100)

    report, converted, _ = runs.run()
    assert converted == [] and set(statuses(report).values()) == {"skipped"}
    done = report["summary"]["done_records"]
    assert {k: done[k] for k in ("from_index", "read", "indexed")} == {"from_index": 0, "read": 12, "indexed": 12}
    assert "index.sqlite is damaged" in done["index_problem"] and "the next run that writes OUTPUT writes it again" in done["index_problem"]
    assert index_entries(runs.out) == 12

    report, converted, _ = runs.run()
    assert converted == [] and report["summary"]["done_records"] == {"from_index": 12, "read": 0, "indexed": 0, "index_problem": None, "checked_in_helper": 0, "finished_in_helper": 0}


def test_a_result_file_deleted_by_hand_is_noticed_with_the_record_from_the_index(tmp_path):
    """(d) A result file deleted by hand, the done-record untouched (so its entry in the index
    still matches): a dry run says why it would convert ("result incomplete: ..."), and the
    rerun, taking all twelve records from the index, converts that document again."""
    runs = LocalRuns(tmp_path, 12)
    runs.run()
    victim = runs.names[3]
    stem = Path(victim).stem
    (runs.out / victim / f"{stem}.md").unlink()

    report, converted, proc = runs.run("--dry-run")
    assert converted == []
    doc = by_input(report)[victim]
    assert doc["status"] == "pending", doc
    assert doc["reason"] == f"result incomplete: {stem}.md missing or changed since it was written", doc
    assert {n: d["status"] for n, d in by_input(report).items() if n != victim} == dict.fromkeys(
        [n for n in runs.names if n != victim], "skipped")

    report, converted, _ = runs.run()
    assert report["summary"]["done_records"]["from_index"] == 12
    assert report["summary"]["done_records"]["read"] == 0
    assert converted == [victim]
    assert statuses(report) == {n: "converted" if n == victim else "skipped" for n in runs.names}
    assert (runs.out / victim / f"{stem}.md").is_file()


# --- 6. the report's order and shape at scale ------------------------------------------------------

def walk_order(folder: Path, rel: str = "") -> list[str]:
    """The inputs under ``folder`` in the walk's order: depth first, each folder's entries sorted
    by the bytes of their UTF-8 names, hidden entries left out (README: stable order)."""
    found = []
    for name in sorted(os.listdir(folder), key=lambda n: n.encode("utf-8", "surrogateescape")):
        if name.startswith("."):
            continue
        child = f"{rel}/{name}" if rel else name
        if (folder / name).is_dir():
            found += walk_order(folder / name, child)
        else:
            found.append(child)
    return found


def test_report_of_200_documents_of_very_different_sizes(tmp_path):
    """About 200 documents, tiny and large mixed (the large ones last in the walk, so with
    ``--order size`` they start first and the documents end far out of discovery order), some
    that are no document or fail: in ``--report`` every input appears exactly once, in the
    walk's order, each with exactly ``DocumentReport``'s keys, and the summary counts are the
    documents' statuses. The events file, in the order documents ended, is a different order."""
    from dataclasses import fields

    from mineru_cli.report import DocumentReport

    src, out = tmp_path / "src", tmp_path / "out"
    n = 0
    for folder, count in (("b", 40), ("B-upper", 30), ("a/sub", 30), ("a", 30), ("z", 50)):
        for _ in range(count):
            tiny_doc(src / folder, n)
            n += 1
    for i in range(20):  # large ones, at the end of the walk: 400 to 4000 rows, 1 to 5 tables of HTML
        mk.write_csv(src / "z" / f"large{i:02d}.csv", [["id", "name", "value"]] +
                     [[str(r), f"row {r} of {i}", str(r * i)] for r in range(200 * (i + 1))])
    for i in range(5):
        mk.write_html(src / "z" / f"long{i}.html", f"Long {i}", f"Long page {i}",
                      [f"Paragraph {p} of a long page." for p in range(300 * (i + 1))],
                      table=[["k", "v"]] + [[str(r), str(r * r)] for r in range(100 * (i + 1))])
    (src / "b" / "x10.csv").write_text("a,b\n1,2\n")  # byte order: x10 before x9
    (src / "b" / "x9.csv").write_text("a,b\n3,4\n")
    (src / "a" / "notes.txt").write_text("just some notes, not a document\n")
    (src / "a" / "empty.csv").write_bytes(b"")
    (src / "z" / "fake.pdf").write_text("this is not a PDF at all\n")
    (src / "a" / ".hidden.csv").write_text("a,b\n1,2\n")
    expected = walk_order(src)
    assert 200 <= len(expected) <= 240

    rep, ev = tmp_path / "report.json", tmp_path / "events.jsonl"
    proc = convert(str(src), "-o", str(out), "--report", str(rep), "--events", str(ev), "--workers", "2",
                   "--order", "size", env=cli_env(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # fake.pdf fails
    report = load_report(rep)
    docs = report["documents"]
    assert [d["input"] for d in docs] == expected
    keys = [f.name for f in fields(DocumentReport)]
    for d in docs:
        assert list(d) == keys, (d["input"], sorted(set(d) ^ set(keys)))
    by = by_input(report)
    assert by["z/fake.pdf"]["status"] == "failed"
    assert by["a/notes.txt"]["status"] == "skipped" and by["a/notes.txt"]["code"], by["a/notes.txt"]
    assert by["a/empty.csv"]["status"] in ("skipped", "failed") and by["a/empty.csv"]["code"] == "empty"
    summary = report["summary"]
    counted = {s: sum(1 for d in docs if d["status"] == s) for s in ("converted", "skipped", "failed")}
    assert {s: summary[s] for s in counted} == counted
    assert summary["total"] == len(docs) == sum(counted.values())
    assert counted["converted"] == len(expected) - 3
    assert summary["pages"] == sum(d["pages"] or 0 for d in docs if d["status"] == "converted")
    assert summary["hidden_ignored"] == 1
    assert isinstance(summary["parent_peak_rss"], int) and summary["parent_peak_rss"] > 0
    assert summary["done_records"] == {"from_index": 0, "read": 0, "indexed": counted["converted"],
                                       "index_problem": None, "checked_in_helper": 0, "finished_in_helper": 0}
    assert summary["first_dispatch"] >= summary["started"] and summary["discovery_complete"] is True

    ended = [e["input"] for e in read_events(ev) if e["event"] == "document"]
    assert sorted(ended) == sorted(expected)
    assert ended != expected, "documents ended in discovery order: this run proves nothing about the report's order"
    first_large = ended.index("z/large19.csv")
    assert first_large < ended.index("b/" + sorted(os.listdir(src / "b"))[0]), ended[:10]


def test_a_run_that_ends_before_the_batch_leaves_no_temporary_folders(tmp_path):
    """A --dry-run over a finished OUTPUT, and a run that finds OUTPUT locked (exit 4), remove
    the temporary folders of the done-record reader, as a run that converts does."""
    from filelock import FileLock

    runs = LocalRuns(tmp_path, 3)
    runs.run()
    left = lambda: sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("mineru-cli-"))  # noqa: E731
    assert left() == []
    runs.run("--dry-run")
    dry = left()
    tiny_doc(runs.src, 3)
    lock = FileLock(str(runs.out / ".mineru-cli" / "lock"))
    lock.acquire()
    try:
        proc = convert(str(runs.src), "-o", str(runs.out), env=cli_env(tmp_path))
    finally:
        lock.release()
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert (dry, left()) == ([], [])


def test_parent_peak_rss_is_the_cli_s_own_not_its_launcher_s():
    """``summary.parent_peak_rss`` is the CLI's own peak memory. ``getrusage``'s ``ru_maxrss``
    also keeps the peak of the process before ``exec``: a CLI started by a 300 MB parent
    (fork + exec) reported 318 MB (seen in benchmarks/scale.py, whose process holds large
    reports); ``VmHWM`` of /proc/self/status is the CLI's own."""
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc (not Linux): ru_maxrss is used there")
    code = ("import resource; from mineru_cli.run import parent_peak_rss; "
            "print(parent_peak_rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    ballast = bytearray(300 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # resident
    own, rusage = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                          check=True).stdout.split())
    del ballast
    # here (fork + exec) ru_maxrss carries the launcher's 300 MB; the CLI's own peak does not
    assert own < 150 * 1024 * 1024, (own, rusage)
