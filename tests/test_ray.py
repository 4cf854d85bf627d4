"""Issue 7: the same convert on a real local Ray cluster (loopback only); issue 16: token
authentication, and a cluster that is the tests' own.

A head node is started with ``ray start --head --node-ip-address 127.0.0.1`` (2 CPUs), the
CLI connects by address, and the cluster is stopped at the end. See
shared/notes/ray-and-s3-in-tests.md for why RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on
127.0.0.1.

The cluster reads nothing from and leaves nothing in the user's home folder: the head and
every CLI run get a HOME, a Ray temp dir (``--temp-dir``) and a token of their own, with token
authentication on (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``: Ray 2.60's variables). The
test HOME holds a stale ``~/.ray/auth_token`` from "another cluster", as a machine that ran Ray
before may: ``RAY_AUTH_TOKEN`` wins over it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, by_input, cli_env, load_report, run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mineru-cli[ray]')")

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_head(tmp: Path, home: Path, **auth: str) -> tuple[str, str, dict]:
    """``ray start --head`` on 127.0.0.1 (2 CPUs) with HOME ``home``, the workers' TMPDIR
    ``tmp`` and the authentication variables ``auth``; returns (address, Ray temp dir, env)."""
    # Ray's session folder holds Unix sockets: keep its path short (108 bytes at most)
    ray_tmp = tempfile.mkdtemp(prefix="mcray-", dir="/tmp")
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    head_env = dict(base, **RAY_ENV, TMPDIR=str(tmp), HOME=str(home), MINERU_MODEL_SOURCE="local", **auth)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    start = subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                            "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                            "--temp-dir", ray_tmp],
                           env=head_env, capture_output=True, text=True, timeout=180)
    if start.returncode != 0:
        _stop_cluster(ray_tmp)
        pytest.fail(f"ray start failed: {start.stdout}{start.stderr}")
    return f"127.0.0.1:{port}", ray_tmp, head_env


def _home_ray_state() -> dict[str, float]:
    """Files under the real ``~/.ray`` with their modification times."""
    root = Path(os.path.expanduser("~")) / ".ray"
    return {str(p): p.stat().st_mtime for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}


def _stop_cluster(temp_dir: str) -> None:
    """Stop this test cluster only: the processes whose command line names its temp dir (GCS,
    raylet, agents) and their children (the workers). ``ray stop --force`` would also kill any
    other Ray cluster on the machine, a user's own included."""
    import psutil

    me = os.getpid()
    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != me and any(temp_dir in a for a in (p.info["cmdline"] or [])):
                for q in (p, *p.children(recursive=True)):
                    procs[q.pid] = q
        except psutil.Error:
            continue
    for q in procs.values():
        with contextlib.suppress(psutil.Error):
            q.terminate()
    _gone, alive = psutil.wait_procs(list(procs.values()), timeout=15)
    for q in alive:
        with contextlib.suppress(psutil.Error):
            q.kill()
    psutil.wait_procs(alive, timeout=15)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real head node on 127.0.0.1 with 2 CPUs and token authentication on.

    Yields ``address``, ``tmp`` (the workers' TMPDIR), ``home`` (the HOME of the cluster and of
    the CLI runs, holding a stale ``.ray/auth_token``), ``token`` and ``env(tmp, **extra)``: the
    environment of a CLI run that uses the cluster (the right token, that HOME).
    """
    before = _home_ray_state()
    tmp = tmp_path_factory.mktemp("raytmp")
    home = tmp_path_factory.mktemp("rayhome")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(16))  # another cluster's token
    token = secrets.token_hex(16)
    address, ray_tmp, head_env = _start_head(tmp, home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)

    def env(tmp_path: Path, **extra: str) -> dict[str, str]:
        e = cli_env(tmp_path, **RAY_ENV, HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        for k in AUTH_VARS:
            if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
                e.pop(k, None)
        e.update(extra)
        return e

    try:
        yield {"address": address, "tmp": tmp, "home": home, "token": token, "env": env}
    finally:
        _stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        assert _home_ray_state() == before, "the Ray tests changed the real ~/.ray"


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
                 env=ray_cluster["env"](tmp_path))
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
                  "--executor", "ray", "--ray-address", ray_cluster["address"], env=ray_cluster["env"](tmp_path))
    docs2 = by_input(load_report(tmp_path / "r2.json"))
    assert {k for k, d in docs2.items() if d["code"] == "done"} == {k for k, d in by_input(remote).items() if d["status"] == "converted"}


def test_ray_worker_killed_fails_or_retries_only_its_document(ray_cluster, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("memo.docx", "budget.xlsx", "data.csv"):
        shutil.copy(EXAMPLES / name, src / name)
    shutil.copy(EXAMPLES / "page.html", src / "slow-page.html")
    once = tmp_path / "held-once"
    env = ray_cluster["env"](tmp_path)
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
    env = ray_cluster["env"](tmp_path, AWS_ACCESS_KEY_ID=S3_TEST_KEY, AWS_SECRET_ACCESS_KEY=S3_TEST_SECRET,
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


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("mineru-cli: error:")]


@pytest.mark.parametrize("case", ["no_token", "stale_file", "wrong_token", "mode_unset", "mode_token_no_token",
                                  "mode_token_missing_file"])
def test_ray_token_refused_is_one_line_exit_3(ray_cluster, tmp_path, case):
    """Issue 16: a cluster that wants a token it was not given, or a wrong one, exits 3 with one
    line naming the cause and the fix, before any document is converted and without Ray's
    stream of GCS warnings; the token never appears in the output."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "data.csv", src / "data.csv")
    env = ray_cluster["env"](tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(ray_cluster["token"])
    if case == "no_token":  # a HOME without ~/.ray
        del env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]
        env["HOME"] = str(tmp_path / "home")
    elif case == "stale_file":  # the fixture's HOME holds another cluster's ~/.ray/auth_token
        del env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]
    elif case == "wrong_token":
        env["RAY_AUTH_TOKEN"] = "0" * 32
    elif case == "mode_unset":  # the right token in a file, but RAY_AUTH_MODE unset: Ray sends none
        del env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    elif case == "mode_token_no_token":  # Ray's token loader would abort the process, silently
        del env["RAY_AUTH_TOKEN"]
        env["HOME"] = str(tmp_path / "home")
    else:
        del env["RAY_AUTH_TOKEN"]
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "missing-token")
    r = run_cli("convert", str(src), "-o", str(tmp_path / "o"), "--report", str(tmp_path / "r.json"),
                "--executor", "ray", "--ray-address", ray_cluster["address"], env=env, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    errors = _error_lines(r.stderr)
    assert len(errors) == 1, r.stderr
    line = errors[0]
    assert ray_cluster["address"] in line and "ray get-auth-token" in line
    if case == "mode_token_no_token":
        assert "RAY_AUTH_MODE=token but no token was found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH" in line
    elif case == "mode_token_missing_file":
        assert f"RAY_AUTH_MODE=token but RAY_AUTH_TOKEN_PATH={tmp_path / 'missing-token'} does not exist" in line
    elif case == "no_token":
        assert "requires token authentication and no token was given" in line
        assert "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN" in line
    elif case == "stale_file":
        assert "RAY_AUTH_MODE is not 'token' (a token is in ~/.ray/auth_token" in line
    elif case == "wrong_token":
        assert "rejected the token from RAY_AUTH_TOKEN (wrong token)" in line
    elif case == "mode_unset":
        assert f"RAY_AUTH_MODE is not 'token' (a token is in RAY_AUTH_TOKEN_PATH={token_file}" in line
    assert "gcs_client.cc" not in r.stderr and "Failed to get cluster ID" not in r.stderr
    assert ray_cluster["token"] not in r.stdout + r.stderr
    assert not list((tmp_path / "o").rglob(".mineru-cli.done.json"))


def test_ray_token_from_file_with_mode_token_converts(ray_cluster, tmp_path):
    """The right token from RAY_AUTH_TOKEN_PATH (with RAY_AUTH_MODE=token) is accepted."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "data.csv", src / "data.csv")
    token_file = tmp_path / "token"
    token_file.write_text(ray_cluster["token"])
    env = ray_cluster["env"](tmp_path, RAY_AUTH_TOKEN_PATH=str(token_file))
    del env["RAY_AUTH_TOKEN"]
    r = run_cli("convert", str(src), "-o", str(tmp_path / "o"), "--report", str(tmp_path / "r.json"),
                "--executor", "ray", "--ray-address", ray_cluster["address"], env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert by_input(load_report(tmp_path / "r.json"))["data.csv"]["status"] == "converted"
    assert (tmp_path / "o" / "data.csv" / ".mineru-cli.done.json").is_file()


def test_doctor_checks_the_ray_cluster(ray_cluster, tmp_path):
    """Issue 16: ``doctor --executor ray`` says whether the cluster is reachable, takes the
    token, and has which resources and versions; exit 0 when convert would run, 3 when not."""
    def doctor(env: dict, address: str) -> tuple[int, dict]:
        r = run_cli("doctor", "--json", "--executor", "ray", "--ray-address", address, env=env, timeout=120)
        return r.returncode, json.loads(r.stdout)

    env = ray_cluster["env"](tmp_path)
    code, rep = doctor(env, ray_cluster["address"])
    assert code == 0, rep["problems"]
    rc = rep["ray"]
    assert (rc["reachable"], rc["authenticated"], rc["auth"], rc["token_source"]) == (True, True, "token", "RAY_AUTH_TOKEN")
    assert (rc["nodes"], rc["cpus"], rc["gpus"]) == (1, 2.0, 0.0)
    assert rc["cluster_ray_version"] == rc["driver_ray_version"] == ray.__version__
    assert rc["cluster_python_version"] == rc["driver_python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert ray_cluster["token"] not in json.dumps(rep)

    wrong = dict(env, RAY_AUTH_TOKEN="f" * 32)
    code, rep = doctor(wrong, ray_cluster["address"])
    assert code == 3 and rep["ray"]["authenticated"] is False
    assert any("rejected the token from RAY_AUTH_TOKEN" in p for p in rep["problems"])

    port = _free_port()  # nothing listens there
    code, rep = doctor(env, f"127.0.0.1:{port}")
    assert code == 3 and rep["ray"]["reachable"] is False
    assert any(f"cannot reach the Ray cluster at 127.0.0.1:{port}" in p and "Connection refused" in p
               for p in rep["problems"])

    text = run_cli("doctor", "--executor", "ray", "--ray-address", ray_cluster["address"], env=env, timeout=120)
    assert text.returncode == 0
    assert "authentication: accepted (token from RAY_AUTH_TOKEN)" in text.stdout
    assert "1 alive node(s), 2 CPU(s), 0 GPU(s)" in text.stdout


def test_token_sent_to_a_cluster_with_auth_off_is_refused(tmp_path_factory, tmp_path):
    """A driver with RAY_AUTH_MODE=token refuses the calls of an auth-off cluster's workers (every
    document would fail as 'worker lost'): convert and doctor exit 3 and say to unset it; the same
    cluster without the token is fine."""
    home = tmp_path_factory.mktemp("offhome")
    address, ray_tmp, _env = _start_head(tmp_path, home, RAY_AUTH_MODE="disabled")
    try:
        env = cli_env(tmp_path, **RAY_ENV, HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="a" * 32)
        for k in ("RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
            env.pop(k, None)
        src = tmp_path / "in"
        src.mkdir()
        shutil.copy(EXAMPLES / "data.csv", src / "data.csv")
        r = run_cli("convert", str(src), "-o", str(tmp_path / "o"), "--executor", "ray", "--ray-address", address,
                    env=env, timeout=120)
        assert r.returncode == 3, r.stdout + r.stderr
        errors = _error_lines(r.stderr)
        assert errors == [f"mineru-cli: error: the Ray cluster at {address} has token authentication off, but "
                          "RAY_AUTH_MODE=token here: a driver in token mode refuses the calls of the cluster's "
                          "workers, so every document would fail: unset RAY_AUTH_MODE (and RAY_AUTH_TOKEN)"], r.stderr
        d = run_cli("doctor", "--json", "--executor", "ray", "--ray-address", address, env=env, timeout=120)
        assert d.returncode == 3 and "has token authentication off" in json.loads(d.stdout)["ray"]["error"]
        del env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]
        d = run_cli("doctor", "--json", "--executor", "ray", "--ray-address", address, env=env, timeout=120)
        rc = json.loads(d.stdout)["ray"]
        assert d.returncode == 0 and (rc["authenticated"], rc["auth"], rc["cpus"]) == (True, "none", 2.0)
    finally:
        _stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
