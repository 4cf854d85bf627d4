"""fsspec output: the output layout, local staging, the commit protocol and the done-record.

Layout under OUTPUT, one folder per input document, mirroring the input's path relative to
the folder named on the command line::

    OUTPUT/a/report.pdf/report.md
    OUTPUT/a/report.pdf/report_content_list.json
    OUTPUT/a/report.pdf/report_middle.json
    OUTPUT/a/report.pdf/images/...
    OUTPUT/a/report.pdf/report.html, report.tex, report.docx, report_content_list_v2.json
                                                   (only when asked for: --format html,...)
    OUTPUT/a/report.pdf/.mineru-cli.done.json      <- done-record, written last

Commit protocol (works on any fsspec filesystem: single-object writes, no appends, no
renames required):

1. delete the old done-record, if any (from here on the folder is not "done");
2. write the ``.mineru-cli.pending`` marker (lets ``clean`` know the folder is ours);
3. delete the files of the old result (a render-only commit keeps those its done-record lists
   and adds the rendered files: :func:`commit` ``keep``);
4. put every new file (local output: ``os.replace`` from staging on the same disk, so the
   bytes are written once; remote: upload);
5. write the done-record, then delete the pending marker (if that last deletion fails, the
   result is still complete: a warning, see :func:`commit`).

A crash anywhere before step 5 leaves a folder without a done-record: it is never reported
as converted, and the next run replaces it.

Must not: import fsspec or know S3 (``storage`` does), hold the done-record's format
(``records``), or decide what is converted (``plan``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .records import DONE_NAME, STAGED_NAME, record_bytes
from .storage import (endpoint_from_env, holds_nothing, local_filesystem, open_filesystem, probe_filesystem,
                      protocol_of, retrying as _retrying)

PENDING_NAME = ".mineru-cli.pending"
META_DIR = ".mineru-cli"
# file name suffix (after the stem) of each format rendered from the middle JSON by mineru.render
RENDER_SUFFIXES = {"html": ".html", "latex": ".tex", "docx": ".docx", "content_list_v2": "_content_list_v2.json"}
NAME_MAX_BYTES = 200  # below the 255-byte NAME_MAX of common filesystems, leaves room for suffixes


def _short(name: str, limit: int = NAME_MAX_BYTES) -> str:
    """Shorten ``name`` to at most ``limit`` UTF-8 bytes with a stable hash: ``<prefix>-<hash10><ext>``."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:10]
    ext = PurePosixPath(name).suffix
    if len(ext.encode()) > 16:
        ext = ""
    keep = limit - len(digest) - 1 - len(ext.encode())
    prefix = raw[:keep].decode("utf-8", "ignore")
    return f"{prefix}-{digest}{ext}"


def output_key(rel: str) -> str:
    """Output folder (POSIX, relative to OUTPUT) for an input's relative path: the same path,
    every component shortened to fit the filesystem with a stable hash."""
    parts = rel.split("/")
    if "" not in parts and "." not in parts and max(map(len, parts)) <= NAME_MAX_BYTES // 4:
        return rel  # a clean relative path of short names: PurePosixPath would give it back (fast path)
    return "/".join(_short(part) for part in PurePosixPath(rel).parts)


def output_stem(rel: str) -> str:
    """File stem of the result files: the input's stem, shortened (leaving room for
    ``_content_list.json``)."""
    name = rel.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    if 0 < dot < len(name) - 1 and len(name) <= (NAME_MAX_BYTES - 24) // 4 and name not in (".", ".."):
        return name[:dot]  # PurePosixPath(rel).stem of a short name (fast path)
    return _short(PurePosixPath(rel).stem or PurePosixPath(rel).name, NAME_MAX_BYTES - 24)


def assign_output_keys(rels: list[str]) -> list[str]:
    """Output folder for each relative path, unique even on case-insensitive storage.

    Paths whose folders would collide when compared case-insensitively (``A.pdf`` and
    ``a.pdf``, or the same relative path under two inputs) keep the plain folder for the one
    that sorts first; the others get ``-<hash8 of the relative path>``. Stable across runs as
    long as the set of colliding names does not change.
    """
    keys = [output_key(r) for r in rels]
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k.casefold(), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: (keys[i], rels[i], i))
        for n, i in enumerate(members[1:], start=1):
            digest = hashlib.sha1(f"{rels[i]}\0{n}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
            keys[i] = f"{keys[i]}-{digest}"
    return keys


class KeyAssigner:
    """:func:`assign_output_keys` for a stream of relative paths, in discovery order: the first
    path whose folder collides case-insensitively with nothing seen before keeps the plain
    folder, each later one gets ``-<hash8>`` (the same hash, with the same ``n``, as
    :func:`assign_output_keys`). Discovery walks each folder in byte order of the names, which
    is the order :func:`assign_output_keys` sorts a collision group in, so both give the same
    keys for one input. Across inputs the earlier input's path wins a collision, where the
    sort put a later input's ``A.pdf`` before an earlier one's ``a.pdf``: an OUTPUT written by
    the sort, from two inputs holding such twins, has those twins converted again.

    Memory: one 64-bit hash per distinct folder key (Python's own ``hash`` of the case-folded
    key, a SipHash keyed per process; a Python int in a set, about 60 bytes per document) plus
    a count per colliding key; never the paths themselves. Two keys whose hashes collide (odds
    about n²/2⁶⁵: 3e-8 for a million documents) would be taken for twins in this run only.
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._twins: dict[int, int] = {}

    def key(self, rel: str) -> str:
        """The output key of ``rel`` (a document's relative path, POSIX)."""
        k = output_key(rel)
        h = hash(k.casefold())  # 64-bit SipHash, keyed per process: only this run compares them
        if h not in self._seen:
            self._seen.add(h)
            return k
        n = self._twins.get(h, 0) + 1
        self._twins[h] = n
        digest = hashlib.sha1(f"{rel}\0{n}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
        return f"{k}-{digest}"


def fail_names_remote_output_cannot_hold(documents: list, keys: list[str]) -> None:
    """A local file whose name is not valid UTF-8 (held by Python as lone surrogates, PEP 383)
    cannot name an object in a remote OUTPUT: S3 keys are UTF-8 (AWS "Creating object key
    names"). Such a document (a ``sniff.SourceDocument``, ``keys`` its output keys in the same
    order) fails with one line (``bad_name``); the others go on."""
    for d, k in zip(documents, keys):
        if d.problem:
            continue
        try:
            k.encode("utf-8")
        except UnicodeEncodeError:
            d.problem, d.code, d.fatal = ("file name is not valid UTF-8, so it cannot name an object in the "
                                          "remote OUTPUT; rename it (for example with convmv)", "bad_name", True)


def doc_id(out_key: str) -> str:
    """Stable id of a document's output folder (16 hex chars), used for staging folders."""
    return hashlib.sha1(out_key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _cache_dir() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


@dataclass
class Output:
    """An opened OUTPUT: ``fs`` (fsspec filesystem), ``root`` (path inside it, no protocol),
    ``url`` as the user gave it, ``is_local``, and ``staging_root`` (always a local folder).
    ``options``/``endpoint_url``: the storage options it was opened with (secrets inside:
    never print them; ``redact.redact_options`` first)."""

    _fs: Any
    root: str
    url: str
    is_local: bool
    staging_root: str
    options: dict = field(default_factory=dict, repr=False)
    endpoint_url: str | None = field(default=None, repr=False)
    ident: str = ""

    @property
    def fs(self) -> Any:
        """The fsspec filesystem. For a plain local path it is made on first use: the local
        code paths use ``os`` directly, and importing fsspec scans every installed package's
        entry points (``importlib.metadata``), some 20-40 ms of a rerun."""
        if self._fs is None:
            self._fs = local_filesystem()
        return self._fs

    @property
    def lock_dir(self) -> str:
        """Folder of the run lock: ``OUTPUT/.mineru-cli`` for a local OUTPUT, else
        ``~/.cache/mineru-cli/locks/<hash of URL and endpoint>`` (one lock per remote OUTPUT,
        on this machine)."""
        if self.is_local:
            return os.path.join(self.root, META_DIR)
        return os.path.join(_cache_dir(), "mineru-cli", "locks", self.ident)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def display(self, key: str) -> str:
        base = self.url.rstrip("/")
        return f"{base}/{key}/"


def output_skip_path(url: str, storage_options: dict | None) -> str | None:
    """What discovery leaves out for OUTPUT ``url`` (earlier results under an input are never
    inputs), known before OUTPUT is opened: :func:`open_output`'s ``root`` for a plain local
    path, the URL itself for a remote one (``Output.url``); None for other forms (a
    ``file://`` URL, chained URLs, a local path with storage options): known once opened."""
    if "://" not in url and "::" not in url and not storage_options:
        return os.path.abspath(os.path.expanduser(url))
    if "://" in url and "::" not in url and url.split("://", 1)[0] not in ("file", "local", ""):
        return url
    return None


def open_output(url: str, *, storage_options: dict | None = None, staging_dir: str | None = None,
                endpoint_url: str | None = None) -> Output:
    """Open OUTPUT through fsspec. The staging root is ``OUTPUT/.mineru-cli/staging`` for a
    local OUTPUT (same disk: commits are renames), else ``--staging-dir`` or
    ``~/.cache/mineru-cli/staging/<hash of URL and endpoint>`` (``$XDG_CACHE_HOME`` if set).
    Raises fsspec/OSError errors unchanged."""
    if "://" not in url and "::" not in url and not storage_options:  # a plain local path: no fsspec needed
        root = os.path.abspath(os.path.expanduser(url))
        return Output(_fs=None, root=root, url=url, is_local=True,
                      staging_root=os.path.abspath(staging_dir) if staging_dir else os.path.join(root, META_DIR, "staging"),
                      options={}, endpoint_url=endpoint_url, ident=hashlib.sha1(url.rstrip("/").encode()).hexdigest()[:16])
    fs, root = open_filesystem(url, storage_options, endpoint_url, writer=True)
    is_local = protocol_of(fs) in ("file", "local")
    if is_local:
        root = os.path.abspath(root)
    endpoint = "" if is_local else (endpoint_url or (storage_options or {}).get("endpoint_url") or endpoint_from_env() or "")
    ident = hashlib.sha1((f"{url.rstrip('/')}\0{endpoint}" if endpoint else url.rstrip("/")).encode()).hexdigest()[:16]
    if staging_dir:
        staging = os.path.abspath(staging_dir)
    elif is_local:
        staging = os.path.join(root, META_DIR, "staging")
    else:
        staging = os.path.join(_cache_dir(), "mineru-cli", "staging", ident)
    return Output(_fs=fs, root=root, url=url, is_local=is_local, staging_root=staging,
                  options=dict(storage_options or {}), endpoint_url=endpoint_url, ident=ident)


def list_staged_files(staging_dir: str) -> list[str]:
    """Relative POSIX paths of the result files in a staging folder (markers excluded), sorted."""
    out = []
    for dirpath, _dirs, files in os.walk(staging_dir):
        for f in files:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, staging_dir).replace(os.sep, "/")
            if rel in (STAGED_NAME, DONE_NAME, PENDING_NAME) or rel.startswith("w/"):
                continue
            out.append(rel)
    return sorted(out)


@dataclass
class Committed:
    """What :func:`commit` wrote: ``record`` (the done-record as written, with ``files`` and
    ``committed_at``), its ``signature`` for the done-record index
    (``record_index.local_signature`` of the file on local disk; on a remote OUTPUT the MD5 of
    its bytes in hex, which is the ETag S3 gives an object written in one PUT without SSE-KMS:
    AWS "Checking object integrity"; another ETag only makes the next run read the record), and
    ``warnings`` (one-line strings, usually none)."""

    record: dict
    signature: str | None
    warnings: list[str]


def commit(out: Output, key: str, staging_dir: str, record: dict, *, upload_attempts: int = 4,
           keep: list[dict] | None = None, fresh: bool = False) -> Committed:
    """Move a finished staging folder into ``OUTPUT/key`` following the commit protocol
    (module docstring). ``record`` is completed with the file list and written last.
    ``keep``: files of the result already there (``[{"name", "size"}]``, from its done-record)
    that stay and are listed again, next to the staged ones (a render-only rerun: the new
    formats are staged, the converted files stay); by default the old result is replaced.
    ``fresh``: the run's listing of a remote OUTPUT held no file of this result folder (no
    done-record, no result files): steps 1 and 3 are skipped there, which saves a DELETE and a
    listing of the folder per document (``records.RecordReader.fresh``).

    On success the staging folder is removed. On failure the exception propagates and the
    staging folder is kept, so a rerun can commit it without converting again.
    Once the done-record is written the result is complete: failing to delete the pending
    marker after it is returned as a warning (``Committed.warnings``), not raised; the marker left next to a done-record is harmless (the done-record decides; ``clean``
    removes it with the result).
    Raises OSError (or the filesystem's own errors) from the storage.
    """
    files = list_staged_files(staging_dir)
    kept = [f for f in (keep or []) if f.get("name") not in set(files)]
    record = dict(record)
    record["files"] = sorted(kept + [{"name": f, "size": os.path.getsize(os.path.join(staging_dir, f))} for f in files],
                             key=lambda f: f["name"])
    keep_names = {f["name"] for f in kept}
    record["committed_at"] = time.time()
    data = record_bytes(record)
    base = out.path(key)
    fs = out.fs
    warnings: list[str] = []
    if out.is_local:
        os.makedirs(base, exist_ok=True)
        _remove_local(os.path.join(base, DONE_NAME))
        with open(os.path.join(base, PENDING_NAME), "wb") as fh:
            fh.write(b"")
        _clear_local_result(base, keep_names)
        for f in files:
            dst = os.path.join(base, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(os.path.join(staging_dir, f), dst)
        tmp = os.path.join(base, DONE_NAME + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(base, DONE_NAME))
        from .record_index import local_signature

        signature = local_signature(os.stat(os.path.join(base, DONE_NAME)))
        try:
            _remove_local(os.path.join(base, PENDING_NAME))
        except OSError as exc:
            warnings.append(_marker_left(exc))
    else:
        def rm_quiet(p: str) -> None:
            try:
                fs.rm_file(p)
            except FileNotFoundError:
                pass

        if not fresh:
            _retrying(rm_quiet, f"{base}/{DONE_NAME}", attempts=upload_attempts)
        _retrying(fs.pipe_file, f"{base}/{PENDING_NAME}", b"", attempts=upload_attempts)
        new = {f"{base}/{f}" for f in files}
        for p in [] if fresh else _retrying(_remote_result_files, fs, base, attempts=upload_attempts):
            if p not in new and p[len(base) + 1:] not in keep_names:
                _retrying(rm_quiet, p, attempts=upload_attempts)
        for f in files:
            _retrying(fs.put_file, os.path.join(staging_dir, f), f"{base}/{f}", attempts=upload_attempts)
        _retrying(fs.pipe_file, f"{base}/{DONE_NAME}", data, attempts=upload_attempts)
        signature = hashlib.md5(data).hexdigest()
        try:
            _retrying(rm_quiet, f"{base}/{PENDING_NAME}", attempts=upload_attempts)
        except Exception as exc:  # noqa: BLE001 - the result is complete (done-record written)
            warnings.append(_marker_left(exc))
        try:
            fs.invalidate_cache(base)
        except Exception:  # noqa: BLE001
            pass
    shutil.rmtree(staging_dir, ignore_errors=True)
    return Committed(record=record, signature=signature, warnings=warnings)


def _marker_left(exc: BaseException) -> str:
    return (f"the pending marker {PENDING_NAME} could not be deleted after the done-record was written "
            f"({type(exc).__name__}: {exc}); the result is complete")


def _remote_result_files(fs, base: str) -> list[str]:
    """Objects of an earlier (possibly partial) result under ``base``: the plain files
    directly in it and everything under ``images/`` (deeper folders may be other documents'
    results); markers excluded."""
    try:
        found = fs.find(base)
    except FileNotFoundError:
        return []
    out = []
    for p in found:
        p = p.rstrip("/")
        if not p.startswith(base + "/"):
            continue
        rel = p[len(base) + 1:]
        if rel in (PENDING_NAME, DONE_NAME):
            continue
        if "/" not in rel or rel.startswith("images/"):
            out.append(p)
    return out


def _remove_local(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _clear_local_result(base: str, keep: set[str] | None = None) -> None:
    """Remove the files of an earlier (possibly partial) result in ``base``; only plain files
    and the images/ folder are ours (sub-folders may be other documents' results). Names in
    ``keep`` (relative POSIX paths) stay; with any ``images/...`` kept, the folder stays too."""
    keep = keep or set()
    with os.scandir(base) as it:
        for entry in it:
            if entry.name == PENDING_NAME or entry.name in keep:
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name == "images" and not any(k.startswith("images/") for k in keep):
                    shutil.rmtree(entry.path, ignore_errors=True)
                continue
            os.remove(entry.path)


PROBE_PREFIX = f"{META_DIR}-probe-"


def probe_writable(out: Output, write: bool = True) -> bool:
    """Write then delete a small probe object ``OUTPUT/.mineru-cli-probe-<pid>-<ms>``
    (``write=False``: only look at OUTPUT, write nothing; on S3 one ListObjectsV2 of at most one
    key. convert looks first and writes the probe only once it knows it will write there;
    ``--dry-run`` only looks). Returns True when OUTPUT holds nothing yet (missing or empty: a
    first run, which will write), else False (always False after a write probe).

    A remote OUTPUT is probed through a fail-fast client (``storage.s3_options(probe=True)``:
    2 attempts, 5 s connect timeout), so an unreachable endpoint fails in seconds.
    Raises OSError (or the filesystem's error) with the cause; callers turn it into exit 3
    with ``storage.explain_storage_error``.
    """
    name = f"{PROBE_PREFIX}{os.getpid()}-{int(time.time() * 1000)}"
    path = out.path(name)
    if out.is_local and not write:
        try:
            with os.scandir(out.root) as entries:
                return next(entries, None) is None
        except (FileNotFoundError, NotADirectoryError):
            return True
    if out.is_local:
        os.makedirs(out.root, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"probe")
        os.remove(path)
        return False
    fs = probe_filesystem(out.url, protocol_of(out.fs), out.options, out.endpoint_url)
    if not write:
        return holds_nothing(fs, out.url, out.root)
    fs.pipe_file(path, b"probe")
    fs.rm_file(path)
    return False


class RunLock:
    """One writer per OUTPUT: an OS file lock (``filelock``) on a local file.

    Local OUTPUT: ``OUTPUT/.mineru-cli/lock``; remote OUTPUT: ``~/.cache/mineru-cli/locks/<hash>/lock``
    (``Output.lock_dir``; guards against runs on this machine only). The kernel releases the lock when its process dies, so a lock left by a
    killed run is stale by construction and is taken over; ``holder`` tells who held it.
    """

    def __init__(self, lock_dir: str) -> None:
        from filelock import FileLock

        os.makedirs(lock_dir, exist_ok=True)
        self.path = os.path.join(lock_dir, "lock")
        self.info_path = os.path.join(lock_dir, "lock.info")
        self._lock = FileLock(self.path)
        self.previous: dict | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when a live run holds it. On success
        ``previous`` holds the info of a stale (killed) holder, if any."""
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        self.previous = self.holder()
        import socket

        with open(self.info_path, "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, fh)
        return True

    def holder(self) -> dict | None:
        try:
            with open(self.info_path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, json.JSONDecodeError):
            return None

    def release(self) -> None:
        _remove_local(self.info_path)
        self._lock.release()
