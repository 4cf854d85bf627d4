"""The rerun's file checks on a local OUTPUT, in a helper process: the ``os.stat`` of each
document's done-record and of the result files its index entry lists.

Why a process: a rerun over finished documents is a stat-bound loop (about 4 per document)
next to Python work per document (planning, the report), and one interpreter runs Python on
one core at a time (the GIL). The helper runs the stats on the machine's other core while the
parent plans and reports: a rerun over 100,000 finished documents took 4.4-4.9 s in one
process (user 3.6 s, system 1.3 s), about two fifths of it in these stats
(``benchmarks/RESULTS.md``, section "Scale").

The helper is ``python -m mineru_cli.statcheck`` (it imports nothing of the project but this
module). It speaks ``multiprocessing.connection`` framing over its stdin and stdout: a request
is ``(root, items)``, each item ``(key, signature, files)`` (a done-record index entry's:
``record_index.RecordIndex.lookup``; None, None for a key the index lacks); the answer is one entry per item:
``None`` (no done-record, or it cannot be stat'ed), ``(signature, None)`` (a done-record whose
signature is not the one asked about: its files were not checked) or ``(signature, gone)``
(the names of ``files`` that are absent or of another size). It ends on end of input (the
parent closed its side or died: a ``kill -9`` of the run leaves no helper behind) and ignores
SIGINT (a Ctrl-C to the terminal's process group is the parent's to handle).

Must not: import anything but the standard library; write anything.
"""

from __future__ import annotations

import os
import subprocess
import sys

DONE_NAME = ".mineru-cli.done.json"  # records.DONE_NAME (records imports storage: not here)


def gone_files(base: str, files: str) -> list[str]:
    """The names of ``files`` (a done-record index entry's: a JSON array ``[name, size, name,
    size, ...]`` of plain names, checked when indexed) under the folder ``base`` (ending in
    ``/``) that are absent or, when the size is known, of another size. One ``os.stat`` per
    file; the same verdict as ``records.result_checker`` gives for a slim record."""
    import json

    flat = json.loads(files)
    stat = os.stat
    gone = []
    for i in range(0, len(flat), 2):
        name, size = flat[i], flat[i + 1]
        try:
            if stat(base + name).st_size != size and size is not None:
                gone.append(name)
        except OSError:
            gone.append(name)
    return gone


def check(root: str, items) -> list:
    """The answer to one request (see the module's docstring); ``root``: OUTPUT's folder
    without a trailing ``/``."""
    stat = os.stat
    answer: list = []
    for key, sig, files in items:
        base = f"{root}/{key}/"
        try:
            st = stat(base + DONE_NAME)
        except OSError:
            answer.append(None)
            continue
        now = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"  # record_index.local_signature
        answer.append((now, gone_files(base, files) if now == sig and files is not None else None))
    return answer


def serve() -> None:
    """The helper's loop: answer requests from stdin until end of input."""
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = Connection(sys.stdin.fileno(), writable=False), Connection(sys.stdout.fileno(), readable=False)
    die = os.environ.get("MINERU_CLI_TEST_STATCHECK_EXIT")  # test hook: die on this request (1-based)
    n = 0
    while True:
        try:
            root, items = inp.recv()
        except (EOFError, OSError):
            return
        n += 1
        if die and n >= int(die):
            os._exit(3)
        out.send(check(root, items))


class StatHelper:
    """The parent's handle on one helper process. :meth:`ask` sends a request and
    :meth:`answer` waits for its answer (requests are answered in order, so several may be in
    flight). Raises ``OSError``/``EOFError`` when the helper cannot be started or has died;
    the caller then does the checks itself. :meth:`close` ends it (end of input, then a kill
    after 2 s)."""

    def __init__(self) -> None:
        from multiprocessing.connection import Connection

        self._proc = subprocess.Popen([sys.executable, "-m", "mineru_cli.statcheck"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, close_fds=True)
        self._out = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._in = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()

    def ask(self, root: str, items: list) -> None:
        self._out.send((root, items))

    def answer(self) -> list:
        return self._in.recv()

    def close(self) -> None:
        for conn in (self._out, self._in):
            try:
                conn.close()
            except OSError:
                pass
        try:
            self._proc.wait(2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


if __name__ == "__main__":
    serve()
