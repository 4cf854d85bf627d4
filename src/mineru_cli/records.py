"""The done-record and the staged record: their bytes, reading them, checking a finished result
against its record, refreshing a record whose input was only touched.

The done-record (``OUTPUT/<key>/.mineru-cli.done.json``, written last by ``store.commit``) says
a result is finished and of which input and settings; the staged record (in a staging folder)
says a converted result waits to be committed. ``out`` below is an opened ``store.Output``.

Must not: write result files or run the commit protocol (``store``), decide what a rerun does
(``plan``), or import fsspec (storage calls go through ``storage``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, NamedTuple

from . import __version__
from .record_index import listed_files
from .storage import cat_object, retrying as _retrying

DONE_NAME = ".mineru-cli.done.json"
STAGED_NAME = ".mineru-cli.staged.json"
RECORD_SCHEMA = 1


def read_done_records(out, keys: list[str]) -> dict[str, dict | None]:
    """The done-records of ``keys``: ``{key: record}``, the record None when it is absent or
    unreadable (not a JSON object, or on local disk any OSError such as a permission error, so that
    document is converted again and its commit reports the error).

    Local OUTPUT: one read per key. Remote OUTPUT: the reads run concurrently on 16 threads
    (each one GET, :func:`cat_object`, retried on transient errors like every storage call), because one
    GET after the other makes a rerun over S3 cost a round trip per document (measured on the
    loopback moto server: 300 documents, 7 s of 8 s). s3fs' own pool allows 10 connections
    by default (aiobotocore ``max_pool_connections``), which then bounds the concurrency.
    Not ``fs.cat(list)``: fsspec expands glob characters in the paths it is given, so a
    document named ``a[1].pdf`` silently had no record.
    Raises the storage's error for anything but a missing or malformed record (a network
    failure must not look like "not converted yet").
    """
    paths = {k: out.path(k, DONE_NAME) for k in keys}
    result: dict[str, dict | None] = {}
    if out.is_local:
        for k, p in paths.items():
            try:
                with open(p, "rb") as fh:
                    result[k] = _as_record(fh.read())
            except OSError:
                result[k] = None
        return result

    def fetch(path: str) -> dict | None:
        try:
            return _as_record(_retrying(cat_object, out.fs, path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    if len(paths) <= 1:
        return {k: fetch(p) for k, p in paths.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, len(paths)), thread_name_prefix="mineru-cli-read") as ex:
        return dict(zip(paths, ex.map(fetch, paths.values())))


def json_bytes(obj: Any, **dumps_kwargs: Any) -> bytes:
    """``obj`` as UTF-8 JSON, non-ASCII text kept as is. A lone surrogate, which is how Python
    holds a byte of a file name that is not valid UTF-8 (PEP 383, ``os.fsdecode``), cannot be
    encoded as UTF-8; it is written as its JSON escape (``"caf\\udce9.csv"``), which
    ``json.loads`` reads back as the same string, so such a document's record matches it."""
    return json.dumps(obj, ensure_ascii=False, **dumps_kwargs).encode("utf-8", "backslashreplace")


RECORD_KEPT_KEYS = frozenset({"files", "settings"})
"""Done-record keys whose values are written as they are, never redacted: ``files`` (the names
of the result files beside the record, which a rerun checks and ``clean`` removes by name; the
folder they are in is named after the input anyway) and ``settings`` (compared on reruns)."""


def record_bytes(record: dict) -> bytes:
    """A done-record or staged record as compact JSON (compact: the C encoder), see
    :func:`json_bytes`; secrets redacted (``redact.redact_data``) but in ``RECORD_KEPT_KEYS``."""
    from .redact import redact_data

    return json_bytes(redact_data(record, keep=RECORD_KEPT_KEYS), separators=(",", ":"))


def _as_record(data: bytes) -> dict | None:
    """A done-record's bytes as a dict; None when they are not a JSON object."""
    try:
        rec = json.loads(data)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    return rec if isinstance(rec, dict) else None


def write_staged_record(staging_dir: str, record: dict) -> None:
    """Write the would-be done-record into a finished staging folder (atomic on local disk),
    so a later run can commit it without converting again."""
    tmp = os.path.join(staging_dir, STAGED_NAME + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(record_bytes(record))
    os.replace(tmp, os.path.join(staging_dir, STAGED_NAME))


def read_staged_record(staging_dir: str) -> dict | None:
    """The staged record of a finished staging folder, or None when absent or not a JSON
    object (:func:`_as_record`, as for done-records)."""
    try:
        with open(os.path.join(staging_dir, STAGED_NAME), "rb") as fh:
            return _as_record(fh.read())
    except OSError:
        return None


def result_checker(out):
    """A function ``missing(key, record) -> list[str]`` for a local OUTPUT: the result files
    ``record`` (the done-record of ``OUTPUT/key``, whole or slim) lists that are gone or have
    another size than when they were committed (deleted or truncated by hand, a partial copy of
    OUTPUT), by name; empty when the result is whole. Called for finished documents only, so a
    rerun converts such a document again instead of skipping it. One ``os.stat`` per listed
    file (about 3 per document). A remote OUTPUT is checked against its listing
    (:meth:`RecordReader.missing`)."""
    from .record_index import is_slim

    root = out.root.rstrip("/")
    stat = os.stat

    def missing_local(key: str, record: dict) -> list[str]:
        base = f"{root}/{key}/"
        gone = []
        if is_slim(record):  # its files were checked when it was indexed (record_index.slim_record)
            for f in record["files"]:
                try:
                    if stat(base + f["name"]).st_size != f["size"] and f["size"] is not None:
                        gone.append(f["name"])
                except OSError:
                    gone.append(f["name"])
            return gone
        for name, size in listed_files(record):
            try:
                st = stat(base + name)
            except OSError:
                gone.append(name)
                continue
            if size is not None and st.st_size != size:
                gone.append(name)
        return gone
    return missing_local


def rewrite_done_record(out, key: str, record: dict) -> str:
    """Replace the done-record of a finished result with ``record`` (same result, refreshed
    input facts): one atomic replace on local disk (temporary file, ``os.replace``), one PUT on
    S3 (retried on transient errors). Returns its signature for the done-record index
    (``store.Committed``). Raises the storage's errors."""
    import hashlib

    data = record_bytes(record)
    if out.is_local:
        from .record_index import local_signature

        path = os.path.join(out.path(key), DONE_NAME)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return local_signature(os.stat(path))
    _retrying(out.fs.pipe_file, out.path(key, DONE_NAME), data)
    return hashlib.md5(data).hexdigest()


def needs_new_mtime(p) -> bool:
    """True for a finished local document (a ``plan.PlannedDocument``) whose input was touched (time changed, content the
    same): its done-record gets the new time (:func:`refresh_mtimes`)."""
    return (p.action == "skip" and p.code == "done" and p.source.is_local and bool(p.record)
            and (p.record.get("input") or {}).get("mtime") != p.source.mtime)


def refresh_mtimes(out, touched: list, warn, on_written=None) -> None:
    """Finished local inputs whose modification time changed but whose content hash matched
    (``touch``, a copy, a checkout): write their done-records again with the new time, so the
    next rerun trusts size and time (``plan.unchanged_without_reading``) instead of hashing the
    file again. A failure is a warning: the document stays finished, the next run hashes it.

    Called under the writer lock. The records were read before it was taken (whole, or slim
    from the done-record index), so each is read again and only rewritten if it is still the
    one planned from (another run may have converted the document since: its record stays).
    ``touched``: ``plan.PlannedDocument`` s; ``warn(line)`` gets the failures;
    ``on_written(key, record, signature)`` each record written (the done-record index)."""
    from .record_index import is_slim, slim_record

    try:
        now = read_done_records(out, [p.key for p in touched])
    except Exception as exc:  # noqa: BLE001
        warn(f"could not read done-records again to update modification times ({type(exc).__name__}: {exc}); "
                 f"the next run hashes those inputs again")
        return

    def same(p) -> bool:
        rec = now.get(p.key)
        return rec is not None and (slim_record(rec) == p.record if is_slim(p.record) else rec == p.record)

    touched = [p for p in touched if same(p)]

    def one(p) -> None:
        old = now[p.key]
        record = dict(old, input=dict(old.get("input") or {}, mtime=p.source.mtime))
        try:
            signature = rewrite_done_record(out, p.key, record)
        except Exception as exc:  # noqa: BLE001
            warn(f"{p.source.rel}: could not update the modification time in its done-record "
                     f"({type(exc).__name__}: {exc}); the next run hashes it again")
            return
        if on_written is not None:
            on_written(p.key, record, signature)

    if out.is_local or len(touched) == 1:
        for p in touched:
            one(p)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="mineru-cli-touch") as ex:
        list(ex.map(one, touched))


def new_record(p, *, fingerprint: str | None, pages: int | None, seconds: float,
               quality: dict, attempts: list[dict], mineru_version: str | None) -> dict:
    """The done-record of a converted document ``p`` (a ``plan.PlannedDocument``; written last, by
    ``store.commit``, which adds ``files`` and ``committed_at``). ``seconds``: conversion time."""
    from .redact import redact_url

    d = p.source
    return {
        "schema": RECORD_SCHEMA,
        "tool": {"name": "mineru-cli", "version": __version__},
        "mineru_version": mineru_version,
        "input": {"uri": d.uri if d.is_local else redact_url(d.uri), "rel": d.rel, "size": d.size,
                  "mtime": d.mtime, "fingerprint": fingerprint, "etag": d.etag, "type": d.kind},
        "settings": p.settings_key,
        "tier": p.tier,
        "ocr_mode": p.ocr_mode,
        "pages": pages,
        "windows": [list(w) for w in p.windows],
        "seconds": round(seconds, 3),
        "quality": quality,
        "attempts": attempts,
        "created_at": time.time(),
        "done_record": DONE_NAME,
    }


class Finished(NamedTuple):
    """A done-record :meth:`RecordReader.read` found current, of this very input (size, time,
    a content hash) and this run's settings for its type, with every result file it lists
    there with its size: the document is finished (``plan.plan`` skips it as done without
    another check). Judged in the stat helper (``statcheck``) from the done-record index entry;
    ``kind``: the input's type as recorded, ``pages``: the recorded page count."""

    kind: str
    pages: int | None


class RecordReader:
    """The done-records of one run's OUTPUT (``store.Output``), read through the done-record
    index (``record_index.RecordIndex``) where it holds them, so a rerun over a finished OUTPUT
    costs one ``os.stat`` per document on local disk and, on a remote OUTPUT, one listing of
    OUTPUT (its pages: ``storage.list_pages``) and the index (one GET), not a GET per document.

    ``read(keys)``: as :func:`read_done_records` (``{key: record or None}``), a record from the
    index being slim (``record_index.slim_record``), and one the stat helper found finished a
    :class:`Finished` (after :meth:`use_helper` with expectations and :meth:`ask` with the
    inputs); ``missing(key, record)``: as
    :func:`result_checker`; ``note_done(key, record, signature)``: a commit of this run;
    ``flush_due(held)``/``close(write_index)``: merge what this run learnt into the index.
    ``empty``: OUTPUT holds nothing (a first run): nothing is listed or read. ``page_size``:
    keys per listing page (``Settings.list_page_size``).

    Local OUTPUT: a done-record's signature (``record_index.local_signature``) is compared
    with the index entry; a new or changed record is read and noted. Remote OUTPUT: OUTPUT is
    listed in a background thread (so the first documents are planned while later pages come);
    a key absent from the listing has no done-record (no GET), one whose ETag matches the index
    is taken from it, the others are read (:func:`read_done_records`). Raises the storage's
    errors (a listing that failed) from ``read`` and ``missing``.
    """

    def __init__(self, out, *, empty: bool = False, page_size: int | None = None) -> None:
        from .record_index import RecordIndex

        self.out = out
        self.empty = empty
        self.index = RecordIndex(out) if not empty or out.is_local else RecordIndex(out, download=False)
        self.from_index = 0  # done-records taken from the index
        self.from_storage = 0  # done-records read
        self.in_helper = 0  # documents whose done-record and result files the helper stat'ed (use_helper)
        self.finished_in_helper = 0  # of those, found finished by the helper (Finished)
        self.listing = None if out.is_local or empty else OutputListing(out, page_size=page_size)
        self._check = result_checker(out) if out.is_local else None
        self._closed = False
        self._helper = None  # statcheck.StatHelper: a local OUTPUT's stats on another core (use_helper)
        self._helper_wanted = False
        self._gone: dict[str, tuple[dict, list[str]]] = {}  # key: (slim record, gone files) the helper found
        self._asked: list[list[str]] = []  # the keys of each request sent to the helper ahead (ask)
        self._expect: dict | None = None  # use_helper's
        self._helper_indexed = False  # the helper was given the index file (it was readable then)
        self._helper_lock = threading.Lock()  # starting and stopping it: close() may come from another thread

    @property
    def asks_ahead(self) -> bool:
        """Whether :meth:`ask` sends anything (a helper is used): then asking a chunk before
        planning the one before it is worth it."""
        return self._helper_wanted

    def use_helper(self, expect: dict | None = None) -> None:
        """Check a local OUTPUT's done-records and result files in a helper process from the next
        :meth:`read` on (``statcheck``: the index lookups and stats of a large rerun run on
        another core). ``expect``: this run's ``{type: settings text}``
        (``plan.finished_expectations``): the helper then also judges the documents that are
        finished (:class:`Finished`). If the helper cannot be started or dies, the checks are
        done here again, with the same result."""
        self._helper_wanted = self.out.is_local and not self.empty
        self._expect = expect

    def ask(self, keys: list[str], inputs: list[tuple] | None = None) -> None:
        """Ask the helper (:meth:`use_helper`) about ``keys`` now; the :meth:`read` of the same
        ``keys`` then takes its answer (reads are taken in the order asked). ``inputs``: per key,
        ``(size in bytes, modification time in seconds)`` of a local input whose type is not
        known yet (discovery's), else ``(None, None)``: those of a finished document come back
        from :meth:`read` as :class:`Finished`. Nothing without a helper."""
        if not self._helper_wanted or not keys:
            return
        if self._send(self.out.root.rstrip("/"), keys, inputs):
            self._asked.append(keys)

    def read(self, keys: list[str]) -> dict[str, dict | None]:
        if self.empty or not keys:
            return dict.fromkeys(keys)
        return self._read_local(keys) if self.out.is_local else self._read_remote(keys)

    def _read_local(self, keys: list[str]) -> dict[str, dict | None]:
        from .record_index import local_signature

        out, index = self.out, self.index
        asked = self._asked and self._asked[0] == keys
        if asked:
            self._asked.pop(0)
        root = out.root.rstrip("/")
        self._gone = {}
        if self._helper_wanted:
            answer = self._answer(root, keys, asked)
            # an index found damaged here since the helper opened it: its entries are not used
            if answer is not None and not (index.damaged and self._helper_indexed):
                result = self._take_answer(root, keys, answer)
                if result is not None:
                    return result
            self._drop_helper()
        known = index.lookup(keys)
        result: dict[str, dict | None] = {}
        for k in keys:
            path = f"{root}/{k}/{DONE_NAME}"
            try:
                sig = local_signature(os.stat(path))
            except OSError:
                result[k] = None
                continue
            entry = known.get(k)
            if entry is not None and entry[0] == sig:
                result[k] = entry[1]
                self.from_index += 1
                continue
            result[k] = self._read_one(k, path, sig)
        return result

    def _take_answer(self, root: str, keys: list[str], answer: list) -> dict[str, dict | None] | None:
        """:meth:`read`'s result from the helper's answer (``statcheck``'s entries); None when the
        index turned out damaged in this process meanwhile (its entries are not used from
        then on: the caller checks in this process, and every done-record is read and indexed
        again, as without a helper)."""
        current = [k for k, got in zip(keys, answer) if got is not None and len(got) == 2 and got[1] is not None]
        # the helper read the same entries: taken only while the signature is the same
        known = self.index.lookup(current) if current else {}
        if self.index.damaged:
            return None
        result: dict[str, Any] = {}
        finished = 0
        for k, got in zip(keys, answer):
            if got is None:
                result[k] = None
            elif len(got) == 3:
                result[k] = Finished(got[1], got[2])
                finished += 1
            elif got[1] is None or (entry := known.get(k)) is None or entry[0] != got[0]:
                result[k] = self._read_one(k, f"{root}/{k}/{DONE_NAME}", got[0])
            else:
                result[k] = entry[1]
                self._gone[k] = (entry[1], got[1])
                self.from_index += 1
                self.in_helper += 1
        self.from_index += finished
        self.in_helper += finished
        self.finished_in_helper += finished
        return result

    def _read_one(self, key: str, path: str, sig: str) -> dict | None:
        """Read the done-record at ``path`` (local disk; stat'ed with signature ``sig``) and note
        it for the index."""
        try:
            with open(path, "rb") as fh:
                rec = _as_record(fh.read())
        except OSError:
            rec = None
        self.from_storage += 1
        if rec is not None:
            self.index.put(key, sig, rec)
        return rec

    def _send(self, root: str, keys: list[str], inputs: list[tuple] | None) -> bool:
        """Send the helper a request about ``keys`` (starting it first); False when there is no
        helper (:meth:`_drop_helper`)."""
        from .statcheck import StatHelper

        try:
            with self._helper_lock:
                if self._closed:
                    return False
                if self._helper is None:
                    helper = StatHelper()
                    self._helper_indexed = self.index.readable
                    try:
                        helper.setup(self.index.path if self._helper_indexed else None, self._expect)
                    except BaseException:
                        helper.close()
                        raise
                    self._helper = helper
                helper = self._helper
            if inputs is None:
                helper.ask(root, [(k, None, None) for k in keys])
            else:
                helper.ask(root, [(k, *i) for k, i in zip(keys, inputs)])
            return True
        except Exception:  # noqa: BLE001 - no helper (cannot start, its pipe closed): checked here
            self._drop_helper()
            return False

    def _answer(self, root: str, keys: list[str], asked: bool) -> list | None:
        """The helper's answer about ``keys`` (``statcheck.check``): to the request sent ahead
        (:meth:`ask`; ``asked``), else to one sent now; None when there is no helper (it could
        not be started, died or could not read the index, or requests came out of order: the
        caller checks in this process, for the rest of the run)."""
        if not asked and (self._asked or not self._send(root, keys, None)):
            self._drop_helper()
            return None
        helper = self._helper
        try:
            answer = helper.answer() if helper is not None else None
            if isinstance(answer, list) and len(answer) == len(keys):
                return answer
        except Exception:  # noqa: BLE001 - it ended, timed out or answered nonsense: checked here
            pass
        self._drop_helper()
        return None

    def _drop_helper(self) -> None:
        """No helper from here on: the checks are done in this process."""
        self._helper_wanted = False
        self._asked = []
        self._stop_helper()

    def _stop_helper(self) -> None:
        with self._helper_lock:
            helper, self._helper = self._helper, None
        if helper is not None:
            helper.close()

    def _read_remote(self, keys: list[str]) -> dict[str, dict | None]:
        out, listing = self.out, self.listing
        paths = {k: out.path(k, DONE_NAME) for k in keys}
        listing.wait_past(max(paths.values(), key=_s3_order) if paths else "")
        listed = listing.get_many(list(paths.values()))
        known = self.index.lookup([k for k in keys if paths[k] in listed])
        result: dict[str, dict | None] = {}
        to_read: list[str] = []
        for k in keys:
            meta = listed.get(paths[k])
            if meta is None:
                result[k] = None
                continue
            entry = known.get(k)
            if entry is not None and meta[1] and entry[0] == meta[1]:
                result[k] = entry[1]
                self.from_index += 1
            else:
                to_read.append(k)
        if to_read:
            got = read_done_records(out, to_read)
            self.from_storage += len(to_read)
            for k, rec in got.items():
                result[k] = rec
                etag = listed[paths[k]][1]
                if rec is not None and etag:
                    self.index.put(k, etag, rec)
        return result

    def full(self, key: str, record: dict | None) -> dict | None:
        """The whole done-record of ``key`` when ``record`` is a slim one from the index (a
        render-only rerun builds its new record from it); ``record`` otherwise."""
        from .record_index import is_slim

        if not is_slim(record):
            return record
        return read_done_records(self.out, [key]).get(key)

    def missing(self, key: str, record: dict) -> list[str]:
        found = self._gone.pop(key, None)
        if found is not None and found[0] is record:
            return list(found[1])
        if self._check is not None:
            return self._check(key, record)
        if self.listing is None:
            return [name for name, _size in listed_files(record)]
        base = self.out.path(key)
        names = listed_files(record)
        listing = self.listing
        listing.wait_past(max((f"{base}/{n}" for n, _ in names), key=_s3_order, default=base))
        found = listing.get_many([f"{base}/{n}" for n, _ in names])
        gone = []
        for name, size in names:
            meta = found.get(f"{base}/{name}")
            if meta is None or (size is not None and meta[0] != size):
                gone.append(name)
        return gone

    def fresh(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` whose result folder held no file of a result when OUTPUT was
        listed (no done-record, no file directly in it, nothing under its ``images/``; the
        folders of other documents below it do not count): a remote OUTPUT's commit need not
        look for an old result there (``store.commit`` ``fresh``). All of them when OUTPUT
        was empty; none on a local OUTPUT (looking there costs a ``scandir``)."""
        if self.empty:
            return set(keys)
        if self.listing is None:
            return set()
        root = self.out.root.rstrip("/")
        ranges = {k: f"{root}/{k}/" for k in keys}
        self.listing.wait_past(max((f"{root}/{k}0" for k in keys), key=_s3_order, default=""))
        return {k for k, prefix in ranges.items() if not self.listing.has_result_files(prefix)}

    def note_done(self, key: str, record: dict, signature: str | None) -> None:
        """A commit of this run wrote ``record`` (as written, with ``files``) with ``signature``
        (``store.Committed``)."""
        self.index.put(key, signature, record)

    def flush_due(self, held: bool) -> None:
        """Merge what this run learnt into the index when it is due and OUTPUT's writer lock is
        ``held``. Raises what ``RecordIndex.flush`` raises."""
        if held and self.index.due():
            self.index.flush()

    def close(self, write_index) -> None:
        """End of run: merge what this run learnt into the index when ``write_index()`` (called
        only when there is something to merge) says the writer lock is held or could be taken,
        then remove the temporary files; a second call does nothing. Raises what
        ``RecordIndex.flush`` raises (the temporary files are removed anyway)."""
        if self._closed:
            return
        with self._helper_lock:
            self._closed = True  # no helper is started after this
        self._stop_helper()
        try:
            if self.listing is not None:
                self.listing.stop()
            if self.index.pending and write_index():
                self.index.flush()
        finally:
            self.index.close()


def _s3_order(path: str) -> bytes:
    """Sort key of S3's listing order (ListObjectsV2 returns keys in UTF-8 binary order)."""
    return path.encode("utf-8", "surrogateescape")


class OutputListing:
    """OUTPUT listed once, in a background thread, page by page (``storage.list_pages``):
    ``{path: (size, etag)}`` in a SQLite table of a temporary folder (the parent's memory does
    not grow with OUTPUT). :meth:`wait_past` blocks until the listing has passed a path (keys
    come in UTF-8 binary order) or ended; a listing that failed raises its error there."""

    def __init__(self, out, *, page_size: int | None = None) -> None:
        import sqlite3
        import threading

        from . import tempdirs

        self.out = out
        self._tmp = tempdirs.make("listing")
        self._db = sqlite3.connect(os.path.join(self._tmp, "listing.sqlite"), isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("CREATE TABLE listing (path BLOB PRIMARY KEY, size INTEGER, etag TEXT) WITHOUT ROWID")
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._last: bytes = b""
        self._ended = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.pages = 0
        self._thread = threading.Thread(target=self._run, args=(page_size,), name="mineru-cli-list-output",
                                        daemon=True)
        self._thread.start()

    def _run(self, page_size: int | None) -> None:
        from .storage import list_pages

        try:
            for page in list_pages(self.out.fs, self.out.root.rstrip("/"), page_size=page_size):
                if self._stop.is_set():
                    break
                rows = [(_s3_order(p), size, etag) for p, size, _mtime, etag in page]
                with self._cond:
                    self._db.executemany("INSERT OR REPLACE INTO listing VALUES (?, ?, ?)", rows)
                    if rows:
                        self._last = max(self._last, rows[-1][0])
                    self.pages += 1
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - raised in the reading thread
            self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def wait_past(self, path: str) -> None:
        """Block until ``path`` was listed or would have been (the listing passed it or ended).
        Raises the listing's error."""
        want = _s3_order(path)
        with self._cond:
            while not self._ended and self._last < want:
                self._cond.wait(0.5)
            if self._error is not None:
                raise self._error

    def get_many(self, paths: list[str]) -> dict[str, tuple[int, str | None]]:
        """``{path: (size, etag)}`` of those of ``paths`` the listing holds (call
        :meth:`wait_past` first)."""
        found: dict[str, tuple[int, str | None]] = {}
        want = {_s3_order(p): p for p in paths}
        items = list(want)
        with self._lock:
            for i in range(0, len(items), 500):
                part = items[i:i + 500]
                for key, size, etag in self._db.execute(
                        f"SELECT path, size, etag FROM listing WHERE path IN ({','.join('?' * len(part))})", part):
                    found[want[key]] = (size, etag)
        return found

    def has_result_files(self, prefix: str) -> bool:
        """Whether the listing holds a file directly under ``prefix`` (a result folder, ending
        in ``/``) or under its ``images/`` (call :meth:`wait_past` first)."""
        low = _s3_order(prefix)
        high = low[:-1] + b"0"  # the byte after "/": every key under the prefix sorts below it
        with self._lock:
            rows = self._db.execute("SELECT path FROM listing WHERE path >= ? AND path < ?", (low, high))
            for (path,) in rows:
                rest = path[len(low):]
                if b"/" not in rest or rest.startswith(b"images/"):
                    return True
        return False

    def stop(self) -> None:
        """Stop listing (at the next page) and remove the temporary table."""
        import shutil

        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            self._db.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def open_record_reader(out, *, empty: bool = False, page_size: int | None = None) -> RecordReader:
    """The done-record reader of a run over ``out`` (:class:`RecordReader`)."""
    return RecordReader(out, empty=empty, page_size=page_size)
