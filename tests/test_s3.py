"""S3 in and out, for real (issue 5): moto's standalone S3 server on 127.0.0.1 (a real HTTP
endpoint, no in-process patching of boto), s3fs against it, the CLI as a real subprocess.

Runs: s3 -> s3, local -> s3 (with the server stopped in the middle, then a rerun), s3 -> local,
the writability probe (missing bucket, wrong credentials, not allowed, no credentials,
unreachable endpoint), and ``clean`` on local disk and on S3. Every log, report, output and
done-record of these runs is searched for the secret key.

Access denied needs a server that checks credentials: moto accepts any by default. A second
moto server runs as a subprocess (so its global auth switch does not touch the shared one);
the test creates a bucket and an IAM user with a read-only policy there, then turns on
moto's IAM enforcement with ``POST /moto-api/reset-auth`` (body ``0``: the number of
requests still let through unauthenticated; what ``INITIAL_NO_AUTH_ACTION_COUNT`` sets at
start-up). From then on an unknown access key gets ``InvalidAccessKeyId`` and the read-only
user ``AccessDenied`` on PutObject: both 403, as on AWS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (S3_TEST_KEY, S3_TEST_SECRET, by_input, load_make_examples, load_report, run_cli,
                      run_convert_watched, s3_env)

# Corpus documents used (name, folder in the corpus, phrases their Markdown must contain, pages).
EQUATIONS = ("docling_equations.docx", "office", ["Pythagorean theorem", "E=mc^{2}"], 1)
TEXTBOX = ("docling_textbox.docx", "office", ["Infectious Disease Reporting Procedure"], 1)
CODE_PDF = ("docling_code_and_formula.pdf", "pdf/normal", ["JavaScript Code Example"], 2)
LATEX_PDF = ("samplefiles_latex_multicolumn.pdf", "pdf/normal", ["Two-Column Document with Lorem Ipsum"], 3)


# --- helpers ---------------------------------------------------------------------------------------



def corpus_doc(corpus: Path, spec) -> Path:
    name, folder = spec[0], spec[1]
    path = corpus / folder / name
    if not path.is_file():
        pytest.skip(f"corpus document {folder}/{name} not found")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_no_secret(*texts: str | bytes) -> None:
    for t in texts:
        if isinstance(t, bytes):
            t = t.decode("utf-8", "replace")
        assert S3_TEST_SECRET not in t, "the secret key leaked:\n" + t[max(0, t.find(S3_TEST_SECRET) - 300):][:600]


def check_result(files: dict[str, bytes], spec, stem: str | None = None) -> dict:
    """Assert one document's result files (relative name -> bytes): Markdown with the expected
    phrases, content list and middle JSON consistent with it, a done-record listing exactly the
    files present with their sizes. Returns the done-record."""
    name, _folder, phrases, pages = spec
    stem = stem or Path(name).stem
    md = files[f"{stem}.md"].decode("utf-8")
    for phrase in phrases:
        assert phrase in md, f"{name}: {phrase!r} not in the Markdown:\n{md[:500]}"
    content_list = json.loads(files[f"{stem}_content_list.json"])
    assert isinstance(content_list, list) and content_list
    assert phrases[0] in json.dumps(content_list, ensure_ascii=False)
    middle = json.loads(files[f"{stem}_middle.json"])
    assert len(middle["pages"]) == pages
    record = json.loads(files[".mineru-cli.done.json"])
    listed = {f["name"]: f["size"] for f in record["files"]}
    present = {k: len(v) for k, v in files.items() if not k.startswith(".mineru-cli")}
    assert listed == present
    assert record["pages"] == pages and record["tier"] == "flash"
    assert ".mineru-cli.pending" not in files
    assert_no_secret(files[".mineru-cli.done.json"])
    return record


def s3_result(fs, base: str) -> dict[str, bytes]:
    """Every object under ``base`` (bucket/prefix/doc-folder) as relative name -> bytes."""
    return {p[len(base) + 1:]: fs.cat_file(p) for p in fs.find(base)}


def local_result(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    return lines[0]


def snapshot_local(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def s3(s3_server):
    """The shared moto server, running (a test that stopped it brings it back itself)."""
    if not s3_server.running:
        s3_server.start()
    return s3_server


# --- checksum setting -------------------------------------------------------------------------------

def test_checksum_setting_for_custom_endpoints_against_moto(s3, monkeypatch):
    """With a custom endpoint, uploads carry no botocore 1.36+ default checksum (what some
    S3-compatible servers reject); without our setting they do. Both round-trip through moto."""
    import s3fs

    from mineru_cli.storage import s3_options

    bucket = s3.bucket("checksum-test")
    opts = s3_options({}, s3.endpoint)
    assert opts["client_kwargs"] == {"endpoint_url": s3.endpoint}
    assert opts["config_kwargs"]["request_checksum_calculation"] == "when_required"
    assert opts["config_kwargs"]["response_checksum_validation"] == "when_required"

    sent: dict[str, dict] = {}

    def upload(label: str, fs) -> bytes:
        fs.connect()

        def hook(request, **_kw):
            sent[label] = {k.lower(): v for k, v in request.headers.items()}

        fs.s3.meta.events.register("before-send.s3.PutObject", hook)
        data = f"payload of {label}".encode()
        fs.pipe_file(f"{bucket}/{label}.txt", data)
        return data

    ours = s3fs.S3FileSystem(key=S3_TEST_KEY, secret=S3_TEST_SECRET, skip_instance_cache=True, **opts)
    default = s3.fs()
    for label, fs in (("ours", ours), ("default", default)):
        data = upload(label, fs)
        assert s3.fs().cat_file(f"{bucket}/{label}.txt") == data
    assert not [h for h in sent["ours"] if h.startswith("x-amz-checksum") or h == "x-amz-sdk-checksum-algorithm"]
    assert any(h.startswith("x-amz-checksum") for h in sent["default"]), sent["default"]

    # AWS_ENDPOINT_URL (botocore reads it itself) also counts as a custom endpoint; a user's
    # explicit choice wins; dotted storage options nest and convert known integer keys.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    env_opts = s3_options({})
    assert "client_kwargs" not in env_opts
    assert env_opts["config_kwargs"]["request_checksum_calculation"] == "when_required"
    mine = s3_options({"config_kwargs.request_checksum_calculation": "when_supported",
                       "config_kwargs.connect_timeout": "7"}, s3.endpoint)
    assert mine["config_kwargs"]["request_checksum_calculation"] == "when_supported"
    assert mine["config_kwargs"]["connect_timeout"] == 7


# --- s3 -> s3 ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_to_s3(s3_server, corpus, tmp_path_factory):
    """Input prefix s3://mineru-in/data with two documents to convert, one excluded, a text
    file and a hidden file; OUTPUT s3://mineru-in/data/converted lies under the input prefix.
    Credentials are also given as --storage-option (redaction of options)."""
    if not s3_server.running:
        s3_server.start()
    tmp = tmp_path_factory.mktemp("s3-to-s3")
    bucket = s3_server.bucket("mineru-in")
    fs = s3_server.fs()
    fs.put_file(str(corpus_doc(corpus, EQUATIONS)), f"{bucket}/data/{EQUATIONS[0]}")
    fs.put_file(str(corpus_doc(corpus, CODE_PDF)), f"{bucket}/data/sub/{CODE_PDF[0]}")
    fs.put_file(str(corpus_doc(corpus, TEXTBOX)), f"{bucket}/data/skip/{TEXTBOX[0]}")
    fs.pipe_file(f"{bucket}/data/notes.txt", b"not a document\n")
    fs.pipe_file(f"{bucket}/data/.hidden.docx", b"hidden")
    args = ["convert", f"s3://{bucket}/data", "-o", f"s3://{bucket}/data/converted", "--endpoint-url",
            s3_server.endpoint, "--workers", "2", "--storage-option", f"key={S3_TEST_KEY}",
            "--storage-option", f"secret={S3_TEST_SECRET}", "--exclude", "skip/*"]
    env = s3_env(tmp)
    first = run_cli(*args, "--include", "*.docx", "--include", "*.pdf", "--report", str(tmp / "r1.json"),
                    "--log-file", str(tmp / "run.log"), env=env, timeout=300)
    second = run_cli(*args, "--report", str(tmp / "r2.json"), "--log-file", str(tmp / "run.log"), env=env, timeout=300)
    return {"tmp": tmp, "bucket": bucket, "first": first, "second": second, "env": env}


def test_s3_to_s3(s3, s3_to_s3):
    tmp, bucket, first, second = s3_to_s3["tmp"], s3_to_s3["bucket"], s3_to_s3["first"], s3_to_s3["second"]
    assert first.returncode == 0, first.stdout + first.stderr
    # the storage line shows the endpoint and the options, secrets redacted
    assert (f"output: s3://{bucket}/data/converted (endpoint {s3.endpoint}; storage options "
            "{'key': '***', 'secret': '***'}); results are staged in ") in first.stdout
    docs = by_input(load_report(tmp / "r1.json"))
    assert set(docs) == {EQUATIONS[0], f"sub/{CODE_PDF[0]}"}  # --include/--exclude, hidden ignored
    fs = s3.fs()
    for rel, spec in ((EQUATIONS[0], EQUATIONS), (f"sub/{CODE_PDF[0]}", CODE_PDF)):
        d = docs[rel]
        assert d["status"] == "converted", d
        assert d["output"] == f"s3://{bucket}/data/converted/{rel}/"
        assert d["pages"] == spec[3]
        files = s3_result(fs, f"{bucket}/data/converted/{rel}")
        record = check_result(files, spec)
        assert record["input"]["uri"] == f"s3://{bucket}/data/{rel}"
        assert record["input"]["etag"] and record["input"]["size"] == len(fs.cat_file(f"{bucket}/data/{rel}"))
    assert [p for p in fs.find(f"{bucket}/data/converted") if "images/" in p], "the PDF's formula image"
    assert not [p for p in fs.find(f"{bucket}/data/converted") if "probe" in p or p.endswith(".pending")]
    # staging (default place: $XDG_CACHE_HOME/mineru-cli/staging/<hash>) is empty after the commits
    staging = tmp / "cache" / "mineru-cli" / "staging"
    assert staging.is_dir()
    assert not [p for p in staging.rglob("*") if p.is_file()]
    assert (tmp / "cache" / "mineru-cli" / "locks").is_dir()  # the run lock of a remote OUTPUT

    # rerun without --include: the results under data/converted are not taken as inputs
    assert second.returncode == 0, second.stdout + second.stderr
    docs2 = by_input(load_report(tmp / "r2.json"))
    assert set(docs2) == {EQUATIONS[0], f"sub/{CODE_PDF[0]}", "notes.txt"}
    assert docs2[EQUATIONS[0]]["code"] == docs2[f"sub/{CODE_PDF[0]}"]["code"] == "done"
    assert docs2["notes.txt"]["status"] == "skipped" and docs2["notes.txt"]["code"] == "unsupported_type"

    records = [fs.cat_file(p) for p in fs.find(f"{bucket}/data/converted") if p.endswith(".mineru-cli.done.json")]
    assert len(records) == 2
    assert_no_secret(first.stdout, first.stderr, second.stdout, second.stderr, (tmp / "run.log").read_text(),
                     (tmp / "r1.json").read_text(), (tmp / "r2.json").read_text(), *records)


# --- local -> s3, with the server stopped in the middle ---------------------------------------------

def test_local_to_s3_outage_then_rerun_commits_staged_results(s3, corpus, tmp_path):
    """Three local documents to S3, two workers, in path order. The fast one is committed; the
    two slow ones (held by the test hook) finish converting while the server is down: they
    fail with the upload reason and keep their staging. With the server back on the same
    port, a rerun uploads them from staging without converting again."""
    bucket = s3.bucket("mineru-out")
    src = tmp_path / "in"
    layout = {f"a-fast/{EQUATIONS[0]}": EQUATIONS, f"b-slow/{CODE_PDF[0]}": CODE_PDF,
              f"b-slow/{LATEX_PDF[0]}": LATEX_PDF}
    for rel, spec in layout.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus_doc(corpus, spec), src / rel)
    staging = tmp_path / "staging"
    out_url = f"s3://{bucket}/run"
    args = ["convert", str(src), "-o", out_url, "--endpoint-url", s3.endpoint, "--workers", "2", "--order", "path",
            "--retries", "1", "--staging-dir", str(staging), "--log-file", str(tmp_path / "run.log")]
    fs = s3.fs()
    fast_done = f"{bucket}/run/a-fast/{EQUATIONS[0]}/.mineru-cli.done.json"

    env = s3_env(tmp_path, MINERU_CLI_TEST_HOLD="b-slow", MINERU_CLI_TEST_HOLD_SECONDS="8")
    with open(tmp_path / "out1.txt", "w") as so, open(tmp_path / "err1.txt", "w") as se:
        proc = subprocess.Popen([sys.executable, "-m", "mineru_cli", *args, "--report", str(tmp_path / "r1.json")],
                                env=env, stdout=so, stderr=se)
        try:
            deadline = time.time() + 120
            # committed: the done-record is there and the pending marker, removed last, is gone
            while not fs.exists(fast_done) or fs.exists(fast_done.replace(".done.json", ".pending")):
                assert proc.poll() is None, "the run ended before the fast document was committed"
                assert time.time() < deadline, "the fast document was never committed"
                time.sleep(0.1)
            s3.stop()  # the slow documents are still converting (held)
            stopped_at = time.time()
            rc = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            s3.start()  # same port; moto keeps the objects
    out1, err1 = (tmp_path / "out1.txt").read_text(), (tmp_path / "err1.txt").read_text()
    assert rc == 1, out1 + err1
    assert time.time() - stopped_at < 120
    r1 = by_input(load_report(tmp_path / "r1.json"))
    assert r1[f"a-fast/{EQUATIONS[0]}"]["status"] == "converted"
    first_attempts = {}
    for rel in (f"b-slow/{CODE_PDF[0]}", f"b-slow/{LATEX_PDF[0]}"):
        d = r1[rel]
        assert d["status"] == "failed" and d["code"] == "storage_error", d
        assert f"upload to {out_url}/{rel}/ failed" in d["reason"]
        assert f"bucket '{bucket}': endpoint unreachable" in d["reason"], d["reason"]
        assert "kept in staging and a rerun uploads it" in d["reason"]
        assert [a["status"] for a in d["attempts"]] == ["ok"]  # converted once, then the upload failed
        first_attempts[rel] = d["attempts"]
        assert not fs.exists(f"{bucket}/run/{rel}/.mineru-cli.done.json")
        assert f"failed {rel}: storage error" in (tmp_path / "run.log").read_text()
    kept = {json.loads((p / ".mineru-cli.staged.json").read_text())["input"]["rel"]: p
            for p in staging.iterdir() if (p / ".mineru-cli.staged.json").is_file()}
    assert set(kept) == {f"b-slow/{CODE_PDF[0]}", f"b-slow/{LATEX_PDF[0]}"}
    for rel, folder in kept.items():
        assert (folder / f"{Path(rel).stem}.md").is_file()

    # with the server back, --dry-run says what a rerun does: commit the two staged results
    dry = run_cli(*args, "--dry-run", env=s3_env(tmp_path), timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run: 0 to convert, 2 to commit, 1 to skip, 0 would fail" in dry.stdout
    assert f"would commit  b-slow/{CODE_PDF[0]}" in dry.stdout

    # rerun with the server back. The hook would now hold a conversion of the slow documents
    # for 10 minutes: the run finishing at all shows they were not converted again.
    env2 = s3_env(tmp_path, MINERU_CLI_TEST_HOLD="b-slow", MINERU_CLI_TEST_HOLD_SECONDS="600")
    second = run_cli(*args, "--report", str(tmp_path / "r2.json"), env=env2, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    r2 = by_input(load_report(tmp_path / "r2.json"))
    assert r2[f"a-fast/{EQUATIONS[0]}"]["code"] == "done"
    for rel in first_attempts:
        d = r2[rel]
        assert d["status"] == "converted" and d["reason"] == "committed a result staged by an earlier run", d
        assert d["attempts"] == first_attempts[rel]  # the first run's conversion, no new attempt
        assert d["output"] == f"{out_url}/{rel}/"
    assert not [p for p in staging.rglob("*") if p.is_file()]
    records = []
    for rel, spec in layout.items():
        files = s3_result(fs, f"{bucket}/run/{rel}")
        check_result(files, spec)
        records.append(files[".mineru-cli.done.json"])
    assert_no_secret(out1, err1, second.stdout, second.stderr, (tmp_path / "run.log").read_text(),
                     (tmp_path / "r1.json").read_text(), (tmp_path / "r2.json").read_text(), *records)


# Pauses the run right after a done-record is uploaded (the test stops the server then): the
# commit's last step, deleting the pending marker, meets a real outage.
PAUSE_AFTER_DONE_SCRIPT = r'''
import asyncio, json, os, sys
import s3fs
_orig = s3fs.S3FileSystem._pipe_file
async def _pipe_file(self, path, data, *args, **kwargs):
    result = await _orig(self, path, data, *args, **kwargs)
    if path.endswith(".mineru-cli.done.json"):
        open(os.environ["PAUSED_FLAG"], "w").close()
        while not os.path.exists(os.environ["GO_FLAG"]):
            await asyncio.sleep(0.05)
    return result
s3fs.S3FileSystem._pipe_file = _pipe_file
from mineru_cli.convert import run_convert
from mineru_cli.settings import load_settings
sys.exit(run_convert(load_settings(json.loads(sys.argv[1]))))
'''


def test_outage_after_the_done_record_leaves_a_converted_result_with_a_warning(s3, tmp_path):
    """The server goes down between the done-record's upload and the pending marker's
    deletion, the commit's last request. The result is complete (the done-record is written
    last of the files), so the document is reported converted, with a warning that the marker
    was left, and exit 0; a rerun skips it. Before, it was reported failed (storage error), exit 1,
    for a result every later run treats as finished."""
    mk = load_make_examples()
    bucket = s3.bucket("mineru-marker")
    src = tmp_path / "in"
    src.mkdir()
    mk.write_csv(src / "scores.csv", [["id", "score"], [1, 90]])
    url = f"s3://{bucket}/out"
    paused, go = tmp_path / "paused", tmp_path / "go"
    env = s3_env(tmp_path, PAUSED_FLAG=str(paused), GO_FLAG=str(go))
    settings = {"inputs": [str(src)], "output": url, "endpoint_url": s3.endpoint, "retries": 1,
                "report": str(tmp_path / "r1.json")}
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_AFTER_DONE_SCRIPT, json.dumps(settings)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not paused.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the done-record was never uploaded"
            time.sleep(0.05)
        s3.stop()
        go.touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        s3.start()
    assert proc.returncode == 0, out + err
    doc = by_input(load_report(tmp_path / "r1.json"))["scores.csv"]
    assert doc["status"] == "converted", doc
    assert len(doc["warnings"]) == 1 and doc["warnings"][0].startswith(
        "the pending marker .mineru-cli.pending could not be deleted after the done-record was written (")
    assert doc["warnings"][0].endswith("); the result is complete")
    fs = s3.fs()
    names = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/scores.csv"))
    assert names == [".mineru-cli.done.json", ".mineru-cli.pending", "scores.md", "scores_content_list.json",
                     "scores_middle.json"]
    again = run_cli("convert", str(src), "-o", url, "--endpoint-url", s3.endpoint, "--report",
                    str(tmp_path / "r2.json"), env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert by_input(load_report(tmp_path / "r2.json"))["scores.csv"]["code"] == "done"


def test_rerun_replaces_an_s3_result_whose_files_were_deleted(s3, tmp_path):
    """local -> S3: a result object deleted behind the tool's back (its done-record kept) is
    noticed on the rerun from one listing of OUTPUT, and that document is converted again."""
    mk = load_make_examples()
    bucket = s3.bucket("mineru-lost")
    src = tmp_path / "in"
    src.mkdir()
    mk.write_csv(src / "a.csv", [["id", "v"], [1, 2]])
    mk.write_csv(src / "b.csv", [["id", "v"], [3, 4]])
    env = s3_env(tmp_path)
    url = f"s3://{bucket}/out"
    first = run_cli("convert", str(src), "-o", url, "--endpoint-url", s3.endpoint, env=env, timeout=300)
    assert first.returncode == 0 and "2 converted" in first.stdout, first.stdout + first.stderr
    fs = s3.fs()
    fs.rm_file(f"{bucket}/out/a.csv/a_middle.json")
    again = run_cli("convert", str(src), "-o", url, "--endpoint-url", s3.endpoint, "--report",
                    str(tmp_path / "r.json"), env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    docs = by_input(load_report(tmp_path / "r.json"))
    assert (docs["a.csv"]["status"], docs["b.csv"]["status"]) == ("converted", "skipped")
    assert "converted  a.csv" in again.stdout
    assert fs.cat_file(f"{bucket}/out/a.csv/a_middle.json").startswith(b"{")


# --- s3 -> local ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_to_local(s3_server, corpus, tmp_path_factory):
    if not s3_server.running:
        s3_server.start()
    tmp = tmp_path_factory.mktemp("s3-to-local")
    bucket = s3_server.bucket("mineru-src")
    fs = s3_server.fs()
    fs.put_file(str(corpus_doc(corpus, TEXTBOX)), f"{bucket}/batch/{TEXTBOX[0]}")
    fs.put_file(str(corpus_doc(corpus, LATEX_PDF)), f"{bucket}/batch/pdf/{LATEX_PDF[0]}")
    out = tmp / "out"
    proc = run_cli("convert", f"s3://{bucket}/batch/", "-o", str(out), "--endpoint-url", s3_server.endpoint,
                   "--workers", "2", "--report", str(tmp / "r.json"), "--log-file", str(tmp / "run.log"),
                   env=s3_env(tmp), timeout=300)
    return {"tmp": tmp, "out": out, "proc": proc, "bucket": bucket}


def test_s3_to_local(s3_to_local):
    tmp, out, proc, bucket = s3_to_local["tmp"], s3_to_local["out"], s3_to_local["proc"], s3_to_local["bucket"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = by_input(load_report(tmp / "r.json"))
    assert set(docs) == {TEXTBOX[0], f"pdf/{LATEX_PDF[0]}"}
    for rel, spec in ((TEXTBOX[0], TEXTBOX), (f"pdf/{LATEX_PDF[0]}", LATEX_PDF)):
        assert docs[rel]["status"] == "converted"
        record = check_result(local_result(out / rel), spec)
        assert record["input"]["uri"] == f"s3://{bucket}/batch/{rel}"
    # the remote input was downloaded into staging for the worker and is gone afterwards
    assert not [p for p in (out / ".mineru-cli" / "staging").rglob("*") if p.is_file()]
    assert_no_secret(proc.stdout, proc.stderr, (tmp / "run.log").read_text(), (tmp / "r.json").read_text(),
                     *[p.read_text() for p in out.rglob(".mineru-cli.done.json")])


# --- the writability probe ----------------------------------------------------------------------------

def moto_process(log=subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """A moto S3 server of its own (a subprocess, so it can be killed or made to check
    credentials without touching the shared one) on a free loopback port, once it answers.
    Returns (process, endpoint); the caller stops it."""
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError("moto server did not start") from None
            time.sleep(0.1)


@contextlib.contextmanager
def moto_to_kill(tmp: Path, bucket: str):
    """A moto server process of its own, with ``bucket`` made, for a test that SIGKILLs it:
    yields ``(process, endpoint, env)``; ``env`` names the process in ``MOTO_PID`` and allows one
    attempt per request. The process is killed afterwards if the test left it running."""
    pytest.importorskip("moto.server")
    proc, endpoint = moto_process()
    try:
        import s3fs

        s3fs.S3FileSystem(key=S3_TEST_KEY, secret=S3_TEST_SECRET, client_kwargs={"endpoint_url": endpoint},
                          skip_instance_cache=True).mkdir(bucket)
        yield proc, endpoint, s3_env(tmp, MOTO_PID=str(proc.pid), AWS_MAX_ATTEMPTS="1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_with_own_user(tmp: Path, name: str, bucket: str, objects: dict[str, bytes] | None = None,
                       actions: list[str] | None = None):
    """A moto server process of its own that checks credentials: ``bucket`` with ``objects``, and
    IAM user ``name`` allowed ``actions`` (default every S3 action). Yields (endpoint, key, secret):
    credentials known to this server only (the test key of ``s3_env`` is not). The process is
    stopped afterwards; its log is ``tmp/moto-<name>.log``."""
    import urllib.request

    import boto3

    log = open(tmp / f"moto-{name}.log", "w")
    proc, endpoint = moto_process(log)
    try:
        kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_TEST_KEY,
                  aws_secret_access_key=S3_TEST_SECRET)
        client = boto3.client("s3", **kw)
        client.create_bucket(Bucket=bucket)
        for key, data in (objects or {}).items():
            client.put_object(Bucket=bucket, Key=key, Body=data)
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="s3-allowed", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions or ["s3:*"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        assert json.loads(urllib.request.urlopen(req, timeout=5).read())["status"] == "ok"
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory):
    """A second moto server (subprocess) that checks credentials: bucket ``locked-bucket`` and
    IAM user ``reader`` allowed only s3:GetObject/ListBucket. Yields (endpoint, reader key, reader secret)."""
    pytest.importorskip("moto.server")
    with moto_with_own_user(tmp_path_factory.mktemp("auth-moto"), "reader", "locked-bucket",
                            actions=["s3:GetObject", "s3:ListBucket"]) as server:
        yield server


@pytest.mark.parametrize("case", ["missing_bucket", "wrong_credentials", "not_allowed", "no_credentials",
                                  "unreachable", "not_answering"])
def test_probe_fails_before_the_batch_with_exit_3(case, s3, corpus, tmp_path, request):
    doc = corpus_doc(corpus, EQUATIONS)
    env = s3_env(tmp_path)
    endpoint, bucket = s3.endpoint, "mineru-out"
    s3.bucket(bucket)
    if case == "missing_bucket":
        bucket = "no-such-bucket-here"
        expect = "no such bucket"
    elif case in ("wrong_credentials", "not_allowed"):
        endpoint, reader_key, reader_secret = request.getfixturevalue("auth_s3")
        bucket = "locked-bucket"
        if case == "not_allowed":
            env.update(AWS_ACCESS_KEY_ID=reader_key, AWS_SECRET_ACCESS_KEY=reader_secret)
            expect = "access denied: these credentials may not write here"
        else:
            expect = "access denied: the access key is not known to the server (wrong credentials)"
    elif case == "no_credentials":
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        expect = "no credentials"
    elif case == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        expect = "endpoint unreachable"
    else:  # accepts connections (kernel backlog) and never answers: a hung server
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        request.addfinalizer(silent.close)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        expect = "endpoint not answering (read timed out)"
    started = time.time()
    proc = run_cli("convert", str(doc), "-o", f"s3://{bucket}/out", "--endpoint-url", endpoint,
                   "--report", str(tmp_path / "r.json"), env=env, timeout=120)
    elapsed = time.time() - started
    assert proc.returncode == 3, proc.stdout + proc.stderr
    line = one_line_error(proc)
    assert line.startswith(f"mineru-cli: error: output s3://{bucket}/out is not writable: bucket '{bucket}': {expect}"), line
    assert elapsed < 30, f"the probe took {elapsed:.1f} s"
    assert "converted" not in proc.stdout and not (tmp_path / "r.json").exists()
    assert_no_secret(proc.stdout, proc.stderr)
    if case == "not_allowed":
        assert env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr
    if case == "missing_bucket":  # --dry-run writes nothing but still fails on a missing bucket
        dry = run_cli("convert", str(doc), "-o", f"s3://{bucket}/out", "--endpoint-url", endpoint, "--dry-run",
                      env=env, timeout=120)
        assert dry.returncode == 3, dry.stdout + dry.stderr
        assert f"is not readable: bucket '{bucket}': no such bucket" in one_line_error(dry)


# --- clean ----------------------------------------------------------------------------------------------

def _age_record(read, write, days: float) -> None:
    record = json.loads(read())
    record["committed_at"] = time.time() - days * 86400
    write(json.dumps(record).encode())


def _copy_prefix(fs, src: str, dst: str) -> None:
    """Copy every object under ``src`` to the same place under ``dst`` (S3)."""
    for p in fs.find(src):
        fs.copy(p, dst + p[len(src):])


def _age_s3_record(fs, folder: str, days: float) -> None:
    """Make the done-record in the S3 result ``folder`` ``days`` old (see _age_record)."""
    path = f"{folder}/.mineru-cli.done.json"
    _age_record(lambda: fs.cat_file(path), lambda data: fs.pipe_file(path, data), days)


def test_clean_local(s3_to_local, tmp_path):
    """A copy of the s3 -> local output, aged and salted with things clean must leave alone."""
    assert s3_to_local["proc"].returncode == 0
    out = tmp_path / "out"
    shutil.copytree(s3_to_local["out"], out)
    old = time.time() - 10 * 86400
    a = out / TEXTBOX[0]                        # converted 10 days ago -> removed
    b = out / "pdf" / LATEX_PDF[0]              # converted now -> kept
    done = a / ".mineru-cli.done.json"
    _age_record(done.read_bytes, done.write_bytes, 10)
    (a / "my-notes.txt").write_text("the user's own file in a result folder")  # not listed: kept
    p_old = out / "partial-old.pdf"             # interrupted commit, marker 10 days old -> removed
    (p_old / "images").mkdir(parents=True)
    (p_old / "partial-old.md").write_text("half")
    (p_old / "images" / "page_0_x.jpg").write_bytes(b"\xff\xd8jpg")
    (p_old / ".mineru-cli.pending").write_bytes(b"")
    p_new = out / "partial-new.pdf"             # marker fresh (a run may be committing) -> kept
    p_new.mkdir()
    (p_new / "partial-new.md").write_text("half")
    (p_new / ".mineru-cli.pending").write_bytes(b"")
    user = out / "user-folder"                  # no marker, no done-record: not ours -> kept
    user.mkdir()
    (user / "report.md").write_text("mine")
    staged_old = out / ".mineru-cli" / "staging" / "0123456789abcdef"   # old staging -> removed
    staged_old.mkdir(parents=True)
    (staged_old / "x.md").write_text("staged")
    not_staging = out / ".mineru-cli" / "staging" / "not-a-staging-id"  # not ours -> kept
    not_staging.mkdir()
    (not_staging / "keep.txt").write_text("keep")
    probe = out / ".mineru-cli-probe-1-1"       # leftover write probe -> removed
    probe.write_bytes(b"probe")
    for p in [*p_old.rglob("*"), p_old / ".mineru-cli.pending", *user.rglob("*"), *staged_old.rglob("*"),
              staged_old, *not_staging.rglob("*"), probe]:
        os.utime(p, (old, old))
    removed = {p.relative_to(out).as_posix() for p in a.rglob("*") if p.is_file() and p.name != "my-notes.txt"}
    removed |= {p.relative_to(out).as_posix() for p in p_old.rglob("*") if p.is_file()}
    removed |= {".mineru-cli/staging/0123456789abcdef/x.md", ".mineru-cli-probe-1-1"}
    before = snapshot_local(out)
    freed = sum(before[r] for r in removed)
    env = s3_env(tmp_path)

    dry = run_cli("clean", str(out), "--older-than", "7d", "--dry-run", env=env, timeout=60)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert snapshot_local(out) == before  # nothing removed
    would = [l for l in dry.stdout.splitlines() if l.startswith("would remove")]
    assert len(would) == 4, dry.stdout
    n_a = len(json.loads(done.read_text())["files"]) + 1
    assert f"would remove  {out}/{TEXTBOX[0]}/  (converted 10.0 days ago; {n_a} files" in dry.stdout
    assert f"{out}/partial-old.pdf/  (partial result without done-record" in dry.stdout
    assert f"and free {freed:,} bytes" in dry.stdout and "nothing was removed" in dry.stdout

    # a convert run holding OUTPUT's lock: clean refuses (exit 4) and removes nothing
    from mineru_cli.store import RunLock

    lock = RunLock(str(out / ".mineru-cli"))
    assert lock.acquire()
    try:
        locked = run_cli("clean", str(out), "--older-than", "7d", env=env, timeout=60)
    finally:
        lock.release()
    assert locked.returncode == 4, locked.stdout + locked.stderr
    assert "is writing to" in one_line_error(locked)
    assert snapshot_local(out) == before

    real = run_cli("clean", str(out), "--older-than", "7d", env=env, timeout=60)
    assert real.returncode == 0, real.stdout + real.stderr
    after = snapshot_local(out)
    assert set(after) == set(before) - removed
    assert (a / "my-notes.txt").is_file() and not (a / f"{Path(TEXTBOX[0]).stem}.md").exists()
    assert not p_old.exists() and not staged_old.exists()
    assert (b / ".mineru-cli.done.json").is_file() and (p_new / ".mineru-cli.pending").is_file()
    assert (user / "report.md").is_file() and (not_staging / "keep.txt").is_file()
    assert f"freed {freed:,} bytes" in real.stdout and "removed 4 results (1 converted, 1 partial, 1 staged, 1 probe)" in real.stdout

    # usage errors: exit 2
    bad = run_cli("clean", str(out), "--older-than", "7 days please", env=env, timeout=60)
    assert bad.returncode == 2 and "--older-than" in one_line_error(bad)
    missing = run_cli("clean", str(tmp_path / "nope"), "--older-than", "7d", env=env, timeout=60)
    assert missing.returncode == 2 and "not found" in one_line_error(missing)


def test_clean_s3(s3, s3_to_s3, tmp_path):
    """A copy of the s3 -> s3 output: one result aged 10 days, a fresh partial result and the
    user's own objects. ``AWS_ENDPOINT_URL`` instead of --endpoint-url."""
    assert s3_to_s3["first"].returncode == 0
    fs = s3.fs()
    bucket = s3_to_s3["bucket"]
    src, dst = f"{bucket}/data/converted", f"{bucket}/clean-copy"
    _copy_prefix(fs, src, dst)
    a, b = f"{dst}/{EQUATIONS[0]}", f"{dst}/sub/{CODE_PDF[0]}"
    _age_s3_record(fs, a, 10)
    fs.pipe_file(f"{a}/my-notes.txt", b"user file in a result folder")
    fs.pipe_file(f"{dst}/partial.pdf/partial.md", b"half")
    fs.pipe_file(f"{dst}/partial.pdf/.mineru-cli.pending", b"")
    fs.pipe_file(f"{dst}/user/readme.md", b"not ours")

    index = f"{dst}/.mineru-cli/index.sqlite"  # the done-record index, copied with the results

    def listing() -> dict[str, int]:
        return {p: info["size"] for p, info in fs.find(dst, detail=True).items() if p != index}

    before = listing()
    a_files = {p for p in before if p.startswith(a + "/") and not p.endswith("my-notes.txt")}
    env = s3_env(tmp_path, AWS_ENDPOINT_URL=s3.endpoint)
    url = f"s3://{dst}"

    dry = run_cli("clean", url, "--older-than", "7d", "--dry-run", env=env, timeout=60)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert listing() == before
    assert [l.split("  ")[1] for l in dry.stdout.splitlines() if l.startswith("would remove")] == [f"s3://{a}/"]

    real = run_cli("clean", url, "--older-than", "7d", env=env, timeout=60)
    assert real.returncode == 0, real.stdout + real.stderr
    after = listing()
    assert set(after) == set(before) - a_files
    assert f"freed {sum(before[p] for p in a_files):,} bytes" in real.stdout

    # everything older than 0 s: the recent result and the partial one; the user's objects stay
    everything = run_cli("clean", url, "--older-than", "0s", env=env, timeout=60)
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert "removed 2 results (1 converted, 1 partial)" in everything.stdout
    assert set(listing()) == {f"{a}/my-notes.txt", f"{dst}/user/readme.md"}
    assert not fs.exists(f"{b}/.mineru-cli.done.json")
    assert fs.exists(index)  # left alone: its entries of removed results no longer match a done-record

    nobucket = run_cli("clean", "s3://no-such-bucket-here/x", "--older-than", "7d", env=env, timeout=60)
    assert nobucket.returncode == 3 and "no such bucket" in one_line_error(nobucket)
    assert_no_secret(dry.stdout, real.stdout, everything.stdout, dry.stderr, real.stderr, nobucket.stderr)


# --- reading many done-records (a rerun over S3, clean) ----------------------------------------------

def test_done_records_are_read_concurrently_and_names_with_glob_characters_work(s3, monkeypatch):
    """``records.read_done_records`` against the moto server: every record comes back under its
    key, names with ``[`` (fsspec would expand them as a glob in ``fs.cat(list)``) included;
    a missing, a malformed and a non-object record read as None; the reads overlap (a rerun
    over S3 used to pay one round trip per document, one after the other)."""
    import threading

    from mineru_cli.records import DONE_NAME, read_done_records
    from mineru_cli.store import open_output

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bucket = s3.bucket("mineru-records")
    fs = s3.fs()
    keys = [f"d{i:02d}.csv" for i in range(24)] + ["a[1].csv", "sub/b[x]y.pdf", "c d*.html"]
    for k in keys:
        fs.pipe_file(f"{bucket}/out/{k}/{DONE_NAME}", json.dumps({"input": {"rel": k}}).encode())
    fs.pipe_file(f"{bucket}/out/broken.csv/{DONE_NAME}", b"{not json")
    fs.pipe_file(f"{bucket}/out/list.csv/{DONE_NAME}", b"[1, 2]")
    out = open_output(f"s3://{bucket}/out", endpoint_url=s3.endpoint,
                      storage_options={"key": S3_TEST_KEY, "secret": S3_TEST_SECRET})
    assert not out.is_local

    real_cat, lock = out.fs.cat_file, threading.Lock()
    inflight, peak = [0], [0]

    def counting_cat(path, *args, **kwargs):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        try:
            time.sleep(0.05)  # a round trip's worth: lets overlapping reads show
            return real_cat(path, *args, **kwargs)
        finally:
            with lock:
                inflight[0] -= 1

    monkeypatch.setattr(out.fs, "cat_file", counting_cat)
    records = read_done_records(out, [*keys, "broken.csv", "list.csv", "never-converted.csv"])
    assert {k: (r or {}).get("input", {}).get("rel") for k, r in records.items() if r} == {k: k for k in keys}
    assert records["broken.csv"] is None and records["list.csv"] is None and records["never-converted.csv"] is None
    assert peak[0] >= 4, f"at most {peak[0]} reads in flight"


def test_clean_s3_reads_records_of_names_with_glob_characters(s3, s3_to_s3, tmp_path):
    """A result named ``draft[1].docx``, 10 days old, with the user's own file in its folder:
    clean removes the files its done-record lists and keeps the user's file. (When the
    record read as missing, clean took it for an unreadable done-record and removed every
    plain file in the folder.)"""
    assert s3_to_s3["first"].returncode == 0
    fs = s3.fs()
    bucket = s3_to_s3["bucket"]
    src, dst = f"{bucket}/data/converted/{EQUATIONS[0]}", f"{bucket}/clean-glob/draft[1].docx"
    _copy_prefix(fs, src, dst)
    _age_s3_record(fs, dst, 10)
    fs.pipe_file(f"{dst}/my-notes.txt", b"user file in a result folder")
    env = s3_env(tmp_path)
    url = f"s3://{bucket}/clean-glob"
    dry = run_cli("clean", url, "--older-than", "7d", "--dry-run", "--endpoint-url", s3.endpoint, env=env, timeout=60)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    line = next(l for l in dry.stdout.splitlines() if l.startswith("would remove"))
    assert f"s3://{dst}/" in line and "unreadable done-record" not in line, line
    real = run_cli("clean", url, "--older-than", "7d", "--endpoint-url", s3.endpoint, env=env, timeout=60)
    assert real.returncode == 0, real.stdout + real.stderr
    assert [p[len(dst) + 1:] for p in fs.find(f"{bucket}/clean-glob")] == ["my-notes.txt"]


# Runs convert (conftest.run_convert_watched) and prints which objects s3fs read (every read of an object's
# bytes goes through S3FileSystem._cat_file), so the test sees what a rerun downloads.
READS_SCRIPT = r'''
import json, sys
import s3fs
reads = []
_orig = s3fs.S3FileSystem._cat_file
async def _counting(self, path, *args, **kwargs):
    reads.append(path)
    return await _orig(self, path, *args, **kwargs)
s3fs.S3FileSystem._cat_file = _counting
from mineru_cli.convert import run_convert
from mineru_cli.settings import load_settings
code = run_convert(load_settings(json.loads(sys.argv[1])))
print("WATCHED " + json.dumps(sorted(reads)))
sys.exit(code)
'''


def test_rerun_over_s3_inputs_reads_only_what_it_must_convert(s3, tmp_path):
    """s3 -> local, four documents. A rerun reads none of the finished, unchanged input objects
    (their type comes from the done-record: same size and ETag); before, discovery downloaded
    every object up to 8 MiB on every run. A changed object is read and converted again; a
    settings change that needs a PDF's page count (``--pages``) reads that PDF then."""
    mk = load_make_examples()
    bucket = s3.bucket("mineru-reread")
    src = tmp_path / "src"
    src.mkdir()
    mk.write_csv(src / "scores.csv", [["id", "score"], [1, 90], [2, 75]])
    mk.write_html(src / "page.html", "Page", "Opening hours", ["Open daily from nine."])
    mk.write_text_pdf(src / "three.pdf", mk.numbered_pages(3), title="Three pages")
    mk.write_docx(src / "memo.docx", "Memo", ["The memo text."], [["a", "b"], ["1", "2"]])
    fs = s3.fs()
    for p in sorted(src.iterdir()):
        fs.put_file(str(p), f"{bucket}/in/{p.name}")
    env = s3_env(tmp_path)
    out = tmp_path / "out"
    url = f"s3://{bucket}/in"
    first = run_cli("convert", url, "-o", str(out), "--endpoint-url", s3.endpoint, env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 converted" in first.stdout

    def dry_rerun(name: str, **flags) -> tuple[list[str], dict]:
        settings = {"inputs": [url], "output": str(out), "endpoint_url": s3.endpoint, "dry_run": True, **flags}
        return run_convert_watched(READS_SCRIPT, settings, tmp_path / f"{name}.json", env)

    reads, docs = dry_rerun("unchanged")
    assert reads == []
    assert {k: (d["status"], d["code"]) for k, d in docs.items()} == {
        k: ("skipped", "done") for k in ("memo.docx", "page.html", "scores.csv", "three.pdf")}

    mk.write_csv(src / "scores.csv", [["id", "score"], [1, 90], [2, 75], [3, 60]])
    fs.put_file(str(src / "scores.csv"), f"{bucket}/in/scores.csv")
    reads, docs = dry_rerun("changed")
    assert reads == [f"{bucket}/in/scores.csv"]
    assert docs["scores.csv"]["status"] == "pending" and docs["scores.csv"]["reason"] == "input changed"
    assert [k for k, d in docs.items() if d["status"] == "skipped"] == ["memo.docx", "page.html", "three.pdf"]

    reads, docs = dry_rerun("pages", pages="1-2")
    assert reads == [f"{bucket}/in/scores.csv", f"{bucket}/in/three.pdf"]
    assert docs["three.pdf"]["status"] == "pending" and docs["three.pdf"]["pages"] == 2  # of 3: --pages 1-2
    assert docs["three.pdf"]["reason"] == "output-affecting settings changed"
    assert docs["memo.docx"]["code"] == docs["page.html"]["code"] == "done"

    second = run_cli("convert", url, "-o", str(out), "--endpoint-url", s3.endpoint, "--report",
                     str(tmp_path / "second.json"), env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    docs = by_input(load_report(tmp_path / "second.json"))
    assert docs["scores.csv"]["status"] == "converted"
    assert "| 3 | 60 |" in (out / "scores.csv" / "scores.md").read_text().replace("  ", " ")
    assert [k for k, d in docs.items() if d["status"] == "skipped"] == ["memo.docx", "page.html", "three.pdf"]


# Runs convert (conftest.run_convert_watched) and prints what s3fs wrote or deleted (objects
# written through _pipe_file or _put_file, deleted through _rm_file or _rm).
WRITES_SCRIPT = r'''
import json, sys
import s3fs
writes = []
def counting(name):
    orig = getattr(s3fs.S3FileSystem, name)
    async def wrapper(self, path, *args, **kwargs):
        writes.append(f"{name} {path}")
        return await orig(self, path, *args, **kwargs)
    setattr(s3fs.S3FileSystem, name, wrapper)
for name in ("_pipe_file", "_put_file", "_rm_file", "_rm"):
    counting(name)
from mineru_cli.convert import run_convert
from mineru_cli.settings import load_settings
code = run_convert(load_settings(json.loads(sys.argv[1])))
print("WATCHED " + json.dumps(writes))
sys.exit(code)
'''


def test_rerun_over_a_finished_s3_output_writes_nothing(s3, tmp_path):
    """local -> s3. A rerun with every document done sends no write or delete to OUTPUT, not
    even the writability probe (it was a PUT and a DELETE on every run, and made a rerun over
    a read-only OUTPUT fail). A run with a new document probes, then writes its result."""
    mk = load_make_examples()
    bucket = s3.bucket("mineru-rerun-writes")
    src = tmp_path / "src"
    src.mkdir()
    mk.write_csv(src / "scores.csv", [["id", "score"], [1, 90]])
    mk.write_html(src / "page.html", "Page", "Opening hours", ["Open daily from nine."])
    env = s3_env(tmp_path)
    url = f"s3://{bucket}/out"
    settings = {"inputs": [str(src)], "output": url, "endpoint_url": s3.endpoint}
    writes, docs = run_convert_watched(WRITES_SCRIPT, settings, tmp_path / "first.json", env)
    assert {k: d["status"] for k, d in docs.items()} == {"page.html": "converted", "scores.csv": "converted"}
    assert any("/.mineru-cli-probe-" in w for w in writes), writes

    writes, docs = run_convert_watched(WRITES_SCRIPT, settings, tmp_path / "rerun.json", env)
    assert writes == []
    assert {k: d["code"] for k, d in docs.items()} == {"page.html": "done", "scores.csv": "done"}

    mk.write_csv(src / "new.csv", [["id"], [7]])
    writes, docs = run_convert_watched(WRITES_SCRIPT, settings, tmp_path / "new.json", env)
    assert docs["new.csv"]["status"] == "converted" and docs["scores.csv"]["code"] == "done"
    assert writes[0].startswith(f"_pipe_file {bucket}/out/.mineru-cli-probe-"), writes
    assert f"_pipe_file {bucket}/out/new.csv/.mineru-cli.done.json" in writes, writes
    assert not any("scores.csv" in w or "page.html" in w for w in writes), writes


def test_local_name_that_is_not_utf8_fails_alone_on_s3_output(s3, tmp_path):
    """A local file whose name is not valid UTF-8 cannot name an S3 object (keys are UTF-8):
    that document fails with one line naming it and why, code ``bad_name``; the other one is
    uploaded, and its rerun skips it. Before, the whole run stopped with exit 3 while reading
    the done-records ("cannot read the done-records: ... UnicodeEncodeError")."""
    bucket = s3.bucket("mineru-badname")
    src = tmp_path / "src"
    src.mkdir()
    with open(os.path.join(os.fsencode(src), b"caf\xe9.csv"), "wb") as fh:
        fh.write(b"name,price\ncoffee,3\n")
    (src / "ok.csv").write_text("name,price\ntea,2\n")
    env = s3_env(tmp_path)
    url = f"s3://{bucket}/out"
    for attempt in ("first", "rerun"):
        proc = run_cli("convert", str(src), "-o", url, "--endpoint-url", s3.endpoint, "--report",
                       str(tmp_path / f"{attempt}.json"), env=env, timeout=300)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        docs = by_input(load_report(tmp_path / f"{attempt}.json"))
        bad = docs["caf\udce9.csv"]
        assert (bad["status"], bad["code"]) == ("failed", "bad_name")
        assert ("failed     caf\\udce9.csv: file name is not valid UTF-8, so it cannot name an object in the "
                "remote OUTPUT; rename it (for example with convmv)") in proc.stdout
        assert docs["ok.csv"]["status"] == ("converted" if attempt == "first" else "skipped")
    assert sorted(p.rsplit("/", 1)[1] for p in s3.fs().find(f"{bucket}/out")) == [
        ".mineru-cli.done.json", "index.sqlite", "ok.md", "ok_content_list.json", "ok_middle.json"]


KILL_AT_LISTING_SCRIPT = r'''
import os, signal
from mineru_cli import records
_list = records.OutputListing._run
def list_after_kill(self, page_size):
    os.kill(int(os.environ["MOTO_PID"]), signal.SIGKILL)  # the OUTPUT's server dies before it is listed
    return _list(self, page_size)
records.OutputListing._run = list_after_kill
from mineru_cli.cli import main
main()
'''


def test_output_lost_while_listing_done_records_is_one_line_exit_3(corpus, tmp_path):
    """A rerun over an S3 OUTPUT lists it to learn which done-records are there (and whether
    finished results are whole); the server dies just before (a real moto server process,
    SIGKILLed): one line naming the output and the cause, exit 3, no traceback. (It was a raw
    traceback and exit 1, which means "documents failed".)"""
    with moto_to_kill(tmp_path, "lost-listing") as (proc, endpoint, env):
        doc = corpus_doc(corpus, EQUATIONS)
        args = ["convert", str(doc), "-o", "s3://lost-listing/r", "--endpoint-url", endpoint, "--retries", "0"]
        first = run_cli(*args, env=env, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        done = subprocess.run([sys.executable, "-c", KILL_AT_LISTING_SCRIPT, *args],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.wait(timeout=10) == -9
        assert done.returncode == 3, done.stdout + done.stderr
        line = one_line_error(done)
        assert "s3://lost-listing/r: cannot read the done-records" in line and "Traceback" not in done.stderr, line


def test_read_probe_tells_whether_output_holds_anything(s3, tmp_path, monkeypatch):
    """``probe_writable(write=False)`` says whether OUTPUT holds nothing yet (then convert
    writes its probe at once: a first run with read-only credentials fails before reading
    any done-record or input). On S3 the listing is of ``OUTPUT/``: ``out`` is not fooled by a
    sibling ``outside/``."""
    from mineru_cli.store import open_output, probe_writable

    assert probe_writable(open_output(str(tmp_path / "missing")), write=False) is True
    (tmp_path / "empty").mkdir()
    assert probe_writable(open_output(str(tmp_path / "empty")), write=False) is True
    (tmp_path / "empty" / "a.csv").mkdir()
    assert probe_writable(open_output(str(tmp_path / "empty")), write=False) is False

    for k, v in s3_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    bucket = s3.bucket("mineru-read-probe")
    out = open_output(f"s3://{bucket}/out", endpoint_url=s3.endpoint)
    assert probe_writable(out, write=False) is True
    s3.fs().pipe_file(f"{bucket}/outside/a.md", b"x")
    assert probe_writable(out, write=False) is True
    s3.fs().pipe_file(f"{bucket}/out/a.csv/a.md", b"x")
    assert probe_writable(out, write=False) is False
    assert probe_writable(out, write=True) is False
    assert s3.fs().find(f"{bucket}/out") == [f"{bucket}/out/a.csv/a.md"]  # the probe object is gone


# --- inputs and OUTPUT on two S3 servers (issue 19) -----------------------------------------------

def test_s3_input_and_s3_output_on_two_servers_with_their_own_credentials(tmp_path):
    """Inputs on one S3 server, OUTPUT on another, each server knowing only its own credentials
    (two moto server processes that check them; the environment's test key is known to neither):
    ``--input-endpoint-url``/``--input-storage-option`` reach the inputs and
    ``--output-endpoint-url``/``--output-storage-option`` OUTPUT, so the document converts. With the
    inputs' credentials for both sides (``--storage-option``) OUTPUT refuses them: exit 3 before the
    batch. Neither secret appears in the output, the log file, the report or the done-record."""
    pytest.importorskip("moto.server")
    import boto3

    mk = load_make_examples()
    mk.write_csv(tmp_path / "scores.csv", [["id", "score"], [1, 90], [2, 75]])
    objects = {"inbox/scores.csv": (tmp_path / "scores.csv").read_bytes()}
    env = s3_env(tmp_path)
    with moto_with_own_user(tmp_path, "reader", "in-docs", objects) as (in_ep, in_key, in_secret), \
            moto_with_own_user(tmp_path, "writer", "out-results") as (out_ep, out_key, out_secret):
        assert in_ep != out_ep and in_secret != out_secret
        sides = ["--input-endpoint-url", in_ep, "--input-storage-option", f"key={in_key}",
                 "--input-storage-option", f"secret={in_secret}", "--output-endpoint-url", out_ep]
        log_file, report = tmp_path / "run.log", tmp_path / "report.json"
        done = run_cli("convert", "s3://in-docs/inbox", "-o", "s3://out-results/md", *sides,
                       "--output-storage-option", f"key={out_key}", "--output-storage-option", f"secret={out_secret}",
                       "--log-file", str(log_file), "--report", str(report), "-v", env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        doc = by_input(load_report(report))["scores.csv"]
        assert (doc["status"], doc["output"]) == ("converted", "s3://out-results/md/scores.csv/")
        out_s3 = boto3.client("s3", endpoint_url=out_ep, region_name="us-east-1", aws_access_key_id=out_key,
                              aws_secret_access_key=out_secret)
        listed = out_s3.list_objects_v2(Bucket="out-results", Prefix="md/")
        assert sorted(o["Key"] for o in listed["Contents"]) == [
            "md/.mineru-cli/index.sqlite", "md/scores.csv/.mineru-cli.done.json", "md/scores.csv/scores.md", "md/scores.csv/scores_content_list.json",
            "md/scores.csv/scores_middle.json"]
        markdown = out_s3.get_object(Bucket="out-results", Key="md/scores.csv/scores.md")["Body"].read().decode()
        assert "| 2 | 75 |" in markdown.replace("  ", " ")
        record = out_s3.get_object(Bucket="out-results", Key="md/scores.csv/.mineru-cli.done.json")["Body"].read()
        assert json.loads(record)["input"]["uri"] == "s3://in-docs/inbox/scores.csv"
        seen = done.stdout + done.stderr + log_file.read_text() + report.read_text() + record.decode()
        for secret in (in_secret, out_secret):
            assert secret not in seen
        assert "***" in done.stdout + done.stderr + log_file.read_text()  # the options were shown, redacted

        refused = run_cli("convert", "s3://in-docs/inbox", "-o", "s3://out-results/again", "--input-endpoint-url",
                          in_ep, "--output-endpoint-url", out_ep, "--storage-option", f"key={in_key}",
                          "--storage-option", f"secret={in_secret}", env=env, timeout=300)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        line = one_line_error(refused)
        assert "s3://out-results/again is not writable" in line and "access key is not known to the server" in line
        assert in_secret not in refused.stdout + refused.stderr


def test_commit_into_a_result_folder_known_empty_looks_for_no_old_result(s3, s3_proxy, tmp_path):
    """A remote OUTPUT listed by the run (or empty) tells which result folders hold nothing: their
    commits skip the DELETE of an old done-record and the listing of the folder (8 requests a
    document instead of 10 on the first run; on moto each folder listing scans the whole bucket).
    A folder that holds a partial result (a pending marker and a stale file, no done-record) is
    not fresh: its commit still removes the stale file."""
    mk = load_make_examples()
    bucket = s3.bucket("mineru-fresh")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        mk.write_csv(src / f"t{i}.csv", [["id", "v"], [i, i * 3]])
    env = s3_env(tmp_path)
    url = f"s3://{bucket}/out"
    args = ["convert", str(src), "-o", url, "--endpoint-url", s3_proxy.endpoint]
    first = run_cli(*args, "--report", str(tmp_path / "first.json"), env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    folder_lists = [r for r in s3_proxy.requests("ListObjectsV2") if r.query.get("prefix", "").count("/") >= 2]
    assert folder_lists == []  # no listing of out/<doc>/ (the old code listed each result folder)
    deletes = [r.path for r in s3_proxy.requests("DeleteObject") if "/.mineru-cli-probe-" not in r.path]
    assert sorted(deletes) == sorted(f"/{bucket}/out/t{i}.csv/.mineru-cli.pending" for i in range(4))

    fs = s3.fs()
    fs.pipe_file(f"{bucket}/out/t9.csv/.mineru-cli.pending", b"")  # a commit killed half-way, earlier
    fs.pipe_file(f"{bucket}/out/t9.csv/stale.md", b"from a killed run")
    mk.write_csv(src / "t9.csv", [["id"], [9]])
    s3_proxy.reset()
    again = run_cli(*args, "--report", str(tmp_path / "again.json"), env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {k: d["status"] for k, d in by_input(load_report(tmp_path / "again.json")).items()} == {
        **{f"t{i}.csv": "skipped" for i in range(4)}, "t9.csv": "converted"}
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/t9.csv")) == [
        ".mineru-cli.done.json", "t9.md", "t9_content_list.json", "t9_middle.json"]
    assert [r.query.get("prefix") for r in s3_proxy.requests("ListObjectsV2")
            if r.query.get("prefix", "").count("/") >= 2] == ["out/t9.csv/"]
