"""Storage: the one room that knows fsspec and S3.

URL -> filesystem with its storage options (``--storage-option`` for both sides, and the
per-side ``--input-storage-option`` / ``--output-storage-option``, merged by the caller with
:func:`merge_options`), the S3 session tweaks (checksums, retries, no ``Expect: 100-continue``),
listing and reading objects, retries with backoff, and one-line explanations of storage errors.
``discover``/``sniff`` ask it to list and read inputs; ``store`` asks it to write and commit.

Must not: know documents, done-records or the output layout (that is ``store``), nor import
fsspec, s3fs or botocore at module level (``--help`` imports none of them).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator


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


def is_url(path: str) -> bool:
    """True for an fsspec URL other than ``file://`` (``s3://bucket/x``, ``memory://x``)."""
    return "://" in path and not path.startswith("file://")


def is_s3(url: str) -> bool:
    """True for an ``s3://`` (or ``s3a://``) URL."""
    return url.startswith(("s3://", "s3a://"))


def merge_options(base: dict, side: dict) -> dict:
    """The storage options of one side (inputs or OUTPUT): ``base`` (``--storage-option``, both
    sides) with ``side`` (``--input-storage-option`` / ``--output-storage-option``) winning key
    by key. A new dict; neither argument is changed."""
    merged = dict(base or {})
    merged.update(side or {})
    return merged


def protocol_of(fs: Any) -> str:
    """The first protocol name of an fsspec filesystem (``s3``, ``file``, ``memory``)."""
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def local_filesystem() -> Any:
    """fsspec's local filesystem (imports fsspec: call it only when one is needed)."""
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def open_filesystem(url: str, options: dict | None, endpoint_url: str | None = None, *,
                    writer: bool = False) -> tuple[Any, str]:
    """``(filesystem, path inside it)`` for an fsspec URL with its storage options
    (:func:`storage_options_for`). ``writer=True`` (OUTPUT, in this process): an S3 client that
    sends no ``Expect: 100-continue`` (:func:`with_s3_session`) and s3fs' own retry loop for
    timeouts set to 2 (on top of botocore's 3 and the commit's). Raises fsspec's errors
    (``ValueError`` for an unknown protocol, ``ImportError`` when its package is missing)."""
    import fsspec

    opts = storage_options_for(url, dict(options or {}), endpoint_url)
    if writer and is_s3(url):
        opts = with_s3_session(opts)
    fs, root = fsspec.core.url_to_fs(url, **opts)
    if writer and hasattr(fs, "retries"):
        fs.retries = 2
    return fs, root


def open_url(url: str, options: dict) -> tuple[Any, str]:
    """``(filesystem, path)`` for ``url`` with options already made for it (``fetch_options``:
    what a worker process is handed). Raises fsspec's errors."""
    import fsspec

    return fsspec.core.url_to_fs(url, **options)


def fetch_options(url: str, options: dict, endpoint_url: str | None) -> dict:
    """Plain, picklable storage options for a worker that downloads the input ``url``
    (no session object: :func:`s3_options` for ``s3://``, else the options as they are)."""
    return s3_options(dict(options), endpoint_url) if url.startswith("s3://") else dict(options)


def probe_filesystem(url: str, protocol: str, options: dict, endpoint_url: str | None) -> Any:
    """A fail-fast filesystem for the writability probe: :func:`s3_options` with ``probe=True``
    (2 attempts, 5 s to connect and to read), no cached instance, s3fs' own retry loop at 1, so
    an unreachable endpoint fails in seconds. Raises fsspec's errors."""
    import fsspec

    opts = storage_options_for(url, options, endpoint_url, probe=True)
    if is_s3(url):
        opts = with_s3_session(opts)
    opts["skip_instance_cache"] = True
    fs = fsspec.filesystem(protocol, **opts)
    if hasattr(fs, "retries"):  # s3fs' own retry loop (5 by default) on top of botocore's
        fs.retries = 1
    return fs


def holds_nothing(fs: Any, url: str, root: str) -> bool:
    """True when ``root`` holds nothing (missing, or on S3 no key under the prefix). On S3 one
    ListObjectsV2 of at most one key: a missing bucket, missing rights or unknown credentials
    fail as they would in a run, and its errors have a body naming the cause (HeadBucket's
    403/404 have none). Raises the storage's errors."""
    if is_s3(url):
        bucket, _, prefix = root.partition("/")
        listed = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
        return not listed.get("KeyCount") and not listed.get("Contents")
    try:
        fs.info(root)
    except FileNotFoundError:  # nothing converted there yet
        return True
    return False


Entry = tuple[str, int, float, str | None]  # (path without protocol, size in bytes, mtime in s, etag)

LIST_PAGE_MAX = 1000  # keys: S3 returns at most this many per ListObjectsV2 page (and the default)


def list_pages(fs: Any, root: str, *, page_size: int | None = None, attempts: int = 4,
               pace: Callable[[], Any] | None = None) -> Iterator[list[Entry]]:
    """The objects under the prefix ``root + "/"`` of filesystem ``fs`` (``root``: a path inside
    ``fs`` without protocol, ``bucket/prefix``; a bare ``bucket`` lists the whole bucket), one
    page at a time, in key order (byte order of the UTF-8 key). Each page is a non-empty list of
    ``(path, size in bytes, mtime in s since the epoch, etag or None)``: ``path`` without
    protocol (``bucket/prefix/a.pdf``), the etag without quotes. Keys ending in ``/`` (folder
    markers) are left out; a prefix holding nothing yields no page (``root`` itself, when it is
    an object, is not under the prefix: see :func:`walk_listing`). Nothing is read or cached:
    the memory held is one page, whatever the size of the prefix.

    S3 (s3fs): ``ListObjectsV2`` with ``MaxKeys=page_size`` (1 to 1000, default 1000) and the
    ``ContinuationToken`` of the page before, through ``fs.call_s3``. Each page request is
    retried on transient errors (:func:`is_transient`: throttling, 5xx, connection errors and
    timeouts) up to ``attempts`` times with backoff (:func:`retrying`) *with the same
    ContinuationToken*, so a page that fails and then passes lists nothing twice and loses
    nothing. Inside each attempt botocore retries 5xx, throttling and connection errors itself
    (3 attempts, :func:`s3_options`), and around that s3fs' ``call_s3`` (``fs.retries`` times,
    5 by default) retries only errors whose text says ``SlowDown`` / ``reduce your request
    rate`` and transport errors; any other error that outlasts botocore (``500 InternalError``,
    ``503 ServiceUnavailable``) s3fs raises at once as ``OSError`` (``EREMOTEIO``, ``EBUSY``),
    and it is retried here. A page throttled for good is asked for 4 x 5 x 3 = 60 times.
    Other filesystems (``memory://``, ``gcs://``...): one page, the sorted ``fs.find``.

    Raises ValueError for a ``page_size`` outside 1..1000, and the storage's errors for a
    page that cannot be listed: at once when not transient (``PermissionError`` for access
    denied, ``FileNotFoundError`` for no such bucket), after ``attempts`` tries when transient.
    Pages yielded before the error stay valid. ``pace()``: called before each S3 page after
    the first is asked for (it may wait: the pipeline holds the second page until the first
    documents are planned).
    """
    size = LIST_PAGE_MAX if page_size is None else int(page_size)
    if not 1 <= size <= LIST_PAGE_MAX:
        raise ValueError(f"list page size must be 1 to {LIST_PAGE_MAX}, not {page_size!r}")
    root = root.rstrip("/")
    if hasattr(fs, "call_s3") and protocol_of(fs) in ("s3", "s3a"):
        yield from _s3_pages(fs, root, size, attempts, pace)
        return
    found = retrying(fs.find, root, detail=True, withdirs=False, attempts=attempts)
    under = root + "/" if root else ""
    page = []
    for path in sorted(found):
        meta = found[path]
        if not path.startswith(under) or path.endswith("/") or meta.get("type") == "directory":
            continue
        page.append(_entry(path, meta))
    if page:
        yield page


def _s3_pages(fs: Any, root: str, page_size: int, attempts: int,
              pace: Callable[[], Any] | None = None) -> Iterator[list[Entry]]:
    bucket, _, key = root.partition("/")
    prefix = f"{key}/" if key else ""
    request = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    token = None
    while True:
        if token is not None:
            if pace is not None:
                pace()
            request["ContinuationToken"] = token
        answer = retrying(fs.call_s3, "list_objects_v2", attempts=attempts, **request)
        page = [_entry(f"{bucket}/{c['Key']}", c) for c in answer.get("Contents") or []
                if not c["Key"].endswith("/")]
        if page:
            yield page
        if not answer.get("IsTruncated"):
            return
        nxt = answer.get("NextContinuationToken")
        if not nxt or nxt == token:
            raise OSError(f"listing s3://{root}/: the server said there is more but gave no new continuation token")
        token = nxt


def _entry(path: str, meta: dict) -> Entry:
    size = int(meta.get("size") or meta.get("Size") or 0)
    mtime = meta.get("LastModified") or meta.get("mtime") or meta.get("created") or 0
    mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or 0)
    etag = str(meta.get("ETag") or meta.get("etag") or "").strip('"') or None
    return (path, size, mtime, etag)


def walk_listing(url: str, options: dict, skip: list[str] | None = None, *, page_size: int | None = None,
                 attempts: int = 4, pace: Callable[[], Any] | None = None) -> tuple[str, str, Iterator[list[Entry]]]:
    """List an fsspec URL, a prefix or one object, lazily: ``(protocol, root, pages)`` with
    ``root`` the path inside the filesystem (no trailing ``/``) and ``pages`` an iterator of
    :func:`list_pages` pages (``(path, size in bytes, mtime in s, etag or None)`` each, in key
    order), objects under ``skip`` (URLs of the same protocol: OUTPUT under the input prefix)
    left out. When the prefix holds nothing and ``url`` names one object (``s3://b/x.pdf``),
    that object is the one page; when it names nothing at all, there is no page.

    Opening the filesystem happens here (raises fsspec's errors: ``ValueError`` for an unknown
    protocol, ``ImportError`` when its package is missing); listing happens as ``pages`` is
    iterated and raises what :func:`list_pages` raises (ValueError for a bad ``page_size``).
    ``pace``: see :func:`list_pages`.
    """
    fs, root = open_filesystem(url, options)
    protocol = url.split("://", 1)[0]
    root = root.rstrip("/")
    skip_roots = [fs._strip_protocol(u).rstrip("/") + "/" for u in (skip or []) if u.split("://", 1)[0] == protocol]

    def pages() -> Iterator[list[Entry]]:
        listed = False
        for page in list_pages(fs, root, page_size=page_size, attempts=attempts, pace=pace):
            listed = True
            page = [e for e in page if not any(e[0].startswith(r) for r in skip_roots)]
            if page:
                yield page
        if listed or not root:
            return
        try:  # no object under the prefix: the URL may name one object
            meta = retrying(fs.info, root, attempts=attempts)
        except FileNotFoundError:
            return
        if meta.get("type") != "directory" and not any(root.startswith(r) for r in skip_roots):
            yield [_entry(root, meta)]

    return protocol, root, pages()


def list_files(url: str, options: dict, skip: list[str] | None = None) -> tuple[str, str, list[tuple]]:
    """All of :func:`walk_listing` at once: ``(protocol, root, entries)`` with ``entries`` in
    key order, each ``(path, size in bytes, mtime in s since the epoch, etag or None)``; objects
    under ``skip`` (URLs of the same protocol) left out. Holds the whole listing in memory: a
    conversion streams :func:`walk_listing` instead. Raises the storage's errors."""
    protocol, root, pages = walk_listing(url, options, skip)
    return protocol, root, [e for page in pages for e in page]


HEAD_WHOLE_MAX = 8 << 20  # bytes: an object up to this size is read whole to sniff it


def read_head(url: str, options: dict, size: int) -> bytes:
    """What sniffing needs of a remote object of ``size`` bytes: all of it when up to 8 MiB
    (zip-based formats need the central directory), else its first 64 KiB. Raises the
    filesystem's errors."""
    fs, path = open_filesystem(url, options)
    if size == 0:
        return b""
    return cat_object(fs, path) if size <= HEAD_WHOLE_MAX else fs.cat_file(path, start=0, end=1 << 16)


def cat_object(fs: Any, path: str) -> bytes:
    """A whole remote object in one request. s3fs (2025 and later) otherwise asks for the size
    first (a HEAD) in ``cat_file``, to split large objects into parallel range GETs; that doubles
    the requests for the small objects read here (done-records, inputs up to 8 MiB).
    ``max_concurrency=1`` skips it; other filesystems, and s3fs versions without the
    parameter, get a plain ``cat_file``. Raises the filesystem's errors."""
    if "s3" in ((fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)):
        try:
            return fs.cat_file(path, max_concurrency=1)
        except TypeError:
            pass
    return fs.cat_file(path)


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error may go away on retry: transport errors (connection refused or
    reset, timeouts; botocore's ``EndpointConnectionError``, ``ConnectTimeoutError``,
    ``ReadTimeoutError``, ``ConnectionClosedError``), throttling and 5xx. Not: missing
    bucket or object, access denied, missing credentials."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        FileExistsError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    try:
        from botocore.exceptions import (ConnectionError as BotoConnectionError, HTTPClientError,
                                         NoCredentialsError, PartialCredentialsError)
    except ImportError:  # no botocore: not S3
        pass
    else:
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return False
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return True
    if isinstance(exc, OSError):
        import errno

        return exc.errno not in (errno.EINVAL, errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM)
    low = f"{type(exc).__name__} {exc}".lower()
    return any(w in low for w in ("slowdown", "throttl", "internalerror", "serviceunavailable", "timeout"))


def retrying(fn, *args, attempts: int = 4, **kwargs):
    """Call ``fn`` with exponential backoff (0.5 s, 1 s, 2 s, 4 s, at most 8 s) on transient
    storage errors (:func:`is_transient`), re-raising the last error (tenacity). botocore's
    own retries (:func:`s3_options`) happen inside each attempt."""
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    r = retry(stop=stop_after_attempt(max(1, attempts)), wait=wait_exponential(multiplier=0.5, max=8),
              retry=retry_if_exception(is_transient), reraise=True)
    return r(fn)(*args, **kwargs)


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


def explain_storage_error(exc: BaseException, url: str | None = None, *, denied: str = "write here") -> str:
    """One line naming the cause of a storage error: no credentials, access denied (wrong
    credentials or not allowed), no such bucket, endpoint unreachable, or the error's own
    text. With ``url`` (an ``s3://`` URL) the bucket is named. Secrets are redacted.
    ``denied``: what the credentials may not do, for a plain access denied
    (``these credentials may not write here``; ``list this prefix`` for a listing).

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
        why = f"access denied: these credentials may not {denied} ({detail})"
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
