"""Paged S3 listing (issue 17, part 6; parts of 1 and 3): an input prefix is listed one
ListObjectsV2 page at a time, each page retried with its own ContinuationToken, and documents
go on to be converted while the listing goes on.

Real moto (the session's ``ThreadedMotoServer``) behind ``tests/s3proxy.py`` (counts requests
per S3 operation, answers chosen requests with S3 errors, holds a request until a condition
holds), real s3fs/botocore, the CLI as a real subprocess for what a user sees.

The CLI runs as a real subprocess; ``MINERU_CLI_LIST_PAGE_SIZE`` sets the page size.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import S3_TEST_KEY, S3_TEST_SECRET, by_input, load_make_examples, load_report, s3_env
from s3proxy import operation, page_fault, s3_error



# S3's own messages: s3fs retries an error whose text has "SlowDown" or "reduce your request rate"
# itself (fs.retries); InternalError it raises at once (as OSError EREMOTEIO): list_pages retries it
SLOW_DOWN = s3_error(503, "SlowDown", "Please reduce your request rate.")
INTERNAL = s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
DENIED = s3_error(403, "AccessDenied", "Access Denied")


# --- helpers ---------------------------------------------------------------------------------------



def new_bucket(s3_server) -> str:
    return s3_server.bucket(f"list-{uuid.uuid4().hex[:12]}")


def put_documents(s3_server, bucket: str, prefix: str, n: int, tmp: Path) -> list[str]:
    """``n`` tiny documents under ``bucket/prefix/``, CSV and HTML in turn (``doc00.csv``,
    ``doc01.html``, ...), written straight to moto (not through the proxy). Returns the names."""
    mk = load_make_examples()
    fs = s3_server.fs()
    tmp.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        ext = "csv" if i % 2 == 0 else "html"
        local = tmp / f"doc{i:02d}.{ext}"
        if ext == "csv":
            mk.write_csv(local, [["item", "count"], [f"thing {i}", str(i)]])
        else:
            mk.write_html(local, f"Page {i}", f"Heading {i}", [f"Paragraph number {i}."])
        fs.pipe_file(f"{bucket}/{prefix}/{local.name}", local.read_bytes())
        names.append(local.name)
    return names


def run_cli_paged(tmp: Path, *args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    """``mineru-cli ARGS`` as a subprocess (``MINERU_CLI_LIST_PAGE_SIZE`` in ``env`` sets the page size)."""
    return subprocess.run([sys.executable, "-m", "mineru_cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def convert_prefix(proxy, tmp: Path, bucket: str, page_size: int, *extra: str, timeout: float = 180):
    """``mineru-cli convert s3://bucket/in -o tmp/out`` through the proxy with
    ``MINERU_CLI_LIST_PAGE_SIZE=page_size``; returns (process, report or None, out)."""
    out, report = tmp / "out", tmp / "report.json"
    env = s3_env(tmp, MINERU_CLI_LIST_PAGE_SIZE=str(page_size))
    proc = run_cli_paged(tmp, "convert", f"s3://{bucket}/in", "-o", str(out), "--endpoint-url", proxy.endpoint,
                         "--report", str(report), *extra, env=env, timeout=timeout)
    return proc, (load_report(report) if report.exists() else None), out


def proxied_fs(proxy, bucket: str):
    """The filesystem a run lists inputs with (``storage.open_filesystem``: botocore standard
    retries, 3 attempts; s3fs' own loop), on the proxy, not cached."""
    from mineru_cli.storage import open_filesystem

    fs, _ = open_filesystem(f"s3://{bucket}", {"key": S3_TEST_KEY, "secret": S3_TEST_SECRET,
                                               "endpoint_url": proxy.endpoint, "skip_instance_cache": "true"})
    return fs


def list_tokens(proxy, prefix: str = "in/") -> list[str | None]:
    """The ContinuationToken of each ListObjectsV2 request on ``prefix``, in order (None: page 1)."""
    return [r.query.get("continuation-token") for r in proxy.requests("ListObjectsV2") if r.query.get("prefix") == prefix]


def distinct(seq) -> list:
    return list(dict.fromkeys(seq))


# --- the proxy itself ------------------------------------------------------------------------------

def test_proxy_forwards_counts_holds_and_stops_cleanly(s3_server):
    import threading

    from s3proxy import S3Proxy

    bucket = new_bucket(s3_server)
    proxy = S3Proxy(s3_server.endpoint).start()
    try:
        fs = s3_server.fs(client_kwargs={"endpoint_url": proxy.endpoint})
        fs.pipe_file(f"{bucket}/p/a b.csv", b"a,b\n1,2\n")
        assert fs.cat_file(f"{bucket}/p/a b.csv") == b"a,b\n1,2\n"
        assert fs.info(f"{bucket}/p/a b.csv")["ETag"] == s3_server.fs().info(f"{bucket}/p/a b.csv")["ETag"]
        fs.rm(f"{bucket}/p/a b.csv")
        ops = [r.op for r in proxy.requests()]
        # s3fs: cat_file asks for the size first (HEAD), rm of one file is a DeleteObjects
        assert ops == ["PutObject", "HeadObject", "GetObject", "HeadObject", "DeleteObjects"], proxy.requests()
        assert proxy.requests()[0].path == f"/{bucket}/p/a b.csv"

        hold = proxy.add_hold(lambda m, p, q: m == "HEAD", lambda: False, timeout=0.5)
        fs.pipe_file(f"{bucket}/p/x.csv", b"x\n")
        fs.info(f"{bucket}/p/x.csv")
        assert hold.released_by == ["timeout"]
        fs.info(f"{bucket}/p/x.csv")  # times=1: the next one passes at once
        assert hold.released_by == ["timeout"] and proxy.count("HeadObject") == 4

        proxy.add_fault(lambda m, p, q: s3_error(403, "AccessDenied", "Access Denied") if m == "GET" else None)
        with pytest.raises(PermissionError):
            fs.cat_file(f"{bucket}/p/x.csv")
        proxy.reset()
        assert proxy.requests() == [] and fs.cat_file(f"{bucket}/p/x.csv") == b"x\n"
    finally:
        proxy.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith(f"s3proxy-{proxy.port}")]
    with pytest.raises(ValueError, match="not on loopback"):
        S3Proxy("http://192.0.2.1:9000")


# --- storage.list_pages / walk_listing, in this process ------------------------------------------

def test_list_pages_sizes_order_names_and_single_object(s3_proxy, s3_server, tmp_path):
    from mineru_cli.storage import list_pages, walk_listing

    bucket = new_bucket(s3_server)
    raw = s3_server.fs()
    keys = ["in/a[1].csv", "in/with space.csv", "in/b*?.csv", "in/sub/deep.csv", "in/z.csv", "in/Ä.csv"] + \
           [f"in/n{i:02d}.csv" for i in range(9)]
    for k in keys:
        raw.pipe_file(f"{bucket}/{k}", f"a,b\n{k},1\n".encode())
    raw.pipe_file(f"{bucket}/in/sub/", b"")  # a folder marker: not an object to convert
    raw.pipe_file(f"{bucket}/in.csv", b"x\n")  # beside the prefix, not under it
    raw.pipe_file(f"{bucket}/input/x.csv", b"x\n")
    expected = sorted(f"{bucket}/{k}" for k in keys)  # str order of these names = UTF-8 byte order = S3's
    info = {p: raw.info(p) for p in expected}

    fs = proxied_fs(s3_proxy, bucket)
    listed_keys = len(keys) + 1  # the marker is listed by S3, dropped by list_pages
    for size in (1, 4, 1000):
        before = s3_proxy.count("ListObjectsV2")
        pages = list(list_pages(fs, f"{bucket}/in", page_size=size))
        flat = [e for p in pages for e in p]
        assert [e[0] for e in flat] == expected
        assert all(0 < len(p) <= size for p in pages)
        assert s3_proxy.count("ListObjectsV2") - before == math.ceil(listed_keys / size)
        for path, nbytes, mtime, etag in flat:
            assert nbytes == info[path]["size"] == len(f"a,b\n{path.split('/', 1)[1]},1\n".encode())
            assert etag == info[path]["ETag"].strip('"') and '"' not in etag
            assert abs(mtime - info[path]["LastModified"].timestamp()) < 1
    requests = [r for r in s3_proxy.requests("ListObjectsV2")]
    assert {r.query["max-keys"] for r in requests} == {"1", "4", "1000"}
    assert all(r.query["prefix"] == "in/" for r in requests)

    # a trailing slash on the root, and the whole bucket
    assert [e[0] for p in list_pages(fs, f"{bucket}/in/", page_size=1000) for e in p] == expected
    whole = [e[0] for p in list_pages(fs, bucket) for e in p]
    assert whole == sorted(expected + [f"{bucket}/in.csv", f"{bucket}/input/x.csv"])

    # one object named by its URL (glob characters and spaces are taken literally)
    opts = {"key": S3_TEST_KEY, "secret": S3_TEST_SECRET, "endpoint_url": s3_proxy.endpoint,
            "skip_instance_cache": "true"}
    for key in ("in/a[1].csv", "in/with space.csv", "in/b*?.csv"):
        protocol, root, pages = walk_listing(f"s3://{bucket}/{key}", opts)
        got = [e for p in pages for e in p]
        assert (protocol, root) == ("s3", f"{bucket}/{key}")
        assert [(e[0], e[1], e[3]) for e in got] == [(f"{bucket}/{key}", info[f"{bucket}/{key}"]["size"],
                                                      info[f"{bucket}/{key}"]["ETag"].strip('"'))]
    # nothing there: no page, no error; a bucket that does not exist: FileNotFoundError
    assert list(walk_listing(f"s3://{bucket}/nothing-here", opts)[2]) == []
    with pytest.raises(FileNotFoundError):
        list(list_pages(fs, "no-such-bucket-here/in"))
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="1 to 1000"):
            next(list_pages(fs, f"{bucket}/in", page_size=bad))


def test_list_pages_on_other_filesystems_is_one_sorted_page():
    import fsspec

    from mineru_cli.storage import list_pages, walk_listing

    fs = fsspec.filesystem("memory")
    base = f"/list-{uuid.uuid4().hex[:8]}"
    for name in ("b.csv", "a.csv", "sub/c.csv", "sub/.hidden.csv"):
        fs.pipe_file(f"{base}/in/{name}", b"x,y\n1,2\n")
    fs.pipe_file(f"{base}/in.csv", b"x\n")
    try:
        pages = list(list_pages(fs, f"{base}/in", page_size=1))
        assert len(pages) == 1
        assert [e[0] for e in pages[0]] == [f"{base}/in/{n}" for n in ("a.csv", "b.csv", "sub/.hidden.csv", "sub/c.csv")]
        assert {e[1] for e in pages[0]} == {8}
        _, _, single = walk_listing(f"memory://{base}/in/a.csv", {})
        assert [(e[0], e[1]) for p in single for e in p] == [(f"{base}/in/a.csv", 8)]
    finally:
        fs.rm(base, recursive=True)


def test_listing_is_retried_with_the_same_token_and_a_refusal_is_not(s3_proxy, s3_server, tmp_path):
    """In process, with the run's S3 settings: page 2 answers 500 InternalError 4 times (more
    than botocore's 3 attempts): s3fs raises OSError(EREMOTEIO) at once and list_pages asks
    again with the same token;
    a 403 AccessDenied on page 2 is raised after one request, pages before it kept."""
    from mineru_cli.storage import list_pages

    bucket = new_bucket(s3_server)
    raw = s3_server.fs()
    for i in range(12):
        raw.pipe_file(f"{bucket}/in/f{i:02d}.csv", b"a\n1\n")
    fs = proxied_fs(s3_proxy, bucket)

    rule = s3_proxy.add_fault(page_fault(bucket, "in/", 2, 4, INTERNAL))
    pages = list(list_pages(fs, f"{bucket}/in", page_size=5))
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [e[0] for p in pages for e in p] == [f"{bucket}/in/f{i:02d}.csv" for i in range(12)]
    tokens = list_tokens(s3_proxy)
    assert rule.hits == 4 and len(tokens) == 3 + 4
    assert tokens[0] is None and len(set(tokens[1:6])) == 1 and tokens[6] not in tokens[:6]

    s3_proxy.reset()
    s3_proxy.add_fault(page_fault(bucket, "in/", 2, None, DENIED))
    got = []
    with pytest.raises(PermissionError):
        for page in list_pages(fs, f"{bucket}/in", page_size=5):
            got.append(page)
    assert [len(p) for p in got] == [5]
    assert len(list_tokens(s3_proxy)) == 2  # not retried: not transient


def test_walk_remote_streams_pages_and_keeps_skip_hidden_and_order(s3_proxy, s3_server):
    """discover: the first document comes after one ListObjectsV2; OUTPUT under the input
    prefix is skipped, hidden objects counted, key order kept; a listing refused on page 3
    keeps pages 1-2 and reports the input once, with the number of objects listed."""
    from mineru_cli.discover import Discovery, discover_iter, walk_remote

    bucket = new_bucket(s3_server)
    raw = s3_server.fs()
    names = [f"d{i:02d}.csv" for i in range(11)] + [".hidden.csv", "sub/.h2.csv", "sub/e.csv",
                                                    "out/x.csv/x.md", "out/x.csv/.mineru-cli.done.json"]
    for n in names:
        raw.pipe_file(f"{bucket}/in/{n}", b"a\n1\n")
    opts = {"key": S3_TEST_KEY, "secret": S3_TEST_SECRET, "endpoint_url": s3_proxy.endpoint}
    url = f"s3://{bucket}/in"

    found = Discovery()
    gen = walk_remote(url, hidden=False, storage_options=opts, found=found, skip=[f"{url}/out"], page_size=4)
    first = next(gen)
    assert first.rel == "d00.csv" and first.uri == f"{url}/d00.csv" and first.etag and first.size == 4
    assert s3_proxy.count("ListObjectsV2", prefix="in/") == 1  # one page, not the whole listing
    rest = [d.rel for d in gen]
    assert [first.rel] + rest == [f"d{i:02d}.csv" for i in range(11)] + ["sub/e.csv"]
    assert found.hidden_ignored == 2
    assert s3_proxy.count("ListObjectsV2", prefix="in/") == math.ceil(len(names) / 4)

    s3_proxy.reset()
    s3_proxy.add_fault(page_fault(bucket, "in/", 3, None, DENIED))
    found = Discovery()
    docs = list(discover_iter([url], found, storage_options=opts, page_size=4, include=["*.csv"]))
    assert [d.rel for d in docs] == [f"d{i:02d}.csv" for i in range(7)]  # pages 1-2 (.hidden.csv is on page 1)
    assert len(found.errors) == 1 and found.errors[0][0] == url
    reason = found.errors[0][1]
    assert reason.startswith(f"cannot list {url}: bucket '{bucket}': access denied: these credentials may not "
                             "list this prefix (PermissionError: Access Denied)")
    assert "the listing stopped after 7 objects" in reason and "\n" not in reason


# --- the CLI ------------------------------------------------------------------------------------------

def test_small_pages_convert_every_object_exactly_once(s3_proxy, s3_server, tmp_path):
    bucket = new_bucket(s3_server)
    names = put_documents(s3_server, bucket, "in", 50, tmp_path / "src")
    proc, report, out = convert_prefix(s3_proxy, tmp_path, bucket, 7)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = by_input(report)
    assert sorted(docs) == names
    assert {d["status"] for d in docs.values()} == {"converted"}
    for n in names:
        assert (out / n / ".mineru-cli.done.json").is_file()
    tokens = list_tokens(s3_proxy)
    assert len(tokens) == math.ceil(50 / 7) == 8
    assert tokens[0] is None and len(set(tokens)) == 8  # every page asked for once
    assert {r.query["max-keys"] for r in s3_proxy.requests("ListObjectsV2")} == {"7"}


@pytest.mark.parametrize("answer", [SLOW_DOWN, INTERNAL], ids=["503-SlowDown", "500-InternalError"])
def test_a_page_failing_more_than_botocore_retries_is_asked_again_with_its_token(s3_proxy, s3_server, tmp_path,
                                                                                  answer):
    bucket = new_bucket(s3_server)
    names = put_documents(s3_server, bucket, "in", 24, tmp_path / "src")
    rule = s3_proxy.add_fault(page_fault(bucket, "in/", 3, 5, answer))
    proc, report, _out = convert_prefix(s3_proxy, tmp_path, bucket, 5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = by_input(report)
    assert sorted(docs) == names
    assert {d["status"] for d in docs.values()} == {"converted"}
    assert "cannot list" not in proc.stderr
    tokens = list_tokens(s3_proxy)
    assert rule.hits == 5
    pages = distinct(tokens)
    assert len(pages) == 5 and len(tokens) == 5 + 5
    assert tokens.count(pages[2]) == 6  # page 3: five failures, then the same token passed
    assert [t for t in tokens if t != pages[2]] == [p for p in pages if p != pages[2]]


@pytest.mark.parametrize("answer,asked,why", [
    (DENIED, 1, "access denied: these credentials may not list this prefix (PermissionError: Access Denied)"),
    (INTERNAL, 12, "OSError: [Errno 121] We encountered an internal error. Please try again."),
], ids=["403-AccessDenied", "500-InternalError"])
def test_a_page_that_fails_for_good_keeps_the_pages_before(s3_proxy, s3_server, tmp_path, answer, asked, why):
    """Page 3 of 5 always fails. 403: not transient, asked once. 500: botocore's 3 attempts in
    each of list_pages' 4 (s3fs does not retry InternalError): 12 requests. The documents of
    pages 1-2 are converted; the input gets one warning line; the exit code is today's for an
    input that cannot be listed (0: the run's documents all converted)."""
    bucket = new_bucket(s3_server)
    names = put_documents(s3_server, bucket, "in", 24, tmp_path / "src")
    s3_proxy.add_fault(page_fault(bucket, "in/", 3, None, answer))
    proc, report, _out = convert_prefix(s3_proxy, tmp_path, bucket, 5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = by_input(report)
    assert sorted(docs) == names[:10]  # the report names each input by its path under the prefix
    assert {d["status"] for d in docs.values()} == {"converted"}
    lines = [l for l in proc.stderr.splitlines() if "cannot list" in l]
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (f"warning: cannot list s3://{bucket}/in: bucket '{bucket}': {why} (the listing stopped "
                        f"after 10 objects: the rest of s3://{bucket}/in is not in this run; a rerun lists it again)")
    tokens = list_tokens(s3_proxy)
    pages = distinct(tokens)
    assert len(pages) == 3 and tokens.count(pages[2]) == asked


def test_documents_are_converted_before_the_listing_ends(s3_proxy, s3_server, tmp_path):
    """Issue 17 part 1, without timing: the proxy holds the 2nd listing page until the first
    document's done-record exists in OUTPUT (120 s at most). Released by that condition means a
    document was converted and committed while discovery was still waiting for page 2."""
    bucket = new_bucket(s3_server)
    names = put_documents(s3_server, bucket, "in", 20, tmp_path / "src")
    out = tmp_path / "out"
    first_done = out / names[0] / ".mineru-cli.done.json"

    def second_page(method, path, query):
        return operation(method, path, query) == "ListObjectsV2" and query.get("prefix") == "in/" \
            and "continuation-token" in query

    hold = s3_proxy.add_hold(second_page, first_done.is_file, timeout=120)
    # botocore's read timeout (60 s) must not cut the held request short
    proc, report, _ = convert_prefix(s3_proxy, tmp_path, bucket, 5, "--order", "path",
                                     "--input-storage-option", "config_kwargs.read_timeout=200", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert hold.released_by == ["condition"], hold.released_by
    docs = by_input(report)
    assert sorted(docs) == names
    assert {d["status"] for d in docs.values()} == {"converted"}
    record = json.loads(first_done.read_text(encoding="utf-8"))
    assert record["input"]["uri"] == f"s3://{bucket}/in/{names[0]}"
    assert len(distinct(list_tokens(s3_proxy))) == 4
    summary = report["summary"]
    assert summary["discovery_complete"] is True
    # the report's own clock says the same: dispatched, and finished, before the walk ended
    assert summary["first_dispatch"] < summary["discovery_ended"]
    assert round(record["committed_at"], 3) <= summary["discovery_ended"]  # the summary's times are rounded to 1 ms


def test_an_output_listing_that_fails_mid_run_still_writes_the_report(s3_proxy, s3_server, tmp_path):
    """A run-wide error after the batch started (page 2 of OUTPUT's listing refused for good,
    403, while the input's page 2 is held so that the walk is still going on): the run stops
    starting documents, writes ``--report`` (``summary.interrupted`` "error", ``summary.error``
    the line) and the events file's summary line, and exits 3 with one error line. Every
    document walked is in the report, not started. Before, the exception left no report and an
    events file without a summary."""
    bucket = new_bucket(s3_server)
    names = put_documents(s3_server, bucket, "in", 20, tmp_path / "src")
    out_url = f"s3://{bucket}/out"
    env = s3_env(tmp_path, MINERU_CLI_LIST_PAGE_SIZE="5")
    first = run_cli_paged(tmp_path, "convert", f"s3://{bucket}/in", "-o", out_url, "--endpoint-url", s3_proxy.endpoint,
                          env=env, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    fs = s3_server.fs()
    for name in names:  # every document to convert again; OUTPUT still lists 4 result files each
        fs.rm(f"{bucket}/out/{name}/.mineru-cli.done.json")
    s3_proxy.reset()
    report, events = tmp_path / "run.json", tmp_path / "run.jsonl"

    def input_page_2(method, path, query):
        return operation(method, path, query) == "ListObjectsV2" and query.get("prefix") == "in/" \
            and "continuation-token" in query

    hold = s3_proxy.add_hold(input_page_2, report.exists, timeout=120)
    s3_proxy.add_fault(page_fault(bucket, "out/", 2, None, DENIED))
    proc = run_cli_paged(tmp_path, "convert", f"s3://{bucket}/in", "-o", out_url, "--endpoint-url", s3_proxy.endpoint,
                         "--report", str(report), "--events", str(events), "--order", "path",
                         "--input-storage-option", "config_kwargs.read_timeout=200", env=env, timeout=240)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("mineru-cli: error:")]
    assert len(errors) == 1 and f"{out_url}: cannot read the done-records" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert hold.released_by in ([], ["condition"]), hold.released_by  # the run never needed the rest
    summary = load_report(report)["summary"]
    assert summary["interrupted"] == "error" and "cannot read the done-records" in summary["error"], summary
    docs = by_input(load_report(report))
    assert sorted(docs) == names[:5], sorted(docs)  # the first listing page: walked, then stopped
    assert {(d["status"], d["code"]) for d in docs.values()} == {("skipped", "interrupted")}, docs
    assert all(d["reason"].startswith("not started: run stopped: ") for d in docs.values()), docs
    lines = [json.loads(l) for l in events.read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "summary" and lines[-1]["interrupted"] == "error"


def test_the_next_page_waits_until_the_first_documents_are_planned(s3_proxy, s3_server, tmp_path):
    """1,030 objects, pages of 1,000 (the default): the first page fills the first window, so
    the second page is asked for only once the planner handed out its first documents, after
    their reads (the sniff's GETs), not before: on a server that answers a listing slowly (moto
    scans the whole bucket per page) the first dispatch does not wait behind it. ``--dry-run``
    plans every document without converting. Then every object is planned exactly once."""
    from mineru_cli.pipeline import FIRST_CHUNK

    bucket = new_bucket(s3_server)
    n = 1030
    s3_server.fs().pipe({f"{bucket}/in/d{i:04d}.csv": f"item,count\nthing {i},{i}\n".encode() for i in range(n)})
    proc, report, _ = convert_prefix(s3_proxy, tmp_path, bucket, 1000, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(by_input(report)) == n
    reqs = s3_proxy.requests()
    page2 = [i for i, r in enumerate(reqs) if r.op == "ListObjectsV2" and r.query.get("prefix") == "in/"
             and "continuation-token" in r.query]
    assert len(page2) == 1, [(r.op, r.query) for r in reqs if r.op == "ListObjectsV2"]
    reads = [i for i, r in enumerate(reqs) if r.op == "GetObject" and r.path.startswith(f"/{bucket}/in/")]
    first = sorted(f"/{bucket}/in/d{i:04d}.csv" for i in range(FIRST_CHUNK))
    first_reads = [i for i in reads if reqs[i].path in first]
    assert sorted(reqs[i].path for i in first_reads) == first, "each of the first chunk's documents read once"
    assert max(first_reads) < page2[0], (max(first_reads), page2[0])
    assert len(reads) == n, "every document read once (its type), none twice"


def test_output_skip_path_is_known_before_output_is_opened_where_it_is_the_same(tmp_path, monkeypatch):
    """``store.output_skip_path`` (what the walk, started before OUTPUT is opened, leaves out) is
    what the opened OUTPUT gives (``root`` of a local path, ``url`` of a remote one), and None
    where only opening tells (a file:// URL, a chained URL, a local path with storage options)."""
    from mineru_cli.store import open_output, output_skip_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for url in ("out", "./a/../out/", "~/results", str(tmp_path / "abs")):
        out = open_output(url)
        assert output_skip_path(url, {}) == out.root, url
    assert output_skip_path("s3://bucket/out/", {}) == "s3://bucket/out/"
    assert output_skip_path("s3://bucket/out", {"anon": True}) == "s3://bucket/out"
    for url, options in (("file:///tmp/x", {}), ("simplecache::s3://b/x", {}), ("out", {"auto_mkdir": True})):
        assert output_skip_path(url, options) is None, url
