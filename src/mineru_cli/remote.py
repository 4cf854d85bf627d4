"""Remote storage (fsspec; S3 through s3fs): options, listing inputs, explaining errors."""

from __future__ import annotations

from typing import Iterator

from .discover import Discovery, SourceDocument, classify, claimed_type


def s3_options(options: dict, endpoint_url: str | None = None) -> dict:
    """fsspec storage options for s3fs.

    ``endpoint_url`` (``--endpoint-url``, else ``AWS_ENDPOINT_URL`` which botocore reads
    itself) points at MinIO or any S3-compatible server. With a custom endpoint, botocore
    1.36+ default checksums (``request_checksum_calculation=when_supported``) are rejected by
    some S3-compatible servers, so they are sent only when required (botocore docs,
    "Data integrity protections for Amazon S3").
    """
    import os

    opts = dict(options)
    endpoint = endpoint_url or opts.pop("endpoint_url", None)
    if endpoint:
        opts.setdefault("client_kwargs", {})
        opts["client_kwargs"] = dict(opts["client_kwargs"], endpoint_url=endpoint)
    if endpoint or os.environ.get("AWS_ENDPOINT_URL"):
        ck = dict(opts.get("config_kwargs", {}))
        ck.setdefault("request_checksum_calculation", "when_required")
        ck.setdefault("response_checksum_validation", "when_required")
        opts["config_kwargs"] = ck
    for key in ("anon", "use_ssl"):
        if isinstance(opts.get(key), str):
            opts[key] = opts[key].lower() in ("1", "true", "yes")
    return opts


def walk_remote(url: str, *, hidden: bool, storage_options: dict, found: Discovery) -> Iterator[SourceDocument]:
    """List an fsspec URL (a prefix or one object) in stable order, sniffing each object's
    type from its first 64 KiB (whole object when small) with MinerU's detection."""
    import fsspec

    opts = s3_options(storage_options) if url.startswith("s3://") else dict(storage_options)
    fs, root = fsspec.core.url_to_fs(url, **opts)
    protocol = url.split("://", 1)[0]
    root = root.rstrip("/")
    info = fs.find(root, detail=True, withdirs=False)
    if not info and fs.isfile(root):
        info = {root: fs.info(root)}
    for path in sorted(info):
        meta = info[path]
        if meta.get("type") == "directory":
            continue
        rel = path[len(root):].lstrip("/") if path != root else path.rsplit("/", 1)[-1]
        if not hidden and any(part.startswith(".") for part in rel.split("/")):
            found.hidden_ignored += 1
            continue
        size = int(meta.get("size") or 0)
        mtime = meta.get("LastModified") or meta.get("mtime") or 0
        mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or 0)
        etag = str(meta.get("ETag") or meta.get("etag") or "").strip('"') or None
        doc = SourceDocument(uri=f"{protocol}://{path}", rel=rel, size=size, mtime=mtime, protocol=protocol, etag=etag)
        sniff_remote(doc, fs, path)
        yield doc


def sniff_remote(doc: SourceDocument, fs, path: str) -> None:
    """Sniff a remote object: read it whole when under 8 MiB (zip-based formats need the
    central directory), else its first 64 KiB plus the extension hint."""
    if doc.size == 0:
        classify(doc, "empty", b"")
        return
    try:
        data = fs.cat_file(path) if doc.size <= 8 << 20 else fs.cat_file(path, start=0, end=1 << 16)
    except Exception as exc:  # noqa: BLE001
        doc.problem, doc.code, doc.fatal = f"corrupt or unreadable: {explain_storage_error(exc)}", "unreadable", True
        return
    from docvortex.document import detection

    try:
        sniffed = detection.guess_suffix_by_bytes(data, doc.name)
    except Exception:  # noqa: BLE001
        sniffed = claimed_type(doc.name) or "unknown"
    classify(doc, sniffed, data[: 1 << 16])
    if doc.kind == "pdf" and not doc.problem and doc.size <= 8 << 20:
        try:
            import pypdfium2 as pdfium

            pdf = pdfium.PdfDocument(data)
            doc.extra["pages"] = len(pdf)
            pdf.close()
        except Exception as exc:  # noqa: BLE001
            msg = " ".join(str(exc).split())
            if "password" in msg.lower():
                doc.problem, doc.code = f"encrypted (password needed): {msg}", "encrypted"
            else:
                doc.problem, doc.code = f"corrupt or unreadable: {msg}", "corrupt"
            doc.fatal = True


def explain_storage_error(exc: BaseException) -> str:
    """One line naming the cause of a storage error: no credentials, access denied, no such
    bucket, endpoint unreachable, or the error's own text. Secrets are redacted."""
    from .redact import redact_text

    name = type(exc).__name__
    text = " ".join(str(exc).split())
    low = f"{name} {text}".lower()
    if "nocredentials" in low or "unable to locate credentials" in low:
        why = "no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or --storage-option)"
    elif "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low or "accessdenied" in low \
            or "access denied" in low or isinstance(exc, PermissionError) or "forbidden" in low:
        why = f"access denied ({name}: {text})"
    elif "nosuchbucket" in low or "bucket does not exist" in low or "bucket is not valid" in low:
        why = f"no such bucket ({text})"
    elif "could not connect" in low or "connect timeout" in low or "endpointconnectionerror" in low \
            or "connection refused" in low or "cannot connect" in low:
        why = f"endpoint unreachable ({name}: {text})"
    else:
        why = f"{name}: {text}"
    return redact_text(why)
