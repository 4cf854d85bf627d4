"""The done-record index: what a rerun needs of every done-record, in one SQLite file, so a
rerun over a finished OUTPUT does not read one done-record per document.

``OUTPUT/.mineru-cli/index.sqlite`` holds, per output key, the *slim record* (the input's size,
time, fingerprint, ETag and type, the settings, the result files with their sizes, the page
count and tier: :func:`slim_record`) and the *signature* of the done-record it was taken from:
``"<size>:<mtime_ns>:<inode>"`` of the file on local disk, the object's ETag on a remote OUTPUT.
The done-record stays the truth: an entry is used only while its signature matches the
done-record that is there now (one ``os.stat``, or the OUTPUT listing on S3); a done-record
written by another run, restored from a backup or deleted makes the entry stale, and the
document's done-record is read as before.

Writing: entries are collected in a *delta* (a SQLite file in a temporary folder of this run)
and merged into the index (:meth:`RecordIndex.flush`) only by a run that holds OUTPUT's writer
lock, every ``FLUSH_ENTRIES`` entries or ``FLUSH_SECONDS`` and at the end. On a remote OUTPUT
the index is downloaded once at the start (one GET), merged locally and uploaded as one object
at each flush. SQLite keeps the parent's memory flat: nothing is held per document.

Must not: decide whether a document is done (``plan``), read done-records (``records``), or
import fsspec (storage calls go through ``storage``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from typing import Any, Iterable

from . import tempdirs
from .statcheck import _scan, fetch_rows, index_key as _key, sqlite_uri

INDEX_NAME = "index.sqlite"
INDEX_SCHEMA = "3"
FLUSH_ENTRIES = 2000
FLUSH_SECONDS = 30.0
SLIM_MARK = "slim"  # key of a slim record: True (never written as a done-record)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, sig TEXT NOT NULL, settings TEXT NOT NULL,
                                    size, mtime, fingerprint, etag, type, files TEXT NOT NULL, pages, tier)
                                    WITHOUT ROWID;
"""


SLIM_INPUT = ("size", "mtime", "fingerprint", "etag", "type")


def slim_record(record: dict) -> dict:
    """What a rerun's plan needs of a done-record (``plan._already_done``,
    ``plan.render_only_formats``, ``records.needs_new_mtime``): ``input`` (its size, mtime,
    fingerprint, etag and type), ``settings``, ``files`` (``[{"name", "size"}]``, names that are
    plain relative paths: ``records.listed_files``), ``pages``, ``tier``, and ``slim: True``. A
    slim record is never written back as a done-record: a document that needs its whole record
    (a render-only rerun) reads it."""
    rin = record.get("input") if isinstance(record.get("input"), dict) else {}
    return {"input": {k: rin.get(k) for k in SLIM_INPUT}, "settings": record.get("settings"),
            "files": [{"name": n, "size": z} for n, z in listed_files(record)],
            "pages": record.get("pages"), "tier": record.get("tier"), SLIM_MARK: True}


def file_entries(record: dict) -> list[dict]:
    """The entries of ``record["files"]`` that are objects with a string ``name``; none when
    ``files`` is not a list."""
    files = record.get("files")
    if not isinstance(files, list):
        return []
    return [f for f in files if isinstance(f, dict) and isinstance(f.get("name"), str)]


def files_well_formed(record: dict) -> bool:
    """Whether ``record["files"]`` is what a commit writes: a non-empty list of objects, each
    with a string ``name`` (a record damaged by hand or by a tool is not taken as done:
    ``plan._already_done``, and not indexed)."""
    files = record.get("files")
    return isinstance(files, list) and bool(files) and len(file_entries(record)) == len(files)


def listed_files(record: dict) -> list[tuple[str, int | None]]:
    """``(name, size)`` of the result files a done-record lists (``files``); names that are not
    plain relative paths inside the folder (absolute, with ``\\``, or an empty, ``.`` or ``..``
    part) are left out, and so is a ``files`` that is not a list (:func:`plan._already_done`
    does not take such a record as done)."""
    out = []
    for f in file_entries(record):
        name = f["name"]
        if name and name[0] != "/" and "\\" not in name:
            parts = name.split("/")
            if "" in parts or "." in parts or ".." in parts:
                continue
            size = f.get("size")
            out.append((name, size if isinstance(size, int) else None))
    return out


_SCALARS = (int, float, str, type(None))


def _row(slim: dict) -> tuple:
    """The index columns of a slim record after the key and signature: settings (JSON text),
    the input's size, mtime, fingerprint, etag and type, the files (a JSON array ``[name, size,
    name, size, ...]``), pages and tier. SQLite keeps each scalar's own type (the columns have
    no declared type). ASCII JSON: a lone surrogate (a file name that is not UTF-8) as its
    escape, which SQLite's UTF-8 text can hold. Raises ValueError for a record whose values are
    not plain scalars (it is then not indexed: a rerun reads it)."""
    import json

    rin = slim["input"]
    scalars = (rin["size"], rin["mtime"], rin["fingerprint"], rin["etag"], rin["type"], slim["pages"], slim["tier"])
    for v in scalars:
        if not isinstance(v, _SCALARS) or isinstance(v, bool):
            raise ValueError(f"not a plain value: {v!r}")
        if isinstance(v, str):
            v.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    flat: list = []
    for f in slim["files"]:
        flat += (f["name"], f["size"])
    dumps = json.dumps
    return (settings_text(slim["settings"]), *scalars[:5],
            dumps(flat, separators=(",", ":")), *scalars[5:])


def settings_text(settings: Any) -> str:
    """The index's text of a done-record's ``settings``: compact JSON with sorted keys, ASCII
    (``statcheck`` compares it with this run's: ``plan.finished_expectations``)."""
    import json

    return json.dumps(settings, separators=(",", ":"), sort_keys=True)


REBUILT = "not used; the next run that writes OUTPUT writes it again"


def is_slim(record: dict | None) -> bool:
    """Whether ``record`` is a slim record (:func:`slim_record`)."""
    return bool(record) and record.get(SLIM_MARK) is True


def local_signature(st: os.stat_result) -> str:
    """The signature of a done-record file on local disk: size, modification time in
    nanoseconds and inode (``os.replace`` of a new record gives a new inode)."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _connect(path: str, journal: str = "DELETE") -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA synchronous=OFF")  # a cache: a torn index is found by the signatures
    con.execute(f"PRAGMA journal_mode={journal}")
    con.executescript(_SCHEMA)
    return con


class RecordIndex:
    """The done-record index of one opened OUTPUT (``store.Output``) for one run.

    ``lookup(keys)`` -> ``{key: (signature, slim record, files JSON)}`` for the keys the index holds;
    ``put(key, signature, record)`` records a done-record this run read or committed (in the
    delta); ``flush()`` merges the delta into the index (call it only with the writer lock
    held); ``close()`` removes the run's temporary files. Never raises for a damaged or
    unreadable index: it is then empty (and replaced at the next flush), with ``problem`` set
    to one line saying why. Thread-safe (one lock around the SQLite connections).
    """

    def __init__(self, out: Any, *, download: bool = True) -> None:
        self.out = out
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._tmp = tempdirs.make("index")
        self._delta = _connect(os.path.join(self._tmp, "delta.sqlite"), journal="OFF")  # this run's only
        self.pending = 0  # entries in the delta
        self.written = 0  # entries merged into the index by this run
        self.size = 0  # entries in the index
        self.damaged = False  # the index file is damaged or of another schema: replaced at the next flush
        self.unusable = False  # a folder where the index should be: neither read nor written
        self.unindexed = 0  # done-records not indexed (values that are not plain JSON scalars)
        self._settings: dict[str, Any] = {}  # settings text -> decoded (shared by the slim records)
        self._buffer: list[tuple] = []  # entries not yet in the delta
        self._last_flush = time.monotonic()
        self._flush_cost = 0.0  # seconds the last merge (and upload) took
        if out.is_local:
            self.path = os.path.join(out.root, ".mineru-cli", INDEX_NAME)
            self.remote = None
        else:
            self.path = os.path.join(self._tmp, INDEX_NAME)
            self.remote = out.path(".mineru-cli", INDEX_NAME)
            if download:
                self._download()
        self.where = self.remote or self.path  # the index as the user knows it (messages)
        self._main = self._open_main()

    # --- opening ----------------------------------------------------------------------------

    def _download(self) -> None:
        """The remote index into this run's temporary folder, streamed to disk (one GET; it
        grows with OUTPUT: never held in memory)."""
        from .storage import retrying

        try:
            retrying(self.out.fs.get_file, self.remote, self.path)
        except FileNotFoundError:
            self._discard_partial()
        except Exception as exc:  # noqa: BLE001 - the index only saves reads
            self._discard_partial()
            self.problem = f"cannot read the done-record index ({type(exc).__name__}: {exc})"

    def _connect_main(self) -> sqlite3.Connection:
        """The index file, opened for reading and writing where the file allows (SQLite then
        opens it read-only by itself when the file or its disk is read-only): a run killed in
        the middle of a merge leaves a hot journal (``index.sqlite-journal``), which SQLite rolls
        back on the first read only through a writable connection (a ``mode=ro`` one reports
        the file as damaged). This run writes the index only in :meth:`flush`, under the writer
        lock. Source: https://www.sqlite.org/lockingv3.html#hot_journals"""
        try:
            return sqlite3.connect(sqlite_uri(self.path, "rw"), uri=True, timeout=10, check_same_thread=False)
        except sqlite3.OperationalError:  # no write access to the folder or file: read it as it is
            return sqlite3.connect(sqlite_uri(self.path, "ro"), uri=True, timeout=10, check_same_thread=False)

    def _discard_partial(self) -> None:
        try:
            os.remove(self.path)
        except OSError:
            pass

    def _open_main(self) -> sqlite3.Connection | None:
        if not os.path.exists(self.path):
            return None
        if os.path.isdir(self.path):
            self.problem = f"done-record index {self.where} is a folder, not a file: not used (remove it)"
            self.unusable = True  # nothing is written there either (flush)
            return None
        try:
            con = self._connect_main()
            row = con.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
            if not row or row[0] != INDEX_SCHEMA:
                con.close()
                self.problem = (f"done-record index {self.where}: schema {row[0] if row else None}, not "
                                f"{INDEX_SCHEMA}: {REBUILT}")
                self.damaged = True
                return None
            self.size = con.execute("SELECT count(*) FROM records").fetchone()[0]
            return con
        except sqlite3.Error as exc:
            self.problem = f"done-record index {self.where} is damaged ({exc}): {REBUILT}"
            self.damaged = True
            return None

    # --- reading ------------------------------------------------------------------------------

    @property
    def readable(self) -> bool:
        """Whether the index file was opened and is of this schema (:attr:`path` can be read by
        another process: ``statcheck``)."""
        return self._main is not None

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[str, dict]]:
        """The index's entries of ``keys``: ``{key: (signature, slim record, files)}`` (keys it
        does not hold are left out; ``files``: the record's files as the index holds them, a JSON
        array ``[name, size, name, size, ...]``). The settings of one run are mostly the same: each distinct settings
        text is decoded once and its dict shared (read-only) by the records that have it."""
        import json

        if self._main is None:
            return {}
        found: dict[str, tuple[str, dict]] = {}
        cache = self._settings
        scan, mark = _scan, SLIM_MARK
        with self._lock:
            try:
                rows = fetch_rows(self._main, keys, "key, sig, settings, size, mtime, fingerprint, etag, type, files, "
                                                    "pages, tier")
                # each row as a slim record (slim_record's shape), inlined: a large rerun
                # without the stat helper spends a tenth of its time here
                for k, (sig, settings, size, mtime, fp, etag, kind, files, pages, tier) in rows.items():
                    decoded = cache.get(settings)
                    if decoded is None:
                        decoded = cache[settings] = json.loads(settings)
                    flat = iter(scan(files, 0)[0])
                    found[k] = (sig, {"input": {"size": size, "mtime": mtime, "fingerprint": fp, "etag": etag,
                                                "type": kind},
                                      "settings": decoded, "files": [{"name": f, "size": z} for f, z in zip(flat, flat)],
                                      "pages": pages, "tier": tier, mark: True}, files)
            except (sqlite3.Error, ValueError, TypeError, StopIteration) as exc:
                self.problem = f"done-record index {self.where} is damaged ({exc!r}): {REBUILT}"
                self.damaged = True
                self._main.close()
                self._main = None
                return {}
        return found

    # --- writing ------------------------------------------------------------------------------

    def put(self, key: str, signature: str | None, record: dict) -> None:
        """Note the done-record ``record`` of ``key`` with its ``signature`` (None: unknown,
        nothing noted) in this run's delta."""
        if not signature:
            return
        try:
            if not files_well_formed(record):  # a damaged record: never done (plan._already_done)
                raise ValueError("files is not a list of files")
            row = _row(slim_record(record))
        except (TypeError, ValueError, KeyError):  # not plain JSON data: not indexed (a rerun reads it)
            self.unindexed += 1
            return
        with self._lock:
            self._buffer.append((_key(key), signature, *row))
            self.pending += 1
            if len(self._buffer) >= 512:
                self._write_buffer()

    def _write_buffer(self) -> None:
        """Write the buffered entries into the delta in one transaction (lock held)."""
        rows, self._buffer = self._buffer, []
        if not rows:
            return
        try:
            self._delta.execute("BEGIN")
            self._delta.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._delta.execute("COMMIT")
        except sqlite3.Error as exc:  # the index only saves reads
            self.problem = f"cannot note done-records in the index ({type(exc).__name__}: {exc})"
            self.pending -= len(rows)

    def due(self) -> bool:
        """Whether the delta should be merged now: ``FLUSH_ENTRIES`` entries or ``FLUSH_SECONDS``
        (a remote OUTPUT uploads the whole index each time: there at least a quarter of the
        index's size, or four times the seconds). The seconds are at least 20 times what the
        last merge took, so a large index (an upload of hundreds of MB) costs the run at most
        about 5 % of its time."""
        if not self.pending or self.unusable:
            return False
        age = time.monotonic() - self._last_flush
        if self.remote is None:
            return self.pending >= FLUSH_ENTRIES or age > max(FLUSH_SECONDS, 20 * self._flush_cost)
        return self.pending >= max(FLUSH_ENTRIES, self.size // 4) or age > max(4 * FLUSH_SECONDS,
                                                                                 20 * self._flush_cost)

    def flush(self) -> None:
        """Merge the delta into the index in one SQLite transaction (a remote OUTPUT: into the
        downloaded copy, then upload it: one PUT). Call with OUTPUT's writer lock held. Raises
        the storage's or SQLite's errors (the caller warns: the results stand, the next run
        reads those done-records one by one)."""
        with self._lock:
            if not self.pending or self.unusable:
                return
            began = time.monotonic()
            self._write_buffer()
            if self._main is not None:
                self._main.close()
                self._main = None
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            if self.damaged and os.path.exists(self.path):
                os.remove(self.path)  # damaged or of another schema: start again
            con = _connect(self.path)
            try:
                con.execute("ATTACH DATABASE ? AS delta", (os.path.join(self._tmp, "delta.sqlite"),))
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (INDEX_SCHEMA,))
                con.execute("INSERT OR REPLACE INTO records SELECT * FROM delta.records")
                con.execute("COMMIT")
                con.execute("DETACH DATABASE delta")
                self.size = con.execute("SELECT count(*) FROM records").fetchone()[0]
            finally:
                con.close()
            if self.remote is not None:
                self._upload()
            self._delta.execute("DELETE FROM records")
            self.written += self.pending
            self.pending = 0
            self.damaged = False  # replaced (``problem`` stays: the run's report tells what was found)
            self._last_flush = time.monotonic()
            self._flush_cost = self._last_flush - began
            self._main = self._open_main()

    def forget(self, keys: list[str]) -> int:
        """Remove the entries of ``keys`` (result folders removed by ``clean``) from the index
        file, and upload it again on a remote OUTPUT: the index holds what is in OUTPUT, not its
        history. Call it only with the writer lock held. Returns the entries removed (0 without
        a usable index). Raises OSError / sqlite3.Error / storage errors when it cannot write."""
        with self._lock:
            if self._main is None or not keys:
                return 0
            self._main.close()
            self._main = None
            con = _connect(self.path)
            try:
                con.execute("BEGIN IMMEDIATE")
                before = con.total_changes
                blobs = [_key(k) for k in keys]
                for i in range(0, len(blobs), 500):
                    part = blobs[i:i + 500]
                    con.execute(f"DELETE FROM records WHERE key IN ({','.join('?' * len(part))})", part)
                removed = con.total_changes - before
                con.execute("COMMIT")
                self.size = con.execute("SELECT count(*) FROM records").fetchone()[0]
            finally:
                con.close()
            if removed and self.remote is not None:
                self._upload()
            self._main = self._open_main()
            return removed

    def _upload(self) -> None:
        """The index file to the remote OUTPUT (one PUT, retried)."""
        from .storage import retrying

        retrying(self.out.fs.put_file, self.path, self.remote)

    def close(self) -> None:
        """Close the connections and remove this run's temporary files (the delta is lost:
        flush first)."""
        with self._lock:
            for con in (self._main, self._delta):
                if con is not None:
                    con.close()
            self._main = None
        shutil.rmtree(self._tmp, ignore_errors=True)
