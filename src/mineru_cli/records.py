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
import time
from typing import Any

from . import __version__
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


def _listed_files(record: dict) -> list[tuple[str, int | None]]:
    """``(name, size)`` of the result files a done-record lists (``files``); names that are not
    plain relative paths inside the folder are left out."""
    out = []
    for f in record.get("files") or []:
        name = f.get("name") if isinstance(f, dict) else None
        if isinstance(name, str) and name and not name.startswith("/") and "\\" not in name \
                and all(part not in ("", ".", "..") for part in name.split("/")):
            size = f.get("size")
            out.append((name, size if isinstance(size, int) else None))
    return out


def result_checker(out):
    """A function ``missing(key, record) -> list[str]``: the result files ``record`` (the
    done-record of ``OUTPUT/key``) lists that are gone or have another size than when they were
    committed (deleted or truncated by hand, a partial copy of OUTPUT), by name; empty when the
    result is whole. Called for finished documents only, so a rerun converts such a document
    again instead of skipping it.

    Local OUTPUT: one ``os.stat`` per listed file (about 3,000 for 1,000 mixed documents, some
    10 ms). Remote OUTPUT: the first call lists OUTPUT once with sizes (``fs.find``: S3 returns
    1,000 objects per request), later calls look up that listing; a listing error propagates
    (raises the storage's error), like a done-record that cannot be read."""
    if out.is_local:
        def missing_local(key: str, record: dict) -> list[str]:
            base = out.path(key)
            gone = []
            for name, size in _listed_files(record):
                try:
                    st = os.stat(os.path.join(base, name))
                except OSError:
                    gone.append(name)
                    continue
                if size is not None and st.st_size != size:
                    gone.append(name)
            return gone
        return missing_local

    listing: dict[str, int] = {}
    listed = False

    def missing_remote(key: str, record: dict) -> list[str]:
        nonlocal listed
        if not listed:
            root = out.root.rstrip("/")
            for path, meta in _retrying(out.fs.find, root, detail=True, withdirs=False).items():
                if meta.get("type") != "directory":
                    listing[path.rstrip("/")] = int(meta.get("size") or 0)
            listed = True
        base = out.path(key)
        gone = []
        for name, size in _listed_files(record):
            found = listing.get(f"{base}/{name}")
            if found is None or (size is not None and found != size):
                gone.append(name)
        return gone
    return missing_remote


def rewrite_done_record(out, key: str, record: dict) -> None:
    """Replace the done-record of a finished result with ``record`` (same result, refreshed
    input facts): one atomic replace on local disk (temporary file, ``os.replace``), one PUT on
    S3 (retried on transient errors). Raises the storage's errors."""
    data = record_bytes(record)
    if out.is_local:
        path = os.path.join(out.path(key), DONE_NAME)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    else:
        _retrying(out.fs.pipe_file, out.path(key, DONE_NAME), data)


def needs_new_mtime(p) -> bool:
    """True for a finished local document (a ``plan.PlannedDocument``) whose input was touched (time changed, content the
    same): its done-record gets the new time (:func:`refresh_mtimes`)."""
    return (p.action == "skip" and p.code == "done" and p.source.is_local and bool(p.record)
            and (p.record.get("input") or {}).get("mtime") != p.source.mtime)


def refresh_mtimes(out, touched: list, warn) -> None:
    """Finished local inputs whose modification time changed but whose content hash matched
    (``touch``, a copy, a checkout): write their done-records again with the new time, so the
    next rerun trusts size and time (``plan.unchanged_without_reading``) instead of hashing the
    file again. A failure is a warning: the document stays finished, the next run hashes it.

    Called under the writer lock. The records were read before it was taken, so each is read
    again and only rewritten if it is still the one planned from (another run may have
    converted the document since: its record stays). ``touched``: ``plan.PlannedDocument`` s;
    ``warn(line)`` gets the failures."""
    try:
        now = read_done_records(out, [p.key for p in touched])
    except Exception as exc:  # noqa: BLE001
        warn(f"could not read done-records again to update modification times ({type(exc).__name__}: {exc}); "
                 f"the next run hashes those inputs again")
        return
    touched = [p for p in touched if now.get(p.key) == p.record]

    def one(p) -> None:
        record = dict(p.record or {}, input=dict((p.record or {}).get("input") or {}, mtime=p.source.mtime))
        try:
            rewrite_done_record(out, p.key, record)
        except Exception as exc:  # noqa: BLE001
            warn(f"{p.source.rel}: could not update the modification time in its done-record "
                     f"({type(exc).__name__}: {exc}); the next run hashes it again")

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


class _ListReader:
    """Placeholder reader: ``read_done_records`` and ``result_checker`` (replaced by the index reader)."""

    def __init__(self, out) -> None:
        self.out = out
        self._check = result_checker(out)

    def read(self, keys: list[str]) -> dict[str, dict | None]:
        return read_done_records(self.out, keys)

    def missing(self, key: str, record: dict) -> list[str]:
        return self._check(key, record)

    def note_done(self, key: str, record: dict) -> None:
        pass

    def close(self, write_index: bool) -> None:
        pass


def open_record_reader(out):
    return _ListReader(out)
