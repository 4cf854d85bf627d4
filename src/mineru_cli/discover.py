"""Walk inputs (local paths, or any fsspec URL such as ``s3://``) into source documents.

Order is stable: inputs in the order given, each folder walked depth-first with entries
sorted by name (byte order of the UTF-8 name). Hidden entries (name starting with ``.``) are
ignored unless ``hidden``; symbolic links are reported as skipped unless ``follow_symlinks``
(then followed, with loops detected by (device, inode) of the folders on the current path).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterator

# Types MinerU 4 converts (mineru/filetypes.py PARSEABLE_EXTENSIONS, 4.0.12), by sniffed suffix.
PDF_TYPES = frozenset({"pdf"})
IMAGE_TYPES = frozenset({"png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff", "jp2"})
FLASH_ONLY_TYPES = frozenset({"doc", "docx", "ppt", "pptx", "xls", "xlsx", "rtf", "odt", "ods", "odp",
                              "html", "htm", "shtml", "mhtml", "mht", "csv", "tsv", "epub", "ofd"})
CONVERTIBLE_TYPES = PDF_TYPES | IMAGE_TYPES | FLASH_ONLY_TYPES
# Recognised, but MinerU 4's parser does not convert them (mineru/filetypes.py TEXT_EXTENSIONS).
TEXT_TYPES = frozenset({"txt", "text", "ftxt", "md", "markdown", "mdx", "rst", "tex", "latex", "adoc", "asciidoc"})

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ENCRYPTED_PACKAGE_UTF16 = "EncryptedPackage".encode("utf-16-le")


@dataclass
class SourceDocument:
    """One input file found by discovery.

    ``uri``: local absolute path or fsspec URL; ``rel``: POSIX path relative to the input named
    on the command line (for a file named directly: its file name); ``size`` in bytes;
    ``mtime`` in seconds since the epoch; ``kind``: content-sniffed type (``pdf``, ``docx``,
    ...) or None; ``problem``/``code``: why it cannot be converted (None when it can);
    ``fatal``: whether that problem fails the run (a file that claims a document type but is
    not one) or only skips it (a README.txt next to the PDFs).
    """

    uri: str
    rel: str
    size: int
    mtime: float
    protocol: str = "file"
    kind: str | None = None
    problem: str | None = None
    code: str | None = None
    fatal: bool = False
    etag: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return PurePosixPath(self.rel).name

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"


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


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def discover(inputs: list[str], *, include: list[str] | None = None, exclude: list[str] | None = None,
             hidden: bool = False, follow_symlinks: bool = False, skip_paths: list[str] | None = None,
             storage_options: dict | None = None, sniff: bool = True) -> Discovery:
    """Walk ``inputs`` (files, folders, fsspec URLs) and sniff each file's type.

    ``include``/``exclude``: glob patterns matched against the relative path and the file
    name; with no ``include`` every file is a candidate and its sniffed type decides.
    ``skip_paths``: absolute local folders never entered, or URLs never listed (the output
    folder, when it lies inside an input). A missing input is reported in ``Discovery.errors``, never raised.
    Files are read (sniffed) after include/exclude, remote objects concurrently. With
    ``sniff=False`` they are only listed and marked ``extra["unread"]``, for the caller to
    read with :func:`sniff_documents` (convert reads the done-records first: a finished,
    unchanged document takes its type from its done-record and is not read again).
    """
    include = include or []
    exclude = exclude or []
    skip = {os.path.realpath(p) for p in (skip_paths or []) if not _is_remote(p)}
    found = Discovery()
    for item in inputs:
        if _is_remote(item):
            from .remote import walk_remote  # fsspec-based walk (s3:// and others)

            try:
                listed = [doc for doc in walk_remote(item, hidden=hidden, storage_options=storage_options or {},
                                                     found=found, skip=[p for p in (skip_paths or []) if _is_remote(p)])
                          if _selected(doc.rel, include, exclude)]
                if sniff:
                    sniff_documents(listed, storage_options or {})
                found.documents.extend(listed)
            except Exception as exc:  # noqa: BLE001 - reported per input
                from .redact import redact_url
                from .remote import explain_storage_error

                found.errors.append((item, f"cannot list {redact_url(item)}: {explain_storage_error(exc, item)}"))
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
            found.documents.append(doc)
            continue
        if stat.S_ISDIR(st.st_mode):
            root = os.path.abspath(path)
            for full, rel, lst in _walk_local(root, "", hidden, follow_symlinks, skip, {(st.st_dev, st.st_ino)}, found):
                if _selected(rel, include, exclude):
                    found.documents.append(_local_doc(full, rel, lst, follow_symlinks, sniff))
        else:
            rel = os.path.basename(path)
            if _selected(rel, include, exclude):
                found.documents.append(_local_doc(os.path.abspath(path), rel, st, follow_symlinks, sniff))
    return found


def _selected(rel: str, include: list[str], exclude: list[str]) -> bool:
    if include and not _matches(rel, include):
        return False
    return not (exclude and _matches(rel, exclude))


def _walk_local(folder: str, rel: str, hidden: bool, follow: bool, skip: set[str],
                ancestors: set[tuple[int, int]], found: Discovery) -> Iterator[tuple[str, str, os.stat_result]]:
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
            found.documents.append(doc_problem)
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


def _local_doc(full: str, rel: str, st: os.stat_result, follow: bool, sniff: bool) -> SourceDocument:
    doc = SourceDocument(uri=full, rel=rel, size=st.st_size, mtime=st.st_mtime)
    if stat.S_ISLNK(st.st_mode) and not follow:
        doc.problem, doc.code = "symbolic link not followed (use --follow-symlinks)", "symlink"
        return doc
    if sniff:
        sniff_local(doc)
    else:
        doc.extra["unread"] = True
    return doc


def sniff_documents(docs: list[SourceDocument], storage_options: dict | None = None) -> None:
    """Type the documents of ``docs`` still marked ``extra["unread"] = True``: local files
    here (:func:`sniff_local`), remote objects concurrently (``remote.sniff_remote_documents``,
    ``storage_options`` for their filesystem). Never raises: an unreadable file becomes the
    document's problem."""
    remote = []
    for doc in docs:
        if doc.extra.get("unread") is not True:
            continue
        if doc.is_local:
            sniff_local(doc)
        else:
            remote.append(doc)
    if remote:
        from .remote import sniff_remote_documents

        sniff_remote_documents(remote, storage_options or {})


def claimed_type(name: str) -> str | None:
    """The document type a file name's extension claims, or None."""
    ext = PurePosixPath(name).suffix.lower().lstrip(".")
    return ext if ext in CONVERTIBLE_TYPES else None


def classify(doc: SourceDocument, sniffed: str, head: bytes) -> None:
    """Set ``doc.kind`` and, for a file MinerU 4 cannot convert, ``problem``/``code``/``fatal``.

    ``sniffed`` is MinerU's own content detection (docvortex ``guess_suffix_by_*``);
    ``head`` the first bytes of the file. A file whose extension claims a document type but
    whose content is not convertible fails the run (``fatal``); any other non-document is
    skipped.
    """
    claimed = claimed_type(doc.name)
    doc.kind = sniffed or None
    if doc.size == 0 or sniffed == "empty":
        doc.problem, doc.code, doc.fatal = "empty file (0 bytes)", "empty", claimed is not None
        return
    if head.startswith(OLE_MAGIC) and ENCRYPTED_PACKAGE_UTF16 in head:
        doc.problem, doc.code, doc.fatal = "encrypted (password needed): Office file protected by a password", "encrypted", True
        return
    if sniffed in CONVERTIBLE_TYPES:
        return
    if sniffed in TEXT_TYPES:
        reason = f"unsupported type: plain text ({sniffed}) is not converted by MinerU 4"
        if claimed:
            doc.problem, doc.code, doc.fatal = f"not a document: named .{claimed} but the content is plain text", "not_a_document", True
        else:
            doc.problem, doc.code = reason, "unsupported_type"
        return
    what = f"content detected as {sniffed}" if sniffed and sniffed != "unknown" else "content not recognised"
    if claimed:
        doc.problem, doc.code, doc.fatal = f"not a document: named .{claimed} but {what}", "not_a_document", True
    else:
        doc.problem, doc.code = f"not a document: {what}", "not_a_document"


def sniff_local(doc: SourceDocument) -> None:
    """Sniff a local file's type from its content with MinerU's detection (docvortex)."""
    doc.extra.pop("unread", None)
    try:
        with open(doc.uri, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        doc.problem, doc.code, doc.fatal = f"corrupt or unreadable: {exc.strerror or exc}", "unreadable", True
        return
    if doc.size == 0:
        classify(doc, "empty", b"")
        return
    text_type = sniff_text(head, doc.name)
    if text_type is not None:
        classify(doc, text_type, head)
        return
    from docvortex.document import detection

    try:
        sniffed = detection.guess_suffix_by_path(doc.uri)
    except Exception as exc:  # noqa: BLE001
        doc.problem, doc.code, doc.fatal = f"corrupt or unreadable: {type(exc).__name__}: {exc}", "unreadable", True
        return
    classify(doc, sniffed, head)


TEXT_DOCUMENT_TYPES = {"html": "html", "htm": "html", "shtml": "html", "xhtml": "html",
                       "csv": "csv", "tsv": "tsv", "mhtml": "mhtml", "mht": "mhtml"}
_BINARY_MAGIC = (b"%PDF", b"PK\x03\x04", OLE_MAGIC, b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00",
                 b"MM\x00*", b"RIFF", b"\x00\x00\x00\x0cjP", b"{\\rtf")


def sniff_text(head: bytes, name: str) -> str | None:
    """Type of a text file from its first bytes, or None when the content is not plain text
    (then MinerU's own detection, docvortex, decides: it is fast for binary formats).

    MinerU's detection identifies *text* formats with a neural classifier (Magika, about
    40 ms a file on one core, measured here: more than converting a small CSV). Text content
    is told apart cheaply instead: a byte-order mark, or no NUL byte, no binary signature at
    the start and no ``%PDF`` in the first 64 KiB. Among text files the kind is taken from an HTML marker in the content
    (``<!doctype html``/``<html``), else from the extension (html/htm/csv/tsv/mhtml);
    text with a text-document extension (txt, md, rst...) is that type (not converted by
    MinerU 4), any other text is ``plain text`` (not a document). MinerU detects the type again
    in the worker before it parses, without its classifier where the extension decides
    (``engine.skip_magika_where_extension_decides``).
    """
    stripped = head.lstrip()
    if any(head.startswith(m) for m in _BINARY_MAGIC) or b"%PDF" in head:
        return None  # %PDF anywhere in the head: MinerU's detection finds a PDF even behind 1 KiB of text
    boms = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
    if not head.startswith(boms) and b"\x00" in head:
        return None
    low = stripped[:2048].lower()
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            low = head[:4096].decode("utf-16").lower().encode("utf-8", "ignore")
        except UnicodeDecodeError:
            low = b""
    ext = PurePosixPath(name).suffix.lower().lstrip(".")
    if ext in ("mhtml", "mht") or low.startswith(b"mime-version:") and b"multipart/related" in low:
        return "mhtml"
    if b"<!doctype html" in low or b"<html" in low:
        return "html"
    if ext in TEXT_DOCUMENT_TYPES:
        return TEXT_DOCUMENT_TYPES[ext]
    if ext in TEXT_TYPES:
        return ext  # plain-text document formats MinerU 4 does not convert (txt, md, rst, ...)
    return "plain text"  # source code, JSON, logs...: not a document


def fingerprint_local(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a local file's content, as ``sha256:<hex>``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()
