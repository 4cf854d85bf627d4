"""Scale: what a large run costs the parent process, local and on S3 (issue 17).

    python benchmarks/scale.py [--sizes 1000,10000,100000] [--s3-sizes 1000,20000]
                               [--workers N] [--keep DIR] [--json FILE]

For each size it makes a tree of tiny documents itself (half CSV, half HTML, 1 % one-page text
PDFs, all the PDFs the same bytes; folders of 1,000 files), runs ``mineru-cli convert IN -o OUT
-q --report R.json`` once (first run), then the same command again (rerun, every document
finished), and prints one Markdown table row per size and storage:

- first run: wall time (from just before ``Popen`` to exit); time to first dispatch (the
  report's ``summary.first_dispatch``, epoch seconds of the first task handed to a worker,
  minus the epoch time just before ``Popen``: it includes Python's start-up and the CLI's
  imports); discovery ended (``summary.discovery_ended``, same origin);
- the parent's peak RSS, workers excluded: the report's ``summary.parent_peak_rss``
  (getrusage of the parent) and this script's own sampling of the parent pid alone with
  psutil every 0.1 s (a cross-check: it can miss a peak shorter than 0.1 s);
- the rerun (local sizes: ``--reruns`` of them, 3 by default, back to back; the one with the
  median wall time is reported and every wall time listed, since this machine's speed drifts;
  S3: one): wall time, parent peak RSS (both ways), the report's ``summary.done_records``
  (``from_index`` / ``read`` / ``indexed``), and first run / rerun;
- the growth of the parent's peak RSS per document between the two largest local sizes
  (10,000 -> 100,000 by default), first run and rerun, and the same between the S3 sizes.

S3: moto's standalone server (``python -m moto.server``, a process of its own) on 127.0.0.1, one bucket
per size, the tree uploaded with boto3 from 8 threads (the upload time is printed), then
``s3://BUCKET/in -> s3://BUCKET/out-N``, both runs through a counting loopback proxy
(``tests/s3proxy.py``) in front of moto. A second table gives the requests of each run per S3
operation (ListObjectsV2 split by prefix: input / output) and the listing pages the input and
output prefixes need (objects / 1000, rounded up): a rerun should make O(those) requests.
moto handles about one request at a time, so S3 times say more about the number of requests
than about S3 itself; and moto answers each ListObjectsV2 page by scanning every key of the
bucket and sorting the matches (measured: about 70 ms for a bucket of 100,000 keys), so runs
that list often over a large bucket (the first run lists each result folder before writing
it) grow faster than linearly on moto, not on S3.

The CLI runs as ``python -m mineru_cli`` with this interpreter (``make install-test`` first),
in a temporary folder (its own ``TMPDIR`` and ``XDG_CACHE_HOME``: S3 staging and locks),
``MINERU_MODEL_SOURCE=local``, dummy AWS credentials (no AWS config files, no instance
metadata) and no ``MINERU_CLI_*`` variables from the caller. Each size's trees are removed as
soon as it is measured, and the whole folder at the end, unless ``--keep DIR`` (then
everything stays under DIR). Exit 1 when a run failed, a first run did not convert every
document or a rerun did not skip every one.

Timing goals are checked here and recorded in benchmarks/RESULTS.md, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "tests"))  # s3proxy.py: the counting loopback proxy

PER_FOLDER = 1000
PDF_EVERY = 100  # one document in 100 is a one-page text PDF
AWS_KEY, AWS_SECRET = "scale-bench", "scale-bench-secret"
UPLOAD_THREADS = 8
S3_OPS = ("ListObjectsV2", "GetObject", "HeadObject", "PutObject")


# --- the trees ---------------------------------------------------------------------------------------

def one_page_pdf(work: Path) -> bytes:
    """The bytes of one one-page text PDF (make_examples.write_text_pdf), reused for every PDF."""
    import make_examples as mk

    path = work / "one-page.pdf"
    mk.write_text_pdf(path, mk.numbered_pages(1), title="Scale")
    data = path.read_bytes()
    path.unlink()
    return data


def documents(n: int, pdf: bytes) -> Iterator[tuple[str, bytes]]:
    """``n`` tiny documents as (relative path, bytes): folders ``d000/`` ... of 1,000 files;
    document ``i`` is a PDF when ``i % 100 == 50``, else a CSV (odd ``i``) or an HTML page
    (even ``i``), with the same shape as make_examples' write_csv / write_html."""
    width = max(3, len(str((n - 1) // PER_FOLDER)))
    for i in range(n):
        folder = f"d{i // PER_FOLDER:0{width}d}"
        if i % PDF_EVERY == PDF_EVERY // 2:
            yield f"{folder}/p{i:07d}.pdf", pdf
        elif i % 2:
            yield f"{folder}/t{i:07d}.csv", b"id,v\n%d,%d\n" % (i, i * 3)
        else:
            yield f"{folder}/t{i:07d}.html", (
                b'<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n<title>T%d</title>\n'
                b"</head>\n<body>\n<h1>Title %d</h1>\n<p>Body %d.</p>\n</body>\n</html>\n" % (i, i, i))


def write_tree(root: Path, n: int, pdf: bytes) -> None:
    made: set[str] = set()
    for rel, data in documents(n, pdf):
        folder = rel.partition("/")[0]
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        with open(root / rel, "wb") as fh:
            fh.write(data)


# --- one CLI run -------------------------------------------------------------------------------------

class RssSampler(threading.Thread):
    """Peak RSS (bytes) of one process alone (not its children), sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, proc.memory_info().rss)
                self.samples += 1
            except psutil.Error:
                return
            self.done.wait(0.1)


def cli_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_CLI_", "AWS_"))}
    env.update(MINERU_MODEL_SOURCE="local", NO_COLOR="1", AWS_ACCESS_KEY_ID=AWS_KEY,
               AWS_SECRET_ACCESS_KEY=AWS_SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(work / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
               XDG_CACHE_HOME=str(work / "cache"), TMPDIR=str(work / "tmp"))
    return env


def convert(work: Path, name: str, inp: str, out: str, extra: list[str]) -> dict:
    """Run ``mineru-cli convert INP -o OUT -q --report work/NAME.json EXTRA`` and measure it."""
    report_path, log_path = work / f"{name}.json", work / f"{name}.log"
    cmd = [sys.executable, "-m", "mineru_cli", "convert", inp, "-o", out, "-q", "--report", str(report_path), *extra]
    with open(log_path, "wb") as log:
        t0_epoch = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=cli_env(work), cwd=work, stdout=log, stderr=subprocess.STDOUT)
        sampler = RssSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    res: dict = {"rc": rc, "wall_s": round(wall, 3), "parent_peak_rss_sampled": sampler.peak,
                 "rss_samples": sampler.samples}
    if not report_path.exists():
        res["error"] = log_path.read_text(errors="replace")[-2000:]
        return res
    with open(report_path, "rb") as fh:
        summary = json.load(fh)["summary"]
    for key in ("converted", "skipped", "failed", "total", "seconds", "workers", "parent_peak_rss", "done_records",
                "peak_worker_rss"):
        res[key] = summary.get(key)
    for key, label in (("started", "startup_s"), ("first_dispatch", "first_dispatch_s"),
                       ("discovery_ended", "discovery_ended_s")):
        if summary.get(key) is not None:  # seconds after the Popen
            res[label] = round(summary[key] - t0_epoch, 3)
    missing = [k for k in ("started", "discovery_ended", "parent_peak_rss", "done_records") if summary.get(k) is None]
    if summary.get("converted") and summary.get("first_dispatch") is None:  # absent only when nothing ran
        missing.append("first_dispatch")
    res["missing_report_keys"] = missing
    if rc not in (0, 1):
        res["error"] = log_path.read_text(errors="replace")[-2000:]
    return res


# --- S3 ----------------------------------------------------------------------------------------------

class S3Bench:
    """moto's standalone server (``python -m moto.server``) on 127.0.0.1 in a process of its own,
    and the counting proxy (tests/s3proxy.py) in front, in this process. Apart: moto and the
    proxy in one Python process share its interpreter lock, and every answer waited for both
    (the first dispatch of 1,000 objects took 2.1 s that way, 1.4 s straight to moto)."""

    def __init__(self) -> None:
        import socket
        import urllib.request

        from s3proxy import S3Proxy

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.moto = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.moto}/moto-api/data.json", timeout=2).read()
                break
            except OSError:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start on {self.moto}") from None
                time.sleep(0.1)
        self.proxy = S3Proxy(self.moto).start()
        self.buckets = 0
        self.client = self._client()  # made (boto3 imported) before any upload is timed

    def _client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.moto, aws_access_key_id=AWS_KEY,
                            aws_secret_access_key=AWS_SECRET, region_name="us-east-1",
                            config=Config(max_pool_connections=UPLOAD_THREADS + 2,
                                          retries={"max_attempts": 5, "mode": "standard"}))

    def upload(self, bucket: str, n: int, pdf: bytes) -> None:
        """Create ``bucket`` and put the ``n`` documents under ``in/``, straight to moto."""
        client = self.client
        client.create_bucket(Bucket=bucket)

        def put(item: tuple[str, bytes]) -> None:
            client.put_object(Bucket=bucket, Key=f"in/{item[0]}", Body=item[1])

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            for _ in pool.map(put, documents(n, pdf)):
                pass

    def count_objects(self, bucket: str, prefix: str) -> int:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sum(page.get("KeyCount", 0) for page in pages)

    def requests(self, out_prefix: str) -> dict:
        """The proxy's counts since the last reset: per operation, ListObjectsV2 split by prefix."""
        reqs = self.proxy.requests()
        ops = Counter(r.op for r in reqs)
        lists = [r for r in reqs if r.op == "ListObjectsV2"]
        return {"total": len(reqs), "ops": dict(ops),
                "list_input": sum(1 for r in lists if r.query.get("prefix", "").startswith("in")),
                "list_output": sum(1 for r in lists if r.query.get("prefix", "").startswith(out_prefix))}

    def reset_moto(self) -> None:
        """Forget every bucket (moto's own reset API), to start the next size from nothing."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.moto}/moto-api/reset", method="POST"), timeout=60).read()

    def stop(self) -> None:
        self.proxy.stop()
        self.server.terminate()
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()


# --- the benchmark -----------------------------------------------------------------------------------

def measure_local(work: Path, n: int, pdf: bytes, extra: list[str], keep: bool, reruns: int = 1) -> dict:
    base = work / f"local-{n}"
    shutil.rmtree(base, ignore_errors=True)  # a --keep folder used before: start from nothing
    inp, out = base / "in", base / "out"
    t = time.perf_counter()
    write_tree(inp, n, pdf)
    row: dict = {"storage": "local", "documents": n, "made_s": round(time.perf_counter() - t, 2)}
    row["first"] = convert(base, "first", str(inp), str(out), extra)
    runs = [convert(base, f"rerun{i + 1}", str(inp), str(out), extra) for i in range(max(1, reruns))]
    row["reruns_s"] = [r["wall_s"] for r in runs]
    row["rerun"] = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]  # the median one (odd counts)
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return row


def measure_s3(work: Path, s3: S3Bench, n: int, pdf: bytes, extra: list[str], keep: bool) -> dict:
    base = work / f"s3-{n}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    s3.buckets += 1
    bucket, out_prefix = f"scale-{s3.buckets}-{n}", f"out-{n}"
    t = time.perf_counter()
    s3.upload(bucket, n, pdf)
    row: dict = {"storage": "s3", "documents": n, "made_s": round(time.perf_counter() - t, 2)}
    extra = [*extra, "--endpoint-url", s3.proxy.endpoint]
    for name in ("first", "rerun"):
        s3.proxy.reset()
        row[name] = convert(base, name, f"s3://{bucket}/in", f"s3://{bucket}/{out_prefix}", extra)
        row[name]["requests"] = s3.requests(out_prefix)
    s3.proxy.reset()
    row["input_objects"] = s3.count_objects(bucket, "in/")
    row["output_objects"] = s3.count_objects(bucket, f"{out_prefix}/")
    row["listing_pages"] = math.ceil(row["input_objects"] / 1000) + math.ceil(row["output_objects"] / 1000)
    if not keep:
        s3.reset_moto()
        shutil.rmtree(base, ignore_errors=True)
    return row


def growth(rows: list[dict], storage: str) -> dict | None:
    """Parent peak RSS growth per document between the two largest sizes of ``storage``."""
    got = sorted((r for r in rows if r["storage"] == storage and "parent_peak_rss" in r["first"]
                  and "parent_peak_rss" in r["rerun"]), key=lambda r: r["documents"])
    if len(got) < 2 or got[-1]["documents"] == got[-2]["documents"]:
        return None
    a, b = got[-2], got[-1]
    docs = b["documents"] - a["documents"]
    res = {"storage": storage, "from": a["documents"], "to": b["documents"]}
    for run in ("first", "rerun"):
        res[f"{run}_bytes_per_doc"] = round((b[run]["parent_peak_rss"] - a[run]["parent_peak_rss"]) / docs, 1)
        res[f"{run}_sampled_bytes_per_doc"] = round(
            (b[run]["parent_peak_rss_sampled"] - a[run]["parent_peak_rss_sampled"]) / docs, 1)
    return res


def mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:.0f} MB"


def secs(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f} s" if v < 10 else f"{v:.1f} s"


def check(row: dict) -> list[str]:
    """What went wrong in a size's runs (empty: all fine)."""
    bad = []
    for run, want in (("first", "converted"), ("rerun", "skipped")):
        r = row[run]
        if r["rc"] != 0:
            bad.append(f"{run} run exit {r['rc']}" + (f": {r['error'][-300:]}" if r.get("error") else ""))
        elif r.get(want) != row["documents"]:
            bad.append(f"{run} run: {want} {r.get(want)} of {row['documents']} (failed {r.get('failed')})")
        if r.get("missing_report_keys"):
            bad.append(f"{run} run: report summary lacks {', '.join(r['missing_report_keys'])}")
    return bad


def targets(res: dict) -> list[str]:
    """Issue 17's goals, each at the largest size run of its storage (the issue's sizes:
    100,000 local, 20,000 on S3), with the measured value."""
    out = []
    for storage, issue_size in (("local", 100_000), ("s3", 20_000)):
        got = [r for r in res["rows"] if r["storage"] == storage]
        if not got:
            continue
        r = max(got, key=lambda r: r["documents"])
        f, re_ = r["first"], r["rerun"]
        at = f"{storage} {r['documents']:,}" + ("" if r["documents"] == issue_size else f" (the issue's size: {issue_size:,})")
        first = f.get("first_dispatch_s")
        if first is not None:
            out.append(f"{at}: first document handed to a worker {first:.2f} s after Popen "
                       f"({'met' if first <= 2 else 'not met'}: target within 2 s of start).")
        if storage == "local":
            peak = f.get("parent_peak_rss")
            if peak is not None:
                out.append(f"{at}: parent peak RSS {mb(peak)} first run, {mb(re_.get('parent_peak_rss'))} rerun "
                           f"({'met' if max(peak, re_.get('parent_peak_rss') or 0) < 400e6 else 'not met'}: "
                           f"target under 400 MB).")
            if re_.get("wall_s"):
                ratio = f["wall_s"] / re_["wall_s"]
                ok = ratio >= 100 and re_["wall_s"] < 30
                out.append(f"{at}: rerun {secs(re_['wall_s'])}, x{ratio:.1f} faster than the first run "
                           f"({'met' if ok else 'not met'}: target at least x100 and under 30 s).")
        elif re_.get("requests"):
            q = re_["requests"]
            out.append(f"{at}: rerun made {q['total']:,} requests ({q['ops'].get('ListObjectsV2', 0)} ListObjectsV2) "
                       f"for {r['listing_pages']} listing pages of input and output "
                       f"(target O(listing pages), not one per document).")
    return out


def print_tables(res: dict) -> None:
    rows = res["rows"]
    print(f"# {res['date']} on {res['machine']}: {res['command']}")
    print()
    print("| storage | documents | tree made | first run | first dispatch | discovery ended "
          "| parent peak RSS (report / sampled) | rerun | rerun parent peak RSS (report / sampled) "
          "| rerun done_records (index / read / indexed) | first / rerun |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, re_ = r["first"], r["rerun"]
        dr = re_.get("done_records") or {}
        ratio = f"x{f['wall_s'] / re_['wall_s']:.1f}" if re_.get("wall_s") else "-"
        made = f"{'written' if r['storage'] == 'local' else 'uploaded'} {secs(r['made_s'])}"
        print(f"| {r['storage']} | {r['documents']:,} | {made} | {secs(f['wall_s'])} | {secs(f.get('first_dispatch_s'))} "
              f"| {secs(f.get('discovery_ended_s'))} | {mb(f.get('parent_peak_rss'))} / {mb(f['parent_peak_rss_sampled'])} "
              f"| {secs(re_['wall_s'])} | {mb(re_.get('parent_peak_rss'))} / {mb(re_['parent_peak_rss_sampled'])} "
              f"| {dr.get('from_index', '-')} / {dr.get('read', '-')} / {dr.get('indexed', '-')} | {ratio} |")
    print()
    print("First dispatch and discovery ended: seconds from just before the CLI's Popen (Python's start-up and "
          "the CLI's imports included), from the report's summary.")
    for r in rows:
        if len(r.get("reruns_s", [])) > 1:
            print(f"- {r['storage']} {r['documents']:,}: rerun wall times "
                  f"{', '.join(secs(x) for x in r['reruns_s'])} (the median is in the table)")
    s3_rows = [r for r in rows if r["storage"] == "s3"]
    if s3_rows:
        print()
        print("| S3 documents | run | requests | ListObjectsV2 (input / output) | GetObject | HeadObject | PutObject "
              "| other | listing pages needed (input + output objects / 1000) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in s3_rows:
            for run in ("first", "rerun"):
                q = r[run].get("requests") or {"total": 0, "ops": {}, "list_input": 0, "list_output": 0}
                ops = q["ops"]
                other = {k: v for k, v in sorted(ops.items()) if k not in S3_OPS}
                pages = (f"{r['listing_pages']} ({r['input_objects']:,} + {r['output_objects']:,} objects)"
                         if run == "rerun" else "")
                print(f"| {r['documents']:,} | {run} | {q['total']:,} | {ops.get('ListObjectsV2', 0)} "
                      f"({q['list_input']} / {q['list_output']}) | {ops.get('GetObject', 0):,} "
                      f"| {ops.get('HeadObject', 0):,} | {ops.get('PutObject', 0):,} "
                      f"| {', '.join(f'{k} {v:,}' for k, v in other.items()) or '-'} | {pages} |")
    print()
    for g in res["growth"]:
        print(f"- Parent peak RSS growth, {g['storage']} {g['from']:,} -> {g['to']:,} documents: "
              f"first run {g['first_bytes_per_doc']:,.0f} B/document (sampled {g['first_sampled_bytes_per_doc']:,.0f}), "
              f"rerun {g['rerun_bytes_per_doc']:,.0f} B/document (sampled {g['rerun_sampled_bytes_per_doc']:,.0f})"
              f"{'; target <= 2 KB/document from 10,000 to 100,000' if g['storage'] == 'local' else ''}.")
    for line in targets(res):
        print(f"- {line}")
    for problem in res["problems"]:
        print(f"PROBLEM: {problem}")


def sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip() and int(s.replace("_", "")) > 0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="local tree sizes, comma-separated ('' for none)")
    ap.add_argument("--s3-sizes", default="1000,20000", help="S3 prefix sizes on moto, comma-separated ('' for none)")
    ap.add_argument("--workers", type=int, default=None, help="mineru-cli --workers (default: its own default)")
    ap.add_argument("--keep", help="work in this folder and keep the local trees, outputs, reports and logs "
                                   "(S3 objects live in moto's server process and go with it)")
    ap.add_argument("--reruns", type=int, default=3,
                    help="local sizes: reruns after the first run; the median one is reported (default 3)")
    ap.add_argument("--json", help="also write every number to this JSON file")
    a = ap.parse_args(argv)
    local_sizes, s3_sizes = sizes(a.sizes), sizes(a.s3_sizes)
    try:
        import psutil  # noqa: F401

        import mineru_cli  # noqa: F401
    except ImportError as e:
        print(f"scale.py: {e}; run it with the project's interpreter after `make install-test` "
              f"(.venv/bin/python benchmarks/scale.py)", file=sys.stderr)
        return 2
    if a.keep:
        work = Path(a.keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="mineru-cli-scale-"))
    (work / "tmp").mkdir(exist_ok=True)
    extra = ["--workers", str(a.workers)] if a.workers else []
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                 "command": " ".join(["python", "benchmarks/scale.py", *(sys.argv[1:] if argv is None else argv)]),
                 "rows": [], "growth": [], "problems": []}
    s3 = None
    try:
        pdf = one_page_pdf(work)
        for n in local_sizes:
            print(f"local {n:,} documents ...", file=sys.stderr, flush=True)
            res["rows"].append(measure_local(work, n, pdf, extra, bool(a.keep), a.reruns))
        if s3_sizes:
            s3 = S3Bench()
            for n in s3_sizes:
                print(f"S3 {n:,} documents ...", file=sys.stderr, flush=True)
                res["rows"].append(measure_s3(work, s3, n, pdf, extra, bool(a.keep)))
    finally:
        if s3 is not None:
            s3.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["growth"] = [g for g in (growth(res["rows"], "local"), growth(res["rows"], "s3")) if g]
    res["problems"] = [f"{r['storage']} {r['documents']:,}: {p}" for r in res["rows"] for p in check(r)]
    print_tables(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
