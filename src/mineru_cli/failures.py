"""A worker's exception -> the document's failure code, one-line reason, and whether a retry
may help (``engine.run_task`` calls it).

Must not: import mineru or anything heavy (it only reads the exception's type name and
message), or decide retries itself (the executors do, from ``transient``).
"""

from __future__ import annotations


def classify_exception(exc: BaseException) -> tuple[str, str, bool]:
    """Map an exception raised by MinerU to ``(code, one-line reason, transient)``.

    Deterministic document problems (corrupt, encrypted, unsupported) are not transient and
    are never retried. Sources: messages of MinerU 4.0.12 / pypdfium2 seen on the corpus
    (``PdfiumError: Failed to load document (PDFium: Incorrect password error)``,
    ``... Data format error``, ``ValueError: Unsupported file type: txt``,
    ``FileNotFoundError: Model repo ... is not ready under ...``).
    """
    name = type(exc).__name__
    msg = " ".join(str(exc).split())[:400]
    low = msg.lower()
    if isinstance(exc, MemoryError):
        return "memory_limit", "memory limit: MemoryError while converting", False
    if name == "DocxRenderError":  # mineru.render.docx: the document cannot be written as DOCX
        return "render_error", f"render error (docx): {msg}", False
    if "password" in low:
        return "encrypted", f"encrypted (password needed): {msg}", False
    if "model repo" in low and "not ready" in low:
        return "missing_models", f"model weights missing: {msg}", False
    if "unsupported file type" in low:
        return "unsupported_type", f"unsupported type: {msg}", False
    if name in ("PdfiumError",) or "data format error" in low or "failed to load" in low \
            or "not a zip" in low or "invalid" in low and ("xlsx" in low or "docx" in low or "pptx" in low or "package" in low):
        return "corrupt", f"corrupt or unreadable: {name}: {msg}", False
    if isinstance(exc, (OSError,)) and not isinstance(exc, (FileNotFoundError, PermissionError)):
        return "io_error", f"input/output error: {name}: {msg}", True
    return "conversion_error", f"conversion error: {name}: {msg}", False
