"""Shared test helpers: the corpus, running the CLI as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
os.environ.setdefault("MINERU_MODEL_SOURCE", "local")


def corpus_dir() -> Path | None:
    """``$MINERU_CLI_CORPUS``, else ``../shared/corpus`` beside the repository."""
    env = os.environ.get("MINERU_CLI_CORPUS")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "corpus"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    c = corpus_dir()
    if c is None:
        pytest.skip("corpus not found: set MINERU_CLI_CORPUS or place it at ../shared/corpus")
    return c


def cli_env(tmp: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: local model source, no colour, optional TMPDIR."""
    env = dict(os.environ)
    env.update({"MINERU_MODEL_SOURCE": "local", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    for k in list(env):
        if k.startswith("MINERU_CLI_") and k != "MINERU_CLI_CORPUS":
            del env[k]
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m mineru_cli ARGS`` and return the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", "mineru_cli", *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def load_report(path: Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


def by_input(report: dict) -> dict[str, dict]:
    """Report documents keyed by input; asserts every input appears exactly once."""
    docs = report["documents"]
    keys = [d["input"] for d in docs]
    assert len(keys) == len(set(keys)), f"an input appears twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    return {d["input"]: d for d in docs}


def run_convert_watched(script: str, settings: dict, report: Path, env: dict, timeout: float = 300) -> tuple:
    """Run ``script`` in a fresh Python: it wraps what it watches, runs ``run_convert`` with
    ``load_settings(json.loads(sys.argv[1]))`` and prints one line ``WATCHED <json>``.
    ``settings`` gets ``report`` added. Returns (the WATCHED value, the report's documents by
    input); asserts exit 0."""
    proc = subprocess.run([sys.executable, "-c", script, json.dumps({**settings, "report": str(report)})],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    watched = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("WATCHED "))[len("WATCHED "):])
    return watched, by_input(load_report(report))


# --- shared by the reliability tests (issue 3); additive ---------------------------------------

TEST_TAG_VAR = "MINERU_CLI_TEST_TAG"


def load_make_examples():
    """``examples/make_examples.py`` as a module (write_text_pdf, numbered_pages, write_report_pdf, ...)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tagged_processes(tag: str) -> list:
    """Live processes (psutil) whose environment has ``MINERU_CLI_TEST_TAG=tag``: a CLI started
    with that tag, its workers and their render processes, even once orphaned (reparented)."""
    import psutil

    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(TEST_TAG_VAR) == tag and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.fixture
def process_tag():
    """A unique tag to put in a CLI's environment (``cli_env(..., MINERU_CLI_TEST_TAG=tag)``).
    After the test, every process carrying it must be gone within 20 s: the CLI, its workers
    and MinerU's render processes. Leftovers are killed (by pid) and the test errors."""
    import time
    import uuid

    import psutil

    tag = uuid.uuid4().hex
    yield tag
    deadline = time.time() + 20
    left = tagged_processes(tag)
    while left and time.time() < deadline:
        time.sleep(0.25)
        left = tagged_processes(tag)
    if left:
        desc = []
        for p in left:
            try:
                desc.append(f"{p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:160]}")
                p.kill()
            except psutil.Error:
                pass
        pytest.fail("processes left running after the test:\n  " + "\n  ".join(desc))


# --- S3: moto's standalone server on loopback (issue 5); additive ------------------------------

S3_TEST_KEY = "AKIAMINERUCLITEST0001"
S3_TEST_SECRET = "mineru-cli-test-secret-Q7v2Kp9Zx4"


class MotoS3:
    """moto's standalone S3 server (``ThreadedMotoServer``, a real HTTP endpoint) on 127.0.0.1.

    ``endpoint``: ``http://127.0.0.1:<port>``; ``stop()`` / ``start()`` take it down and bring it
    back on the same port (the buckets and objects survive: moto keeps them in this process).
    ``fs()``: an s3fs filesystem on it with the test credentials.
    """

    def __init__(self) -> None:
        self.port = 0
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            inner = getattr(self._server, "_server", None)
            if inner is not None:
                inner.server_close()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def fs(self, **kwargs):
        import s3fs

        opts = dict(key=S3_TEST_KEY, secret=S3_TEST_SECRET, client_kwargs={"endpoint_url": self.endpoint},
                    skip_instance_cache=True, use_listings_cache=False)
        opts.update(kwargs)
        return s3fs.S3FileSystem(**opts)

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` if missing; return it."""
        fs = self.fs()
        if not fs.exists(name):
            fs.mkdir(name)
        return name


@pytest.fixture(scope="session")
def s3_server():
    """A session-wide moto S3 server on 127.0.0.1 at a free port (see MotoS3). Skips when
    moto[server] or s3fs is not installed (``pip install -e .[test]``)."""
    pytest.importorskip("moto.server", reason="moto[server] not installed (pip install -e .[test])")
    pytest.importorskip("s3fs", reason="s3fs not installed (pip install -e .[test])")
    srv = MotoS3()
    srv.start()
    yield srv
    srv.stop()


# --- S3 behind a loopback proxy that counts, fails and holds requests (issue 17); additive --------

@pytest.fixture
def s3_proxy(s3_server):
    """A fresh ``s3proxy.S3Proxy`` on 127.0.0.1 in front of the session's moto server (started
    again if a test stopped it): ``endpoint``, ``count(op, **query)``, ``requests(op)``,
    ``add_fault(rule)``, ``add_hold(...)``. Its counters and rules are this test's alone; it is
    stopped (held requests released, connections closed, threads joined) after the test."""
    from s3proxy import S3Proxy

    if not s3_server.running:
        s3_server.start()
    proxy = S3Proxy(s3_server.endpoint).start()
    try:
        yield proxy
    finally:
        proxy.stop()

def s3_env(tmp: Path, **extra: str) -> dict[str, str]:
    """CLI environment: test credentials only, no AWS config files, no instance metadata (the
    tests may reach loopback only), staging cache under ``tmp``."""
    env = cli_env(tmp)
    for k in list(env):
        if k.startswith("AWS_"):
            del env[k]
    env.update({
        "AWS_ACCESS_KEY_ID": S3_TEST_KEY, "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "XDG_CACHE_HOME": str(tmp / "cache"), "MINERU_MODEL_SOURCE": "local",
    })
    env.update(extra)
    return env
