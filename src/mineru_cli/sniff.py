"""What each input is: its type sniffed from its content, its problems, its page count.

Local files are read here; remote objects are read through ``storage`` (16 at a time), never
through fsspec directly. Types follow MinerU's own detection (docvortex), with a cheap
text check first; PDFs are opened with PDFium (pypdfium2, as MinerU does) for their page count.

Must not: walk folders or list prefixes (``discover``), decide what to do with a document
(``plan``), or know that S3 exists.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .storage import HEAD_WHOLE_MAX, explain_storage_error, read_head

PROBE_TIMEOUT = 15.0  # seconds for a PDF page-count probe

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


def sniff_documents(docs: list[SourceDocument], storage_options: dict | None = None) -> None:
    """Type the documents of ``docs`` still marked ``extra["unread"] = True``: local files
    here (:func:`sniff_local`), remote objects concurrently (:func:`sniff_remote_documents`,
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
    (``worker.skip_magika_where_extension_decides``).
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


def sniff_remote_documents(docs: list[SourceDocument], storage_options: dict, threads: int = 16) -> None:
    """Read and sniff (:func:`sniff_remote`) the documents of ``docs`` marked
    ``extra["unread"] = True`` (not those whose type came from a done-record). The reads run
    ``threads`` at a time (one GET each: objects read one after the other paid a round trip
    each), in batches of ``threads`` so at most that many objects (8 MiB each at most) are held;
    the type detection and the PDF page count then run one document at a time in this thread
    (PDFium is not thread-safe: pypdfium2 docs, "Incompatibility with Threading").
    Never raises: a read error is the document's problem (``unreadable``)."""
    pending = [d for d in docs if d.extra.get("unread") is True]
    if not pending:
        return
    from concurrent.futures import ThreadPoolExecutor

    def fetch(doc: SourceDocument):
        try:
            return read_head(doc.uri, storage_options, doc.size)
        except Exception as exc:  # noqa: BLE001 - the document's problem, reported by sniff_remote
            return exc

    with ThreadPoolExecutor(max_workers=min(threads, len(pending)), thread_name_prefix="mineru-cli-read") as ex:
        for i in range(0, len(pending), threads):
            batch = pending[i:i + threads]
            for doc, data in zip(batch, ex.map(fetch, batch)):
                sniff_remote(doc, data)


def sniff_remote(doc: SourceDocument, data: bytes | BaseException) -> None:
    """Sniff a remote object from :func:`storage.read_head`'s bytes (or the error reading them,
    which makes the document ``unreadable``), with the extension hint; a PDF's pages are
    counted when it was read whole."""
    doc.extra.pop("unread", None)
    if doc.size == 0:
        classify(doc, "empty", b"")
        return
    if isinstance(data, BaseException):
        doc.problem, doc.code, doc.fatal = f"corrupt or unreadable: {explain_storage_error(data)}", "unreadable", True
        return
    sniffed = sniff_text(data[: 1 << 16], doc.name)
    if sniffed is None:
        from docvortex.document import detection

        try:
            sniffed = detection.guess_suffix_by_bytes(data, doc.name)
        except Exception:  # noqa: BLE001
            sniffed = claimed_type(doc.name) or "unknown"
    classify(doc, sniffed, data[: 1 << 16])
    if doc.kind == "pdf" and not doc.problem and doc.size <= HEAD_WHOLE_MAX:
        pages, code, reason = pdf_probe(data)
        if code:
            doc.problem, doc.code, doc.fatal = reason, code, True
        else:
            doc.extra["pages"] = pages


def pdf_probe(path: str | bytes, timeout: float = PROBE_TIMEOUT) -> tuple[int | None, str | None, str | None]:
    """``(pages, code, reason)`` of a PDF (a local path or its bytes) through PDFium, within
    ``timeout`` seconds. Used for local inputs (plan) and remote ones (:func:`sniff_remote`).

    code/reason are set for an encrypted (user password) or unreadable PDF; a probe that does
    not finish in time gives ``corrupt`` (it runs in a daemon thread: a hung native call cannot
    block the run).
    """
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            import pypdfium2 as pdfium

            doc = pdfium.PdfDocument(path)
            try:
                out["pages"] = len(doc)
            finally:
                doc.close()
        except Exception as exc:  # noqa: BLE001
            out["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return None, "corrupt", f"corrupt or unreadable: PDF page count probe did not finish in {timeout:.0f} s"
    if "error" in out:
        msg = " ".join(str(out["error"]).split())
        if "password" in msg.lower():
            return None, "encrypted", f"encrypted (password needed): {msg}"
        return None, "corrupt", f"corrupt or unreadable: {msg}"
    return out["pages"], None, None
