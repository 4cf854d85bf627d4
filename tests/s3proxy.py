"""A loopback HTTP proxy in front of a moto S3 server, for tests (issue 17).

:class:`S3Proxy` listens on 127.0.0.1 (a free port), forwards every request to the moto server
(``upstream``: ``http://127.0.0.1:PORT``) and returns its answer: status, headers (ETag
included) and body. Point a client at ``proxy.endpoint`` instead of moto's. It

- counts requests by S3 operation (:func:`operation`: ``ListObjectsV2``, ``GetObject``,
  ``HeadObject``, ``PutObject``, ...) and keeps a log of :class:`Request` (operation, method,
  path, query), in arrival order;
- injects faults: a rule ``(method, path, query) -> None | (status, xml_body)`` answers a
  request itself instead of forwarding it (:meth:`S3Proxy.add_fault`, :func:`page_fault`);
- holds requests: :meth:`S3Proxy.add_hold` blocks matching requests until a condition is true
  (polled) or a timeout passes, and records which released each (:class:`Hold`).

``path`` is the URL path, percent-decoded (``/bucket/in/a b.csv``); ``query`` a dict of the
query parameters, percent-decoded (a parameter without value maps to ``""``). Only loopback:
the proxy binds 127.0.0.1 and refuses an upstream that is not on 127.0.0.0/8.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

FaultRule = Callable[[str, str, dict], "tuple[int, str] | None"]
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "expect"}


@dataclass(frozen=True)
class Request:
    """One request the proxy received: S3 operation, HTTP method, decoded path, query dict."""

    op: str
    method: str
    path: str
    query: dict


def operation(method: str, path: str, query: dict) -> str:
    """The S3 operation of a path-style request (``method``: HTTP method; ``path``: decoded
    URL path ``/bucket/key``; ``query``: query parameters). Unknown combinations give
    ``"<METHOD> <bucket|object|service>"``."""
    bucket, _, key = path.lstrip("/").partition("/")
    q = set(query)
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method} service"
    if not key:
        if method == "GET":
            if query.get("list-type") == "2":
                return "ListObjectsV2"
            for name, op in (("location", "GetBucketLocation"), ("versions", "ListObjectVersions"),
                             ("uploads", "ListMultipartUploads"), ("versioning", "GetBucketVersioning"),
                             ("policy", "GetBucketPolicy"), ("acl", "GetBucketAcl"), ("tagging", "GetBucketTagging")):
                if name in q:
                    return op
            return "ListObjects"
        if method == "POST" and "delete" in q:
            return "DeleteObjects"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, f"{method} bucket")
    if method == "GET":
        for name, op in (("tagging", "GetObjectTagging"), ("acl", "GetObjectAcl"), ("uploadId", "ListParts")):
            if name in q:
                return op
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "partNumber" in q and "uploadId" in q:
            return "UploadPart"
        if "tagging" in q:
            return "PutObjectTagging"
        return "PutObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
    return f"{method} object"


def s3_error(status: int, code: str, message: str = "injected by the test proxy") -> tuple[int, str]:
    """``(status, body)`` of an S3 error answer: ``<Error><Code>code</Code>...``."""
    return status, (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                    f"</Message><RequestId>proxy</RequestId></Error>")


@dataclass
class Hold:
    """A hold rule (:meth:`S3Proxy.add_hold`). ``released_by``: for each request it held, in
    order, ``"condition"``, ``"timeout"`` or ``"stopped"`` (the proxy stopped first);
    ``waiting``: requests held right now; ``held_at``: monotonic time each hold began."""

    match: Callable[[str, str, dict], bool]
    until: Callable[[], bool]
    timeout: float
    times: int
    released_by: list[str] = field(default_factory=list)
    held_at: list[float] = field(default_factory=list)
    waiting: int = 0
    taken: int = 0

    def wait_held(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until a request is being held (or was); True if so."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.held_at:
                return True
            time.sleep(0.02)
        return bool(self.held_at)


def page_fault(bucket: str, prefix: str, page: int, times: int, answer: tuple[int, str]) -> FaultRule:
    """A fault rule: the first ``times`` requests for page ``page`` (1-based) of a
    ListObjectsV2 of ``bucket`` with ``prefix`` get ``answer`` (:func:`s3_error`), later ones
    pass (``times=None``: every one fails). Pages are told apart by their ContinuationToken
    (none: page 1; the n-th distinct token seen: page n+1), so a retried page is the same page.
    The rule's ``hits`` counts the answers it gave."""
    tokens: list[str] = []
    lock = threading.Lock()

    def rule(method: str, path: str, query: dict):
        if operation(method, path, query) != "ListObjectsV2" or path.strip("/") != bucket \
                or query.get("prefix", "") != prefix:
            return None
        token = query.get("continuation-token")
        with lock:
            if token is None:
                n = 1
            else:
                if token not in tokens:
                    tokens.append(token)
                n = tokens.index(token) + 2
            if n != page or (times is not None and rule.hits >= times):
                return None
            rule.hits += 1
        return answer

    rule.hits = 0
    return rule


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins the handler threads
    block_on_close = True
    allow_reuse_address = True


class S3Proxy:
    """The proxy (see the module's docstring). ``start()`` / ``stop()`` (idempotent; also a
    context manager); ``endpoint``; ``reset()`` clears counters, log and rules;
    ``count(op, **query)``: requests of operation ``op`` whose query has these values
    (``prefix="in/"``); ``requests(op=None)``: the log; ``add_fault(rule)``,
    ``add_hold(...)``."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if not ipaddress.ip_address(socket.gethostbyname(parts.hostname or "")).is_loopback:
            raise ValueError(f"upstream {upstream} is not on loopback")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self._lock = threading.Lock()
        self._log: list[Request] = []
        self._faults: list[FaultRule] = []
        self._holds: list[Hold] = []
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- life cycle -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Proxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"s3proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: release held requests, close open connections, join every thread."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # idle keep-alive connections: their handler threads end on EOF
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()  # joins the handler threads (block_on_close)
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> "S3Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget the log, the fault rules and the holds."""
        with self._lock:
            self._log.clear()
            self._faults.clear()
            self._holds.clear()

    # --- what it saw --------------------------------------------------------------------------------

    def requests(self, op: str | None = None) -> list[Request]:
        """The log (a copy), all requests or those of operation ``op``, in arrival order."""
        with self._lock:
            return [r for r in self._log if op is None or r.op == op]

    def count(self, op: str, **query: str) -> int:
        """Requests of operation ``op`` whose query has each given value (``prefix="in/"``;
        Python names: ``continuation_token`` matches ``continuation-token``)."""
        want = {k.replace("_", "-"): v for k, v in query.items()}
        return sum(1 for r in self.requests(op) if all(r.query.get(k) == v for k, v in want.items()))

    # --- rules --------------------------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> FaultRule:
        """Answer a request with ``rule(method, path, query)`` when it gives ``(status, body)``
        (checked in the order added; None: the next rule, else forward)."""
        with self._lock:
            self._faults.append(rule)
        return rule

    def add_hold(self, match: Callable[[str, str, dict], bool], until: Callable[[], bool], *,
                 timeout: float, times: int = 1) -> Hold:
        """Hold the first ``times`` requests for which ``match(method, path, query)`` is true
        until ``until()`` is true (polled every 50 ms) or ``timeout`` seconds pass, then
        forward them. Returns the :class:`Hold` that records what released each."""
        hold = Hold(match=match, until=until, timeout=timeout, times=times)
        with self._lock:
            self._holds.append(hold)
        return hold

    # --- used by the handler ------------------------------------------------------------------------

    def _record(self, req: Request) -> None:
        with self._lock:
            self._log.append(req)

    def _fault_for(self, method: str, path: str, query: dict) -> tuple[int, str] | None:
        with self._lock:
            rules = list(self._faults)
        for rule in rules:
            answer = rule(method, path, query)
            if answer is not None:
                return answer
        return None

    def _hold(self, method: str, path: str, query: dict) -> None:
        with self._lock:
            hold = next((h for h in self._holds if h.taken < h.times and h.match(method, path, query)), None)
            if hold is None:
                return
            hold.taken += 1
            hold.waiting += 1
            hold.held_at.append(time.monotonic())
        end = time.monotonic() + hold.timeout
        why = "timeout"
        while time.monotonic() < end:
            if self._stopping.is_set():
                why = "stopped"
                break
            try:
                if hold.until():
                    why = "condition"
                    break
            except Exception:  # noqa: BLE001 - a condition that cannot be evaluated yet is false
                pass
            time.sleep(0.05)
        with self._lock:
            hold.waiting -= 1
            hold.released_by.append(why)


class _Handler(BaseHTTPRequestHandler):
    owner: S3Proxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects
    timeout = 120  # an idle keep-alive connection is closed after this

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.owner._lock:
                self.owner._conns.discard(self.connection)

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        method = self.command
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        body = self._body()
        proxy = self.owner
        proxy._record(Request(operation(method, path, query), method, path, query))
        fault = proxy._fault_for(method, path, query)
        if fault is not None:
            status, text = fault
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)
            return
        proxy._hold(method, path, query)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
        if body or method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            conn.request(method, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response_only(resp.status, resp.reason)
            length_sent = False
            for k, v in resp.getheaders():
                if k.lower() in _HOP_BY_HOP:
                    continue
                if k.lower() == "content-length":
                    if method != "HEAD":
                        v = str(len(data))
                    length_sent = True
                self.send_header(k, v)
            if not length_sent:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
