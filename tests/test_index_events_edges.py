"""Edges of the done-record index and the ``--events`` file found by breaking issue 17's work.

Real CLI subprocesses and real MinerU over tiny CSV/HTML documents (``test_scale.LocalRuns``):

- a merge into ``index.sqlite`` killed with SIGKILL leaves a hot journal: the next run rolls it
  back and uses the index (it used to call it damaged and read every done-record);
- an index that cannot be used is said on screen, in one line, naming the index;
- a done-record whose ``files`` is not a list means "not done": the document is converted again
  and the run goes on (it used to stop the run with exit 3 and no report);
- a second run naming the ``--events`` file another live run writes is refused (exit 4) and
  leaves the file alone (it used to empty it);
- ``--events`` naming the ``--report`` file is a usage error (exit 2);
- ``clean`` drops the results it removes from the index;
- the temporary folders of runs killed on this machine are removed by the next run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, run_cli
from test_scale import DONE, INDEX, LocalRuns, convert, index_entries, statuses

# a writer that dies in the middle of a merge: SQLite has written pages of the index before
# COMMIT (a one-page cache forces it) and kept their old contents in index.sqlite-journal
KILLED_MERGE = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size=1")
con.execute("BEGIN IMMEDIATE")
con.execute("DELETE FROM records")
con.execute("CREATE TABLE pad (x)")  # a thousand new pages: the changed ones cannot stay in the cache
con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
            "INSERT INTO pad SELECT randomblob(3000) FROM n")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_merge_killed_with_sigkill_is_rolled_back_not_taken_as_damage(tmp_path):
    runs = LocalRuns(tmp_path, 12)
    runs.run()
    index = runs.out / INDEX
    proc = subprocess.run([sys.executable, "-c", KILLED_MERGE, str(index)])
    assert proc.returncode == -signal.SIGKILL
    assert Path(f"{index}-journal").is_file(), "the killed merge left no journal: the test proves nothing"
    try:  # what the index looked like to a read-only open (the code before the fix)
        sqlite3.connect(f"file:{index}?mode=ro", uri=True).execute("SELECT count(*) FROM records").fetchone()
        raise AssertionError("a read-only open read the index: the journal is not hot, the test proves nothing")
    except sqlite3.OperationalError as exc:
        assert "readonly" in str(exc), exc

    report, converted, proc = runs.run()
    assert converted == [] and set(statuses(report).values()) == {"skipped"}
    assert report["summary"]["done_records"] == {"from_index": 12, "read": 0, "indexed": 0, "index_problem": None, "checked_in_helper": 0, "finished_in_helper": 0}
    assert index_entries(runs.out) == 12  # rolled back: a read-only open works again
    assert "index" not in proc.stderr, proc.stderr


def test_an_index_that_cannot_be_used_is_said_on_screen(tmp_path):
    """A garbage index: one warning line naming it, in the output even with ``-q``; a folder
    where the index should be: said as such (not "rebuilt": nothing can replace it), every
    done-record read, exit 0."""
    runs = LocalRuns(tmp_path, 6)
    runs.run()
    index = runs.out / INDEX
    index.write_bytes(b"not an index" * 400)
    report, converted, proc = runs.run("-q")
    assert converted == [] and set(statuses(report).values()) == {"skipped"}
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "done-record index" in l]
    assert len(lines) == 1 and f"done-record index {index} is damaged" in lines[0], proc.stdout + proc.stderr
    assert "the next run that writes OUTPUT writes it again" in lines[0]

    index.unlink()
    index.mkdir()
    report, converted, proc = runs.run()
    assert converted == [] and set(statuses(report).values()) == {"skipped"}
    done = report["summary"]["done_records"]
    assert done["from_index"] == 0 and done["read"] == 6, done
    assert done["index_problem"] == f"done-record index {index} is a folder, not a file: not used (remove it)"
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "index" in l]
    assert lines == [f"warning: {done['index_problem']}"], lines  # and no attempt to write it


@pytest.mark.parametrize("files", ["int", "string", "null", "empty", "one-not-an-object", "no-name"])
def test_a_done_record_whose_files_is_not_a_list_is_converted_again(tmp_path, files):
    """One done-record whose ``files`` is not a list of files (damaged by hand or a tool), its
    index entry gone with it (another signature): that document is converted again, the others
    skipped, exit 0, a report written; its new done-record lists its files, and the next rerun
    skips it. (``files: 5`` stopped the run with exit 3; a list holding a number made a rerun
    that added a format fail at the commit.)"""
    runs = LocalRuns(tmp_path, 8)
    runs.run()
    victim = runs.names[5]
    path = runs.out / victim / DONE
    record = json.loads(path.read_text(encoding="utf-8"))
    good = record["files"]
    record["files"] = {"int": 5, "string": "junk", "null": None, "empty": [], "one-not-an-object": [*good, 5],
                       "no-name": [*good, {"size": 3}]}[files]
    path.write_text(json.dumps(record), encoding="utf-8")

    report, converted, _ = runs.run()
    assert converted == [victim]
    assert statuses(report) == {n: "converted" if n == victim else "skipped" for n in runs.names}
    assert isinstance(json.loads(path.read_text(encoding="utf-8"))["files"], list)

    report, converted, _ = runs.run()
    assert converted == [] and set(statuses(report).values()) == {"skipped"}


def test_a_second_run_on_the_same_events_file_is_refused_and_leaves_it_alone(tmp_path):
    """Run A writes ``ev.jsonl`` (its first document held 3 s: MINERU_CLI_TEST_HOLD);
    run B, naming the same events file (and another OUTPUT), exits 4 with one line naming the
    file, before writing anything; A's file keeps A's start line and ends with A's summary."""
    src, events = tmp_path / "src", tmp_path / "ev.jsonl"
    LocalRuns(tmp_path, 4)  # documents in tmp_path/src
    env = cli_env(tmp_path, MINERU_CLI_TEST_HOLD="doc000", MINERU_CLI_TEST_HOLD_SECONDS="3")
    a = subprocess.Popen([sys.executable, "-m", "mineru_cli", "convert", str(src), "-o", str(tmp_path / "outA"),
                          "--workers", "1", "-q", "--events", str(events)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (events.exists() and events.read_text()):
            assert a.poll() is None and time.monotonic() < deadline, "run A never wrote its start line"
            time.sleep(0.05)
        start = events.read_text().splitlines()[0]
        assert json.loads(start)["pid"] == a.pid

        b = convert(str(src), "-o", str(tmp_path / "outB"), "-q", "--events", str(events), env=cli_env(tmp_path))
        assert b.returncode == 4, b.stdout + b.stderr
        err = [l for l in b.stderr.splitlines() if l.strip()]
        assert len(err) == 1 and str(events) in err[0] and "another mineru-cli run" in err[0], b.stderr
        assert not (tmp_path / "outB").exists()
        assert events.read_text().splitlines()[0] == start
    finally:
        out, errs = a.communicate(timeout=240)
    assert a.returncode == 0, out + errs
    lines = [json.loads(l) for l in events.read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["pid"] == a.pid and lines[-1]["event"] == "summary"
    assert sum(1 for l in lines if l["event"] == "document") == 4


def test_events_naming_the_report_file_is_a_usage_error(tmp_path):
    """The same path, or a symbolic link to the report file not written yet: exit 2, nothing
    written."""
    LocalRuns(tmp_path, 2)
    same = tmp_path / "run.json"
    link = tmp_path / "events-link.jsonl"
    link.symlink_to(same)
    for events in (same, link):
        proc = convert(str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--report", str(same), "--events",
                       str(events), env=cli_env(tmp_path))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"--events {events}: is also the --report file" in proc.stderr
        assert not same.exists() and not (tmp_path / "out").exists()


def test_a_run_that_ends_with_an_error_before_the_batch_ends_its_events_file(tmp_path):
    """An input that does not exist (exit 2, found after the events file got its start line):
    the events file's last line is the summary, ``interrupted`` "error", ``error`` the line."""
    events = tmp_path / "ev.jsonl"
    missing = tmp_path / "no-such-folder"
    proc = convert(str(missing), "-o", str(tmp_path / "out"), "--events", str(events), env=cli_env(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [json.loads(l) for l in events.read_text().splitlines()]
    assert [l["event"] for l in lines] == ["start", "summary"], lines
    assert lines[-1]["interrupted"] == "error" and lines[-1]["error"] == f"input {missing}: not found or not readable"
    assert lines[-1]["total"] == 0


def test_clean_drops_the_removed_results_from_the_index(tmp_path):
    """``clean`` removes results and their index entries: after cleaning every result the index
    is empty (it holds what is in OUTPUT, not its history), and the next run converts all
    again and indexes them; a ``--dry-run`` clean leaves the index as it is."""
    runs = LocalRuns(tmp_path, 6)
    runs.run()
    assert index_entries(runs.out) == 6
    time.sleep(1.1)  # committed_at older than 1 s
    dry = run_cli("clean", str(runs.out), "--older-than", "1s", "--dry-run", env=cli_env(tmp_path))
    assert dry.returncode == 0 and "would remove 6 results" in dry.stdout, dry.stdout + dry.stderr
    assert index_entries(runs.out) == 6
    proc = run_cli("clean", str(runs.out), "--older-than", "1s", env=cli_env(tmp_path))
    assert proc.returncode == 0 and "removed 6 results" in proc.stdout, proc.stdout + proc.stderr
    assert index_entries(runs.out) == 0

    report, converted, _ = runs.run()
    assert converted == runs.names and index_entries(runs.out) == 6
    assert report["summary"]["done_records"]["from_index"] == 0


def test_temporary_folders_of_killed_runs_are_swept(tmp_path):
    """A run removes the temporary folders (``tempdirs``) that runs killed on this machine left
    in TMPDIR (a dead pid, this host's name), and nothing else: not a live process's, not
    another host's (a TMPDIR shared between containers), not a name of another shape."""
    from mineru_cli import tempdirs

    LocalRuns(tmp_path, 2)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = tempdirs._host()
    gone = [tmp / f"mineru-cli-{kind}-{host}-{dead.pid}-x1" for kind in tempdirs.KINDS]
    kept = [tmp / f"mineru-cli-index-{host}-{os.getpid()}-x2",  # alive: this test's process
            tmp / f"mineru-cli-run-otherhost-{dead.pid}-x3",  # another machine's
            tmp / "mineru-cli-index-x4", tmp / f"mineru-cli-pdf-{host}-{dead.pid}-x5"]
    for d in gone + kept:
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "delta.sqlite").write_bytes(b"x" * 100)
    proc = convert(str(tmp_path / "src"), "-o", str(tmp_path / "out"), env=cli_env(tmp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [d.name for d in gone if d.exists()] == []
    assert [d.name for d in kept if not (d / "sub" / "delta.sqlite").is_file()] == []
    # the run's own folders are gone too: only the ones kept above are left
    assert sorted(p.name for p in tmp.iterdir()) == sorted(d.name for d in kept)


def test_index_merges_are_spaced_by_their_own_cost(tmp_path, monkeypatch):
    """``RecordIndex.due``: a local index merges every 2,000 entries or 30 s; the seconds grow
    to 20 times what the last merge took (a remote index is uploaded whole each time), so a
    large index costs a run at most about 5 % of its time."""
    from mineru_cli import record_index
    from mineru_cli.store import open_output

    out = open_output(str(tmp_path / "out"))
    index = record_index.RecordIndex(out)
    try:
        record = {"input": {"size": 1, "mtime": 2.0, "fingerprint": "f", "etag": None, "type": "csv"},
                  "settings": {"formats": ["md"]}, "files": [{"name": "a.md", "size": 3}], "pages": 1, "tier": "flash"}
        assert not index.due()  # nothing to merge
        index.put("a.csv", "1:2:3", record)
        assert index.pending == 1 and not index.due()
        now = [time.monotonic()]
        monkeypatch.setattr(record_index.time, "monotonic", lambda: now[0])
        index._last_flush = now[0]
        now[0] += 31
        assert index.due()  # 30 s
        index._flush_cost = 3.0  # the last merge took 3 s: wait 60 s
        assert not index.due()
        now[0] += 30
        assert index.due()
        for i in range(1999):
            index.put(f"d{i}.csv", "1:2:3", record)
        index._last_flush = now[0]
        assert index.pending == 2000 and index.due()  # entries, whatever the time
        monkeypatch.undo()
        os.makedirs(out.root, exist_ok=True)
        index.flush()
        assert index.pending == 0 and index.size == 2000 and index._flush_cost > 0 and not index.due()
    finally:
        index.close()


FULL_DISK = r"""
import io, json, resource, signal, sys
from mineru_cli.report import DocumentReport, Reporter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG) or is cut short
resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
rep = Reporter(quiet=True, stream=io.StringIO(), events=sys.argv[1], keep=False)
for i in range(40):
    r = rep.add(DocumentReport(input=f"folder/document-{i:03d}.csv", status="converted", reason="converted"))
    rep.finished(r)
rep.close_events()
print(json.dumps(rep._events is None))
"""


def test_events_file_on_a_full_disk_keeps_whole_lines(tmp_path):
    """The disk fills while the events file is written (RLIMIT_FSIZE: a write past 1,500 bytes
    is cut short, the next fails): the line written in part is cut off again, so the file is
    whole JSON lines (start, then documents in order), and the run goes on without events."""
    events = tmp_path / "ev.jsonl"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(events)], capture_output=True, text=True,
                          env=cli_env(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = events.read_bytes()
    assert 0 < len(data) <= 1500 and data.endswith(b"\n"), data[-200:]
    lines = [json.loads(l) for l in data.decode().splitlines()]
    assert lines[0]["event"] == "start" and len(lines) >= 3
    assert [l["input"] for l in lines[1:]] == [f"folder/document-{i:03d}.csv" for i in range(len(lines) - 1)]
