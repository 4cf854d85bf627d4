"""Walk inputs (local paths, or any fsspec URL such as ``s3://``) into source documents.

Order is stable: inputs in the order given, each folder walked depth-first with entries
sorted by name (byte order of the UTF-8 name). Hidden entries (name starting with ``.``) are
ignored unless ``hidden``; symbolic links are reported as skipped unless ``follow_symlinks``
(then followed, with loops detected by (device, inode) of the folders on the current path).
Remote prefixes are listed through ``storage``; what each file is, is ``sniff``'s job.

Must not: read file contents itself (``sniff``), decide what to do with a document (``plan``),
or import fsspec or know S3 (``storage`` does).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterator

from .sniff import SourceDocument, sniff_documents
from .storage import explain_storage_error, is_url, walk_listing


@dataclass
class Discovery:
    """What a walk found: ``documents`` in stable order, ``hidden_ignored`` count, and
    ``errors``: (input, one-line reason) for inputs that could not be read at all."""

    documents: list[SourceDocument] = field(default_factory=list)
    hidden_ignored: int = 0
    results_ignored: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


def _matches(rel: str, patterns: list[str]) -> bool:
    name = PurePosixPath(rel).name
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def discover(inputs: list[str], *, include: list[str] | None = None, exclude: list[str] | None = None,
             hidden: bool = False, follow_symlinks: bool = False, skip_paths: list[str] | None = None,
             storage_options: dict | None = None, sniff: bool = True, page_size: int | None = None) -> Discovery:
    """Walk ``inputs`` (files, folders, fsspec URLs) and sniff each file's type: all of
    :func:`discover_iter` collected into ``Discovery.documents`` (for ``clean`` and tests; a
    conversion streams :func:`discover_iter` instead).

    With ``sniff`` the files are read (sniffed) after include/exclude, remote objects
    concurrently; with ``sniff=False`` they are only listed and marked ``extra["unread"]``,
    for the caller to read with :func:`sniff_documents`. ``page_size``: keys per listing page
    of a remote prefix (:func:`discover_iter`).
    """
    found = Discovery()
    docs = list(discover_iter(inputs, found, include=include, exclude=exclude, hidden=hidden,
                              follow_symlinks=follow_symlinks, skip_paths=skip_paths,
                              storage_options=storage_options, page_size=page_size))
    if sniff:
        sniff_documents(docs, storage_options or {})
    found.documents = docs
    return found


def discover_iter(inputs: list[str], found: Discovery, *, include: list[str] | None = None,
                  exclude: list[str] | None = None, hidden: bool = False, follow_symlinks: bool = False,
                  skip_paths: list[str] | None = None, storage_options: dict | None = None,
                  stop=None, page_size: int | None = None, pace=None) -> Iterator[SourceDocument]:
    """Walk ``inputs`` lazily: yield each source document as the walk reaches it (a local
    folder is listed one folder at a time, a remote prefix one listing page at a time:
    :func:`walk_remote`), so a conversion starts while the walk goes on.

    ``include``/``exclude``: glob patterns matched against the relative path and the file
    name; with no ``include`` every file is a candidate and its sniffed type decides.
    ``skip_paths``: absolute local folders never entered, or URLs never listed (the output
    folder, when it lies inside an input). Files are not read: each is marked
    ``extra["unread"]`` for :func:`sniff_documents` (convert reads the done-records first: a
    finished, unchanged document takes its type from its done-record and is not read again).
    ``found`` collects what is not a document: ``errors`` (a missing input, a folder or prefix
    that cannot be listed: reported, never raised), ``hidden_ignored``, ``results_ignored``.
    A prefix whose listing fails on page N keeps the documents of pages 1..N-1 (already
    yielded) and adds one error for the input, saying how many objects were listed.
    ``stop``: a ``threading.Event``; the walk ends early once it is set. ``page_size``: keys
    per listing page of a remote prefix (1..1000; None: 1000, ``storage.list_pages``);
    ``pace()``: called before each listing page after a prefix's first (``storage.list_pages``).
    """
    include = include or []
    exclude = exclude or []
    skip = {os.path.realpath(p) for p in (skip_paths or []) if not is_url(p)}
    for item in inputs:
        if stop is not None and stop.is_set():
            return
        if is_url(item):
            listed = 0
            try:
                for doc in walk_remote(item, hidden=hidden, storage_options=storage_options or {}, found=found,
                                       skip=[p for p in (skip_paths or []) if is_url(p)], page_size=page_size,
                                       pace=pace):
                    if stop is not None and stop.is_set():
                        return
                    listed += 1
                    if _selected(doc.rel, include, exclude):
                        yield doc
            except Exception as exc:  # noqa: BLE001 - reported per input (what was listed before stays)
                from .redact import redact_url

                why = explain_storage_error(exc, item, denied="list this prefix")
                rest = (f" (the listing stopped after {listed} objects: the rest of {redact_url(item)} is not in "
                        "this run; a rerun lists it again)" if listed else "")
                found.errors.append((item, f"cannot list {redact_url(item)}: {why}{rest}"))
            continue
        path = item[len("file://"):] if item.startswith("file://") else item
        try:
            st = os.stat(path) if follow_symlinks else os.lstat(path)
        except OSError as exc:
            found.errors.append((item, f"{item}: {exc.strerror or exc}"))
            continue
        if stat.S_ISLNK(st.st_mode):
            doc = SourceDocument(uri=os.path.abspath(path), rel=os.path.basename(path.rstrip("/")), size=0, mtime=0)
            doc.problem, doc.code = "symbolic link not followed (use --follow-symlinks)", "symlink"
            yield doc
            continue
        if stat.S_ISDIR(st.st_mode):
            root = os.path.abspath(path)
            for entry in _walk_local(root, "", hidden, follow_symlinks, skip, {(st.st_dev, st.st_ino)}, found):
                if stop is not None and stop.is_set():
                    return
                if isinstance(entry, SourceDocument):  # unreadable entry
                    yield entry
                    continue
                full, rel, lst = entry
                if _selected(rel, include, exclude):
                    yield _local_doc(full, rel, lst, follow_symlinks)
        else:
            rel = os.path.basename(path)
            if _selected(rel, include, exclude):
                yield _local_doc(os.path.abspath(path), rel, st, follow_symlinks)


def _selected(rel: str, include: list[str], exclude: list[str]) -> bool:
    if include and not _matches(rel, include):
        return False
    return not (exclude and _matches(rel, exclude))


def _walk_local(folder: str, rel: str, hidden: bool, follow: bool, skip: set[str],
                ancestors: set[tuple[int, int]], found: Discovery) -> Iterator[tuple[str, str, os.stat_result] | SourceDocument]:
    """Depth-first walk of ``folder``: ``(path, rel, stat)`` per file, in name order (one
    folder's entries are listed and sorted at a time: memory grows with the widest folder and
    the depth, not with the tree), or a failed ``SourceDocument`` for an entry that cannot be
    stat'ed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name.encode("utf-8", "surrogateescape"))
    except OSError as exc:
        found.errors.append((folder, f"{folder}: cannot list folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        if entry.name.startswith(".") and not hidden:
            found.hidden_ignored += 1
            continue
        child_rel = f"{rel}/{entry.name}" if rel else entry.name
        try:
            is_link = entry.is_symlink()
            if is_link and not follow:
                yield entry.path, child_rel, entry.stat(follow_symlinks=False)
                continue
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:  # dangling link, permission
            doc_problem = SourceDocument(uri=entry.path, rel=child_rel, size=0, mtime=0)
            doc_problem.problem, doc_problem.code, doc_problem.fatal = f"corrupt or unreadable: {exc.strerror or exc}", "unreadable", True
            yield doc_problem
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.realpath(entry.path) in skip:
                continue
            if _is_result_folder(entry.path):
                found.results_ignored += 1
                continue
            key = (st.st_dev, st.st_ino)
            if key in ancestors:  # symlink loop
                found.errors.append((entry.path, f"{entry.path}: symbolic link loop, not followed"))
                continue
            yield from _walk_local(entry.path, child_rel, hidden, follow, skip, ancestors | {key}, found)
        elif stat.S_ISREG(st.st_mode):
            yield entry.path, child_rel, st


def _is_result_folder(path: str) -> bool:
    """A document folder written by mineru-cli (it holds our done-record or pending marker):
    an earlier OUTPUT lying inside an input is not walked as input."""
    return os.path.exists(os.path.join(path, ".mineru-cli.done.json")) or \
        os.path.exists(os.path.join(path, ".mineru-cli.pending"))


def _local_doc(full: str, rel: str, st: os.stat_result, follow: bool) -> SourceDocument:
    doc = SourceDocument(uri=full, rel=rel, size=st.st_size, mtime=st.st_mtime)
    if stat.S_ISLNK(st.st_mode) and not follow:
        doc.problem, doc.code = "symbolic link not followed (use --follow-symlinks)", "symlink"
        return doc
    doc.extra["unread"] = True
    return doc


def walk_remote(url: str, *, hidden: bool, storage_options: dict, found: Discovery,
                skip: list[str] | None = None, page_size: int | None = None, pace=None) -> Iterator[SourceDocument]:
    """List an fsspec URL (a prefix or one object) in key order, one listing page at a time
    (``storage.walk_listing``: the first document is yielded as soon as the first page has
    come, and only one page is held). Objects are not read here: each document is marked
    ``extra["unread"]`` until ``sniff.sniff_remote_documents`` reads it (after
    include/exclude, and in ``convert`` after the done-records: a finished, unchanged document
    is never downloaded again on a rerun). Hidden objects (a path part starting with ``.``)
    are counted in ``found.hidden_ignored`` unless ``hidden``.

    ``skip``: URLs of the same protocol whose objects are never taken as inputs (the OUTPUT,
    when it lies under the input prefix: earlier results must not be converted again).
    ``page_size``: keys per page (1..1000; None: 1000). Raises the storage's errors, when
    the listing fails, after yielding the documents of the pages listed before."""
    protocol, root, pages = walk_listing(url, storage_options, skip, page_size=page_size, pace=pace)
    for page in pages:
        for path, size, mtime, etag in page:
            rel = path[len(root):].lstrip("/") if path != root else path.rsplit("/", 1)[-1]
            if not hidden and any(part.startswith(".") for part in rel.split("/")):
                found.hidden_ignored += 1
                continue
            yield SourceDocument(uri=f"{protocol}://{path}", rel=rel, size=size, mtime=mtime, protocol=protocol,
                                 etag=etag, extra={"unread": True})
