"""The rerun's file checks on a local OUTPUT, in a helper process: the ``os.stat`` of each
document's done-record and of the result files its index entry lists.

Why a process: a rerun over finished documents is a stat-bound loop (about 4 per document)
next to Python work per document (planning, the report), and one interpreter runs Python on
one core at a time (the GIL). The helper runs the stats on the machine's other core while the
parent plans and reports: a rerun over 100,000 finished documents took 4.4-4.9 s in one
process (user 3.6 s, system 1.3 s), about two fifths of it in these stats
(``benchmarks/RESULTS.md``, section "Scale").

The helper is ``python -m mineru_cli.statcheck REQUEST_FD ANSWER_FD`` (it imports nothing of
the project but this module). It speaks ``multiprocessing.connection`` framing over two pipes
of its own (not stdin and stdout: nothing a site hook prints can get in the way): a request
is ``(root, items)``, each item ``(key, signature, files)`` (a done-record index entry's:
``record_index.RecordIndex.lookup``; None, None for a key the index lacks); the answer is one
entry per item: ``None`` (no done-record, or it cannot be stat'ed), ``(signature, None)`` (a
done-record whose signature is not the one asked about, or an entry it cannot read: its files
were not checked) or ``(signature, gone)`` (the names of ``files`` that are absent or of
another size). It ends on end of input (the parent closed its side or died: a ``kill -9`` of
the run leaves no helper behind) and ignores SIGINT (a Ctrl-C to the terminal's process group
is the parent's to handle).

Must not: import anything but the standard library; write anything.
"""

from __future__ import annotations

import os
import subprocess
import sys

DONE_NAME = ".mineru-cli.done.json"  # records.DONE_NAME (records imports storage: not here)
ANSWER_TIMEOUT = 300.0  # seconds the run waits for one answer before it checks in its own process


def gone_files(base: str, files: str) -> list[str]:
    """The names of ``files`` (a done-record index entry's: a JSON array ``[name, size, name,
    size, ...]`` of plain names, checked when indexed) under the folder ``base`` (ending in
    ``/``) that are absent or, when the size is known, of another size. One ``os.stat`` per
    file; the same verdict as ``records.result_checker`` gives for the slim record
    ``RecordIndex.lookup`` makes of the entry (same JSON decoding, names taken in pairs).
    Raises ValueError/TypeError for an entry that is not such an array."""
    import json

    flat = json.JSONDecoder().raw_decode(files)[0]
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
        gone = None
        if now == sig and files is not None:
            try:
                gone = gone_files(base, files)
            except (ValueError, TypeError):
                gone = None  # a damaged entry: the run reads the done-record itself
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
    while True:
        try:
            root, items = inp.recv()
        except (EOFError, OSError):
            return
        n += 1
        if die and n >= int(die):
            os._exit(3)
        try:
            out.send(check(root, items))
        except OSError:  # the run closed its side (it stopped): nothing more to do
            return


class StatHelper:
    """The parent's handle on one helper process. :meth:`ask` sends a request and
    :meth:`answer` takes its answer (requests are answered in order, so several may be in
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

    def ask(self, root: str, items: list) -> None:
        self._out.send((root, items))

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
