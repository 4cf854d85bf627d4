"""Remote storage (fsspec; S3 through s3fs): options, listing inputs, explaining errors."""

from __future__ import annotations

import os
from typing import Iterator

from .discover import Discovery, SourceDocument, classify, claimed_type

_BOOL_OPTIONS = ("anon", "use_ssl", "requester_pays", "version_aware", "skip_instance_cache",
                 "use_listings_cache", "cache_regions", "asynchronous")
_INT_OPTIONS = ("connect_timeout", "read_timeout", "max_pool_connections", "max_attempts",
                "total_max_attempts", "default_block_size", "max_concurrency")
_TRUE = ("1", "true", "yes", "on")


def _convert_value(key: str, value):
    if not isinstance(value, str):
        return value
    if key in _BOOL_OPTIONS:
        return value.strip().lower() in _TRUE
    if key in _INT_OPTIONS and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def nest_options(options: dict) -> dict:
    """``--storage-option`` pairs -> fsspec options: ``a.b=v`` becomes ``{"a": {"b": v}}``
    (``config_kwargs.connect_timeout=10``, ``client_kwargs.region_name=eu-west-1``); booleans
    and integers of well-known keys are converted from their text."""
    out: dict = {}
    for key, value in options.items():
        if isinstance(value, dict):
            out[key] = nest_options(value)
            continue
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"storage option {key!r} conflicts with another option")
        node[parts[-1]] = _convert_value(parts[-1], value)
    return out


def endpoint_from_env() -> str | None:
    """The S3 endpoint botocore takes from the environment (``AWS_ENDPOINT_URL_S3``, else
    ``AWS_ENDPOINT_URL``), or None."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_options(options: dict, endpoint_url: str | None = None, *, probe: bool = False) -> dict:
    """fsspec storage options for s3fs (a new dict; nested dicts are copied too: botocore
    rewrites the ``retries`` dict it is given).

    ``endpoint_url`` (``--endpoint-url``, else the ``endpoint_url`` storage option, else
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, which botocore reads itself) points at MinIO
    or any S3-compatible server. With a custom endpoint, botocore 1.36+ default checksums
    (``request_checksum_calculation=when_supported``: a ``x-amz-checksum-crc32`` header or
    trailer on every upload) are rejected by some S3-compatible servers, so they are sent
    only when the operation requires them (botocore docs, "Data integrity protections for
    Amazon S3"); a storage option ``config_kwargs.request_checksum_calculation=...`` wins.

    Retries: botocore's "standard" mode with 3 attempts (connection errors, throttling and
    5xx are retried with jittered backoff), unless the user set ``config_kwargs.retries`` or
    ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS``. ``probe=True`` gives the fail-fast variant for
    the writability probe: 2 attempts, 5 s to connect, 5 s to read.
    """
    opts = nest_options(options)
    endpoint = endpoint_url or opts.pop("endpoint_url", None)
    if endpoint:
        opts["client_kwargs"] = dict(opts.get("client_kwargs", {}), endpoint_url=endpoint)
    ck = {k: (dict(v) if isinstance(v, dict) else v) for k, v in opts.get("config_kwargs", {}).items()}
    if endpoint or (opts.get("client_kwargs") or {}).get("endpoint_url") or endpoint_from_env():
        ck.setdefault("request_checksum_calculation", "when_required")
        ck.setdefault("response_checksum_validation", "when_required")
    if probe:
        ck["retries"] = {"mode": "standard", "total_max_attempts": 2}
        ck["connect_timeout"] = min(int(ck.get("connect_timeout", 5)), 5)
        ck["read_timeout"] = min(int(ck.get("read_timeout", 5)), 5)
    elif "retries" not in ck and not (os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS")):
        ck["retries"] = {"mode": "standard", "total_max_attempts": 3}
    opts["config_kwargs"] = ck
    return opts


def with_s3_session(opts: dict) -> dict:
    """``opts`` plus an aiobotocore session whose S3 clients send no ``Expect: 100-continue``.

    botocore asks for ``100 Continue`` before every upload body, and aiohttp waits for that
    interim answer with no timeout at all: against an endpoint that accepts the connection but
    never answers (a hung server, a black-holing proxy) a PutObject then hangs forever, and
    ``read_timeout`` never fires (seen with aiobotocore 3.10 / aiohttp here; without the header
    the same PUT fails with ``ReadTimeoutError`` after ``read_timeout``). For in-process
    filesystems only: a session is not a plain option to hand to worker processes.
    """
    from aiobotocore.session import AioSession
    from botocore.handlers import add_expect_header

    opts = dict(opts)
    session = AioSession(profile=opts.pop("profile", None))
    session.unregister("before-call.s3", add_expect_header)
    opts["session"] = session
    return opts


def storage_options_for(url: str, options: dict, endpoint_url: str | None = None, *, probe: bool = False) -> dict:
    """fsspec options for ``url``: :func:`s3_options` for ``s3://`` (and ``s3a://``), else the
    options with ``a.b=v`` keys nested."""
    if url.startswith(("s3://", "s3a://")):
        return s3_options(options, endpoint_url, probe=probe)
    opts = nest_options(options)
    opts.pop("endpoint_url", None)
    return opts


def walk_remote(url: str, *, hidden: bool, storage_options: dict, found: Discovery,
                skip: list[str] | None = None) -> Iterator[SourceDocument]:
    """List an fsspec URL (a prefix or one object) in stable order. Objects are not read
    here: each document is marked ``extra["unread"]`` until :func:`sniff_remote_documents`
    reads it (after include/exclude, and in ``convert`` after the done-records: a finished,
    unchanged document is never downloaded again on a rerun).

    ``skip``: URLs of the same protocol whose objects are never taken as inputs (the OUTPUT,
    when it lies under the input prefix: earlier results must not be converted again)."""
    import fsspec

    opts = storage_options_for(url, storage_options)
    fs, root = fsspec.core.url_to_fs(url, **opts)
    protocol = url.split("://", 1)[0]
    root = root.rstrip("/")
    skip_roots = [fs._strip_protocol(u).rstrip("/") + "/" for u in (skip or []) if u.split("://", 1)[0] == protocol]
    info = fs.find(root, detail=True, withdirs=False)
    if not info and fs.isfile(root):
        info = {root: fs.info(root)}
    for path in sorted(info):
        meta = info[path]
        if meta.get("type") == "directory" or any(path.startswith(r) for r in skip_roots):
            continue
        rel = path[len(root):].lstrip("/") if path != root else path.rsplit("/", 1)[-1]
        if not hidden and any(part.startswith(".") for part in rel.split("/")):
            found.hidden_ignored += 1
            continue
        size = int(meta.get("size") or 0)
        mtime = meta.get("LastModified") or meta.get("mtime") or 0
        mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or 0)
        etag = str(meta.get("ETag") or meta.get("etag") or "").strip('"') or None
        yield SourceDocument(uri=f"{protocol}://{path}", rel=rel, size=size, mtime=mtime, protocol=protocol,
                             etag=etag, extra={"unread": True})


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
    import fsspec
    from concurrent.futures import ThreadPoolExecutor

    def fetch(doc: SourceDocument):
        try:
            fs, path = fsspec.core.url_to_fs(doc.uri, **storage_options_for(doc.uri, storage_options))
            return _read_head(doc, fs, path)
        except Exception as exc:  # noqa: BLE001 - the document's problem, reported by sniff_remote
            return exc

    with ThreadPoolExecutor(max_workers=min(threads, len(pending)), thread_name_prefix="mineru-cli-read") as ex:
        for i in range(0, len(pending), threads):
            batch = pending[i:i + threads]
            for doc, data in zip(batch, ex.map(fetch, batch)):
                sniff_remote(doc, data)


def _read_head(doc: SourceDocument, fs, path: str) -> bytes:
    """What sniffing needs of a remote object: all of it when up to 8 MiB (zip-based formats
    need the central directory), else its first 64 KiB. Raises the filesystem's errors."""
    if doc.size == 0:
        return b""
    from .store import cat_object

    return cat_object(fs, path) if doc.size <= 8 << 20 else fs.cat_file(path, start=0, end=1 << 16)


def sniff_remote(doc: SourceDocument, data: bytes | BaseException) -> None:
    """Sniff a remote object from :func:`_read_head`'s bytes (or the error reading them,
    which makes the document ``unreadable``), with the extension hint; a PDF's pages are
    counted when it was read whole."""
    doc.extra.pop("unread", None)
    if doc.size == 0:
        classify(doc, "empty", b"")
        return
    if isinstance(data, BaseException):
        doc.problem, doc.code, doc.fatal = f"corrupt or unreadable: {explain_storage_error(data)}", "unreadable", True
        return
    from .discover import sniff_text

    sniffed = sniff_text(data[: 1 << 16], doc.name)
    if sniffed is None:
        from docvortex.document import detection

        try:
            sniffed = detection.guess_suffix_by_bytes(data, doc.name)
        except Exception:  # noqa: BLE001
            sniffed = claimed_type(doc.name) or "unknown"
    classify(doc, sniffed, data[: 1 << 16])
    if doc.kind == "pdf" and not doc.problem and doc.size <= 8 << 20:
        from .plan import pdf_probe

        pages, code, reason = pdf_probe(data)
        if code:
            doc.problem, doc.code, doc.fatal = reason, code, True
        else:
            doc.extra["pages"] = pages


def describe_storage(url: str, options: dict, endpoint_url: str | None = None, staging: str | None = None) -> str:
    """One line for the run's output: the URL, the endpoint and the storage options, secrets
    redacted (``redact.redact_url`` / ``redact_options``), and where results are staged."""
    from .redact import redact_options, redact_text, redact_url

    parts = []
    endpoint = endpoint_url or options.get("endpoint_url") or (endpoint_from_env() if url.startswith("s3") else None)
    if endpoint:
        parts.append(f"endpoint {redact_url(str(endpoint))}")
    shown = {k: v for k, v in options.items() if k != "endpoint_url"}
    if shown:
        parts.append(f"storage options {redact_options(shown)}")
    line = f"output: {redact_url(url)}" + (f" ({'; '.join(parts)})" if parts else "")
    if staging:
        line += f"; results are staged in {staging} until uploaded"
    return redact_text(line)


def bucket_of(url: str) -> str | None:
    """The bucket of an ``s3://bucket/prefix`` URL, or None for other URLs."""
    if not url.startswith(("s3://", "s3a://")):
        return None
    rest = url.split("://", 1)[1]
    if "@" in rest.split("/", 1)[0]:  # s3://key:secret@bucket/...
        rest = rest.split("@", 1)[1]
    return rest.split("/", 1)[0] or None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def explain_storage_error(exc: BaseException, url: str | None = None) -> str:
    """One line naming the cause of a storage error: no credentials, access denied (wrong
    credentials or not allowed), no such bucket, endpoint unreachable, or the error's own
    text. With ``url`` (an ``s3://`` URL) the bucket is named. Secrets are redacted.

    Recognises s3fs' translations (``PermissionError`` for 403 ``AccessDenied`` /
    ``InvalidAccessKeyId`` / ``SignatureDoesNotMatch``, ``FileNotFoundError`` for
    ``NoSuchBucket``) and botocore's own exceptions (``NoCredentialsError``,
    ``EndpointConnectionError``, ``ConnectTimeoutError``, ...), also when chained.
    """
    from .redact import redact_text

    chain = _chain(exc)
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:300]
    low = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    bucket = bucket_of(url) if url else None
    where = f"bucket {bucket!r}: " if bucket else ""
    detail = f"{name}: {text}" if text else name
    if "nocredentials" in low or "unable to locate credentials" in low or "partialcredentials" in low:
        why = ("no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
               "--storage-option key=... --storage-option secret=...)")
    elif "invalidaccesskeyid" in low or "access key id you provided does not exist" in low:
        why = f"access denied: the access key is not known to the server (wrong credentials) ({detail})"
    elif "signaturedoesnotmatch" in low or "signature we calculated does not match" in low:
        why = f"access denied: the secret key does not match the access key (wrong credentials) ({detail})"
    elif "expiredtoken" in low or "token has expired" in low or "tokenrefreshrequired" in low:
        why = f"access denied: the credentials have expired ({detail})"
    elif "accessdenied" in low or "access denied" in low or "forbidden" in low \
            or any(isinstance(e, PermissionError) for e in chain):
        why = f"access denied: these credentials may not write here ({detail})"
    elif "nosuchbucket" in low or "bucket does not exist" in low:
        why = f"no such bucket ({detail})"
    elif "bucket is not valid" in low or "invalidbucketname" in low:
        why = f"invalid bucket name ({detail})"
    elif any(w in low for w in ("could not connect", "connect timeout", "endpointconnectionerror",
                                "connecttimeouterror", "connection refused", "cannot connect",
                                "connectionclosederror", "name or service not known",
                                "nodename nor servname", "temporary failure in name resolution")):
        why = f"endpoint unreachable ({detail})"
    elif "readtimeout" in low or "read timeout" in low:
        why = f"endpoint not answering (read timed out) ({detail})"
    else:
        why = detail
    return redact_text(where + why)
