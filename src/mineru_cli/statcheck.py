"""The rerun's done-record checks on a local OUTPUT, in a helper process: for each document,
its done-record index entry (``record_index``), the ``os.stat`` of its done-record and of the
result files the entry lists, and, for a document whose input and settings are this run's,
the verdict "finished".

Why a process: a rerun over finished documents is a stat-bound loop (about 4 per document)
next to Python work per document (planning, the report), and one interpreter runs Python on
one core at a time (the GIL). The helper runs the index lookups, the stats and the comparison
of the common case on the machine's other core while the parent walks, plans what is left and
reports: a rerun over 100,000 finished documents took 4.4-4.9 s in one process (user 3.6 s,
system 1.3 s), about two fifths of it in these stats, and the index lookups and planning of
finished documents were about half of the parent's work once the stats were here
(``benchmarks/RESULTS.md``, sections "Scale" and "Scale, third round").

The helper is ``python -m mineru_cli.statcheck REQUEST_FD ANSWER_FD`` (it imports nothing of
the project but this module). It speaks ``multiprocessing.connection`` framing over two pipes
of its own (not stdin and stdout: nothing a site hook prints can get in the way). The first
message is ``("index", path, expect)`` (no answer): the done-record index file (opened
read-only; None: no index, every document's done-record is read by the run) and ``expect``,
``{type: settings text}`` of this run (``plan.finished_expectations``; None: no "finished"
verdicts). Each later message is a request ``("check", root, items)``, each item ``(key, size, mtime)``
(the input's size in bytes and modification time in seconds as discovery found them; None,
None: no verdict wanted). The answer has one entry per item:

- ``None``: no done-record (or it cannot be stat'ed);
- ``(signature, None)``: a done-record the index has no current entry for (its signature,
  ``record_index.local_signature``, differs), or an entry whose files cannot be read: the run
  reads the done-record (and indexes it again; in the run's own process such an entry makes
  the whole index count as damaged, here only that entry is replaced);
- ``(signature, gone)``: the entry is current; ``gone`` lists the result files that are absent
  or of another size (the run plans the document from the entry);
- ``("done", type, pages)``: finished: the entry is current, it is of an input of this size and
  time with a content hash, its type's settings are this run's, and every result file is
  there with its size (what ``plan._already_done`` decides from the same entry, with
  ``MINERU_CLI_TRUST_MTIME`` on). Any other case is left to the run.

A request the helper cannot answer (the index cannot be read) gets a string saying why: the
run then checks in its own process. The helper ends on end of input (the parent closed its
side or died: a ``kill -9`` of the run leaves no helper behind) and ignores SIGINT (a Ctrl-C
to the terminal's process group is the parent's to handle).

Must not: import anything but the standard library; write anything.
"""

from __future__ import annotations

import os
import subprocess
import sys

DONE_NAME = ".mineru-cli.done.json"  # records.DONE_NAME (records imports storage: not here)
ANSWER_TIMEOUT = 300.0  # seconds the run waits for one answer before it checks in its own process
COLUMNS = "key, sig, size, mtime, fingerprint, type, settings, files, pages"  # record_index's table


def sqlite_uri(path: str, mode: str) -> str:
    """A SQLite ``file:`` URI of the local file ``path`` opened in ``mode`` (``ro``, ``rw``):
    every character of the path that URIs give a meaning to (``%``, ``?``, ``#``, a space) and
    every byte of a name that is not UTF-8 percent-encoded, a path starting with ``//`` not
    taken for an authority. Source: https://www.sqlite.org/uri.html"""
    from urllib.parse import quote

    return f"file:///{quote(os.fsencode(path).lstrip(b'/'))}?mode={mode}"


def gone_files(base: str, files: str) -> list[str]:
    """The names of ``files`` (a done-record index entry's: a JSON array ``[name, size, name,
    size, ...]`` of plain names, checked when indexed) under the folder ``base`` (ending in
    ``/``) that are absent or, when the size is known, of another size. One ``os.stat`` per
    file; the same verdict as ``records.result_checker`` gives for the slim record
    ``RecordIndex.lookup`` makes of the entry (same JSON decoding, names taken in pairs).
    Raises ValueError/TypeError for an entry that is not such an array."""
    flat = _scan(files, 0)[0]
    if not isinstance(flat, list):
        raise ValueError("not a list")
    stat = os.stat
    gone = []
    pairs = iter(flat)
    for name, size in zip(pairs, pairs):
        try:
            if stat(base + name).st_size != size and size is not None:
                gone.append(name)
        except OSError:
            gone.append(name)
    return gone


def _json_scanner():
    """``json.loads`` without its wrappers: CPython's C scanner of a ``JSONDecoder`` (made
    once), ``_scan(text, 0) -> (object, end)``; raises ``StopIteration``/``ValueError`` for bad
    text."""
    import json

    return json.scanner.make_scanner(json.JSONDecoder())


_scan = _json_scanner()


def index_key(key: str) -> bytes:
    """An output key as the index's ``key`` column holds it (UTF-8, a name that is not UTF-8
    by its original bytes)."""
    return key.encode("utf-8", "surrogateescape")


def fetch_rows(con, keys, columns: str) -> dict:
    """``{key: (the other columns)}`` of the index rows of ``keys`` (``columns``: the key
    first), from the SQLite connection ``con``; keys the index lacks are left out. A chunk of
    one walk is mostly a run of neighbouring keys: one range scan (a third cheaper than looking
    each key up); when the range holds much more than the chunk (keys far apart), the keys left
    are looked up 500 at a time. Raises ``sqlite3.Error``."""
    want = {index_key(k): k for k in keys}
    found: dict = {}
    if not want:
        return found

    def take(rows) -> int:
        for row in rows:
            k = want.get(row[0])
            if k is not None:
                found[k] = row[1:]
        return len(rows)

    limit = 2 * len(want) + 64
    seen = take(con.execute(f"SELECT {columns} FROM records WHERE key >= ? AND key <= ? LIMIT ?",
                            (min(want), max(want), limit)).fetchall())
    left = [b for b, k in want.items() if k not in found] if seen >= limit else []
    for i in range(0, len(left), 500):
        part = left[i:i + 500]
        take(con.execute(f"SELECT {columns} FROM records WHERE key IN ({','.join('?' * len(part))})",
                         part).fetchall())
    return found


class Index:
    """The done-record index file at ``path`` (``record_index.INDEX_NAME``), read-only; ``path``
    None: an index that holds nothing. :meth:`rows` raises ``sqlite3.Error`` when it cannot be
    read (damaged, locked for longer than 10 s)."""

    def __init__(self, path: str | None) -> None:
        self.con = None
        if path is not None:
            import sqlite3

            self.con = sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=10)

    def rows(self, keys: list[str]) -> dict:
        """``{key: (sig, size, mtime, fingerprint, type, settings, files, pages)}`` of the
        entries the index holds of ``keys`` (:func:`fetch_rows`)."""
        if self.con is None:
            return {}
        return fetch_rows(self.con, keys, COLUMNS)


def check(root: str, items, rows: dict, expect: dict | None) -> list:
    """The answer to one request (see the module's docstring); ``root``: OUTPUT's folder
    without a trailing ``/``; ``rows``: :meth:`Index.rows` of the items' keys; ``expect``:
    ``{type: settings text}`` or None."""
    stat = os.stat
    answer: list = []
    for key, size, mtime in items:
        base = f"{root}/{key}/"
        try:
            st = stat(base + DONE_NAME)
        except OSError:
            answer.append(None)
            continue
        now = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"  # record_index.local_signature
        row = rows.get(key)
        if row is None or row[0] != now:
            answer.append((now, None))
            continue
        _sig, rsize, rmtime, fingerprint, kind, settings, files, pages = row
        try:
            gone = gone_files(base, files)
        except (ValueError, TypeError, StopIteration):
            answer.append((now, None))  # a damaged entry: the run reads the done-record itself
            continue
        if (not gone and expect is not None and size is not None and rsize == size and rmtime == mtime
                and fingerprint and expect.get(kind) == settings):
            answer.append(("done", kind, pages))
        else:
            answer.append((now, gone))
    return answer


def serve(request_fd: int, answer_fd: int) -> None:
    """The helper's loop: answer requests until end of input (or the run stops reading)."""
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = Connection(request_fd, writable=False), Connection(answer_fd, readable=False)
    die = os.environ.get("MINERU_CLI_TEST_STATCHECK_EXIT")  # test hook: die on this request (1-based)
    n = 0
    index: Index | str = Index(None)
    expect = None
    while True:
        try:
            msg = inp.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "index":
            try:
                index, expect = Index(msg[1]), msg[2]
            except Exception as exc:  # noqa: BLE001 - said in each answer: the run checks itself
                index = f"cannot open the done-record index: {exc!r}"
            continue
        n += 1
        if die and n >= int(die):
            os._exit(3)
        _check, root, items = msg
        try:
            if isinstance(index, str):
                answer: list | str = index
            else:
                answer = check(root, items, index.rows([it[0] for it in items]), expect)
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error: the run checks this chunk itself
            answer = f"cannot read the done-record index: {exc!r}"
        try:
            out.send(answer)
        except OSError:  # the run closed its side (it stopped): nothing more to do
            return


class StatHelper:
    """The parent's handle on one helper process. :meth:`setup` first, then :meth:`ask` sends a
    request and :meth:`answer` takes its answer (a list; a string when the helper could not
    read the index) (requests are answered in order, so several may be in
    flight). A thread of the parent reads the answers as they come, so the helper never waits
    on a full pipe while the parent writes the next request (the two would wait for each other
    for ever). Raises ``OSError`` when the helper cannot be started or its pipe is closed;
    :meth:`answer` raises ``EOFError`` when the helper ended, ``TimeoutError`` after
    ``timeout`` seconds; the caller then does the checks itself. :meth:`close` ends it (end of
    input, then a kill after 2 s)."""

    def __init__(self) -> None:
        import queue
        import threading
        from multiprocessing.connection import Connection

        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        try:
            flags = ["-X", "utf8"] if sys.flags.utf8_mode else []
            self._proc = subprocess.Popen([sys.executable, *flags, "-m", "mineru_cli.statcheck", str(req_r), str(ans_w)],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          pass_fds=(req_r, ans_w), close_fds=True)
        except BaseException:
            for fd in (req_r, req_w, ans_r, ans_w):
                os.close(fd)
            raise
        os.close(req_r)
        os.close(ans_w)
        self._out = Connection(req_w, readable=False)
        self._in = Connection(ans_r, writable=False)
        self._answers: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="mineru-cli-statcheck", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                self._answers.put(self._in.recv())
        except BaseException as exc:  # noqa: BLE001 - the end (EOFError) or a broken answer: said to answer()
            self._answers.put(exc if isinstance(exc, Exception) else EOFError())

    def setup(self, index_path: str | None, expect: dict | None) -> None:
        """The first message: the index file and this run's ``{type: settings text}`` (see the
        module's docstring)."""
        self._out.send(("index", index_path, expect))

    def ask(self, root: str, items: list) -> None:
        """A request: ``items`` ``[(key, size, mtime)]`` under OUTPUT's folder ``root``."""
        self._out.send(("check", root, items))

    def answer(self, timeout: float = ANSWER_TIMEOUT) -> list:
        import queue

        try:
            got = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer from the stat helper in {timeout:g} s") from None
        if isinstance(got, Exception):
            self._answers.put(got)  # every later answer() says the same
            raise got if isinstance(got, (EOFError, OSError)) else EOFError(repr(got))
        return got

    def close(self) -> None:
        try:
            self._out.close()  # end of input: the helper ends
        except OSError:
            pass
        try:
            self._proc.wait(2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(2)
        try:
            self._in.close()
        except OSError:
            pass


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
