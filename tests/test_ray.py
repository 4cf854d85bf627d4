"""Issue 7: the same convert on a real local Ray cluster (loopback only).

A head node is started with ``ray start --head --node-ip-address 127.0.0.1`` (2 CPUs), the
CLI connects by address, and the cluster is stopped at the end. See
shared/notes/ray-and-s3-in-tests.md for why RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on
127.0.0.1.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, by_input, cli_env, load_report, run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mineru-cli[ray]')")

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real head node on 127.0.0.1 with 2 CPUs; its workers' TMPDIR is ``tmp``."""
    tmp = tmp_path_factory.mktemp("raytmp")
    port = _free_port()
    env = dict(os.environ, **RAY_ENV, TMPDIR=str(tmp), MINERU_MODEL_SOURCE="local")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    start = subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                            "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield {"address": f"127.0.0.1:{port}", "tmp": tmp}
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _inputs(tmp: Path, corpus: Path) -> Path:
    src = tmp / "in"
    (src / "docs").mkdir(parents=True)
    for name in ("report.pdf", "memo.docx", "budget.xlsx", "page.html", "data.csv"):
        shutil.copy(EXAMPLES / name, src / "docs" / name)
    shutil.copy(corpus / "pdf" / "normal" / "mineru_unittest_table_formula.pdf", src / "table.pdf")
    shutil.copy(corpus / "office" / "docling_textbox.docx", src / "textbox.docx")
    (src / "zero.pdf").write_bytes(b"")
    shutil.copy(corpus / "pdf" / "broken" / "pdfplumber_password_example_userpw_test.pdf", src / "locked.pdf")
    sys.path.insert(0, str(EXAMPLES))
    from make_examples import numbered_pages, write_text_pdf

    write_text_pdf(str(src / "long.pdf"), numbered_pages(30), footer="Page {n}")
    return src


def _summary(report: dict) -> dict:
    return {k: (d["status"], d["code"], d["pages"]) for k, d in by_input(report).items()}


def _files(out: Path) -> dict[str, str]:
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not rel.startswith(".mineru-cli") and not p.name.startswith(".mineru-cli"):
            files[rel] = p.read_text(encoding="utf-8") if p.suffix == ".md" else ""
    return files


def test_ray_matches_local(ray_cluster, corpus, tmp_path):
    src = _inputs(tmp_path, corpus)
    out_l, out_r = tmp_path / "local", tmp_path / "ray"
    rl = run_cli("convert", str(src), "-o", str(out_l), "--report", str(tmp_path / "l.json"), "--window-pages", "10",
                 "--workers", "2", env=cli_env(tmp_path))
    rr = run_cli("convert", str(src), "-o", str(out_r), "--report", str(tmp_path / "r.json"), "--window-pages", "10",
                 "--workers", "2", "--executor", "ray", "--ray-address", ray_cluster["address"],
                 env=cli_env(tmp_path, **RAY_ENV))
    assert rl.returncode == rr.returncode == 1, rr.stdout + rr.stderr
    local, remote = load_report(tmp_path / "l.json"), load_report(tmp_path / "r.json")
    assert _summary(remote) == _summary(local)
    assert _summary(remote)["long.pdf"] == ("converted", None, 30)
    assert _summary(remote)["locked.pdf"][:2] == ("failed", "encrypted")
    assert by_input(remote)["zero.pdf"]["reason"] == by_input(local)["zero.pdf"]["reason"]
    assert _files(out_r) == _files(out_l)
    record = json.loads((out_r / "long.pdf" / ".mineru-cli.done.json").read_text())
    assert record["pages"] == 30 and len(record["windows"]) == 3
    cl = json.loads((out_r / "long.pdf" / "long_content_list.json").read_text())
    assert sorted({b["page_idx"] for b in cl}) == list(range(30))
    # rerun through Ray: everything done is skipped
    rr2 = run_cli("convert", str(src), "-o", str(out_r), "--report", str(tmp_path / "r2.json"),
                  "--executor", "ray", "--ray-address", ray_cluster["address"], env=cli_env(tmp_path, **RAY_ENV))
    docs2 = by_input(load_report(tmp_path / "r2.json"))
    assert {k for k, d in docs2.items() if d["code"] == "done"} == {k for k, d in by_input(remote).items() if d["status"] == "converted"}


def test_ray_worker_killed_fails_or_retries_only_its_document(ray_cluster, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("memo.docx", "budget.xlsx", "data.csv"):
        shutil.copy(EXAMPLES / name, src / name)
    shutil.copy(EXAMPLES / "page.html", src / "slow-page.html")
    once = tmp_path / "held-once"
    env = cli_env(tmp_path, **RAY_ENV)
    # the hold must reach the Ray workers: they take their environment from the driver's job
    env.update(MINERU_CLI_TEST_HOLD="slow-page", MINERU_CLI_TEST_HOLD_ONCE=str(once), MINERU_CLI_TEST_HOLD_SECONDS="300")
    proc = subprocess.Popen([sys.executable, "-m", "mineru_cli", "convert", str(src), "-o", str(tmp_path / "o"),
                             "--report", str(tmp_path / "r.json"), "--executor", "ray", "--ray-address",
                             ray_cluster["address"], "--retries", "1"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not once.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert once.exists(), "the held document never started"
        pid = int(once.read_text())
        os.kill(pid, signal.SIGKILL)  # the Ray worker process holding slow-page.html
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    docs = by_input(load_report(tmp_path / "r.json"))
    assert all(d["status"] == "converted" for d in docs.values()), docs
    attempts = docs["slow-page.html"]["attempts"]
    assert [a["status"] for a in attempts] == ["retrying", "ok"], attempts
    assert attempts[0]["code"] == "worker_killed" and "Ray worker lost" in attempts[0]["reason"]
    for name in ("memo.docx", "budget.xlsx", "data.csv"):
        assert [a["status"] for a in docs[name]["attempts"]] == ["ok"]


def test_ray_to_s3_matches_local(ray_cluster, s3_server, corpus, tmp_path):
    """Ray workers commit straight to S3 (moto on 127.0.0.1): same report and same files as
    --executor local writing to another prefix of the same bucket."""
    from conftest import S3_TEST_KEY, S3_TEST_SECRET

    if not s3_server.running:
        s3_server.start()
    src = _inputs(tmp_path, corpus)
    bucket = s3_server.bucket("mineru-ray")
    env = cli_env(tmp_path, **RAY_ENV, AWS_ACCESS_KEY_ID=S3_TEST_KEY, AWS_SECRET_ACCESS_KEY=S3_TEST_SECRET,
                  AWS_DEFAULT_REGION="us-east-1")
    common = ["--endpoint-url", s3_server.endpoint, "--window-pages", "10", "--workers", "2"]
    rl = run_cli("convert", str(src), "-o", f"s3://{bucket}/local", "--report", str(tmp_path / "l.json"), *common, env=env)
    rr = run_cli("convert", str(src), "-o", f"s3://{bucket}/ray", "--report", str(tmp_path / "r.json"), *common,
                 "--executor", "ray", "--ray-address", ray_cluster["address"], env=env)
    assert rl.returncode == rr.returncode == 1, rr.stdout + rr.stderr
    assert _summary(load_report(tmp_path / "r.json")) == _summary(load_report(tmp_path / "l.json"))
    fs = s3_server.fs()

    def listing(prefix: str) -> dict[str, str]:
        out = {}
        for path in fs.find(f"{bucket}/{prefix}"):
            rel = path[len(f"{bucket}/{prefix}/"):]
            if rel.startswith(".mineru-cli/") or rel.endswith("/.mineru-cli.done.json"):
                continue
            out[rel] = fs.cat_file(path).decode("utf-8") if rel.endswith(".md") else ""
        return out

    local_files, ray_files = listing("local"), listing("ray")
    assert ray_files == local_files and "long.pdf/long.md" in ray_files
    assert "This is page 30 of 30." in ray_files["long.pdf/long.md"]
    record = json.loads(fs.cat_file(f"{bucket}/ray/long.pdf/.mineru-cli.done.json"))
    assert record["pages"] == 30 and record["attempts"][-1]["status"] == "ok"
    # nothing left parked for the merge
    assert not [p for p in fs.find(f"{bucket}/ray/.mineru-cli/windows")]
    secret_hits = [p for p in (tmp_path / "r.json", ) if S3_TEST_SECRET in p.read_text()]
    assert not secret_hits and S3_TEST_SECRET not in rr.stdout + rr.stderr
