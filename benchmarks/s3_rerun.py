"""Reruns over S3: first run and two reruns, s3 -> s3, local -> s3 and s3 -> local.

    python benchmarks/s3_rerun.py [--docs 300] [--src PATH ...]

Starts moto's standalone S3 server on 127.0.0.1 (a real HTTP endpoint; the only network a
benchmark here may use), writes ``--docs`` two-line CSV/HTML files, uploads them, and times
``mineru-cli convert`` on each path: one first run, then two reruns over the finished output.
``--src`` runs the CLI from other checkouts' ``src`` folders as well (``PYTHONPATH``), for
before/after comparisons in one run. Needs ``pip install -e .[test]`` (moto[server], s3fs).

moto's server handles one request at a time (about 15-20 ms of its CPU each here), so this
measures how many requests a rerun makes more than how it would fare against S3 itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300, help="number of two-line CSV/HTML files (default 300)")
    ap.add_argument("--src", action="append", default=[], help="also run the CLI from this src folder")
    a = ap.parse_args(argv)

    import s3fs
    from moto.server import ThreadedMotoServer

    import make_examples as mk

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", MINERU_MODEL_SOURCE="local")
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    work = Path(tempfile.mkdtemp(prefix="mineru-cli-s3bench-"))
    env["XDG_CACHE_HOME"] = str(work / "cache")
    try:
        fs = s3fs.S3FileSystem(key="bench", secret="bench-secret", client_kwargs={"endpoint_url": endpoint})
        fs.mkdir("bench-s3")
        src = work / "in"
        src.mkdir()
        for i in range(a.docs):
            if i % 2:
                mk.write_csv(src / f"t{i:05d}.csv", [["id", "v"], [i, i * 3]])
            else:
                mk.write_html(src / f"t{i:05d}.html", f"T{i}", f"Title {i}", [f"Body {i}."])
        fs.put(str(src) + "/", "bench-s3/in/", recursive=True)

        checkouts = [("this checkout", str(REPO / "src"))] + [(s, s) for s in a.src]
        print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {a.docs} documents, moto on {endpoint}: "
              f"python benchmarks/s3_rerun.py {' '.join(sys.argv[1:] if argv is None else argv)}")
        print("| code | path | first run | rerun 1 | rerun 2 |")
        print("|---|---|---|---|---|")
        for n, (label, path) in enumerate(checkouts):
            run_env = dict(env, PYTHONPATH=path)
            paths = [("s3 -> s3", "s3://bench-s3/in", f"s3://bench-s3/out{n}-ss"),
                     ("local -> s3", str(src), f"s3://bench-s3/out{n}-ls"),
                     ("s3 -> local", "s3://bench-s3/in", str(work / f"out{n}-sl"))]
            for name, inp, out in paths:
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    proc = subprocess.run([sys.executable, "-m", "mineru_cli", "convert", inp, "-o", out,
                                           "--endpoint-url", endpoint, "-q"], env=run_env, capture_output=True,
                                          text=True)
                    times.append(time.perf_counter() - t0)
                    if proc.returncode != 0:
                        print(proc.stdout + proc.stderr, file=sys.stderr)
                        return 1
                print(f"| {label} | {name} | {times[0]:.1f} s | {times[1]:.2f} s | {times[2]:.2f} s |", flush=True)
    finally:
        server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
