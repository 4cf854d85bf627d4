"""Issue 8: the benchmark script runs end to end on tiny sizes, so it cannot rot.

No timing is asserted here (timing goals live in benchmarks/RESULTS.md); the test checks that
every measurement is produced, that mineru-cli converted everything it was given, and that
the rerun skipped every document.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, cli_env


def test_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--repeat", "2", "--json", str(out)],
                          capture_output=True, text=True, env=cli_env(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["mixed_documents"] == 10 and res["mixed_cli_converted"] == 10 and res["mixed_cli_failed"] == 0
    assert res["mixed_kit_rc"] == 0
    assert res["rerun_docs"] == 20 and res["rerun_converted"] == 20 and res["rerun_skipped"] == 20
    assert res["rerun_mixed_docs"] == 20 and res["rerun_mixed_converted"] == 20 and res["rerun_mixed_skipped"] == 20
    assert res["workers"] >= 1 and res["floor_s"] > 0 and res["long_pages"] == 10
    for key in ("ratio_vs_kit", "ratio_vs_floor", "help_cli_s", "tiny_cli_s", "rerun_ratio", "rerun_mixed_ratio",
                "pages_per_s", "mixed_cli_cpu_s", "floor_loop_cpu_s", "floor_cpu_bound_s", "floor_write_s",
                "ratio_vs_floor_write", "floor_gc_s", "ratio_vs_floor_gc"):
        assert res[key] > 0, key
    # CPU of the converting processes is counted (workers and their MinerU render processes):
    # importing MinerU and converting 10 documents takes well over a CPU second either way
    assert res["mixed_cli_cpu_s"] > 1.0 and res["floor_loop_cpu_s"] > 1.0, res
    assert "| CPU, all processes | mineru-cli " in proc.stdout, proc.stdout
    assert len(res["mixed_cli_runs_s"]) == len(res["floor_loop_runs_s"]) == len(res["floor_write_loop_runs_s"]) == 2
    assert len(res["floor_gc_loop_runs_s"]) == 2
    assert len(res["rerun_reruns_s"]) == len(res["rerun_mixed_firsts_s"]) == 2
    assert "| mixed folder |" in proc.stdout and "| rerun, finished folder |" in proc.stdout


def test_s3_rerun_bench_quick(tmp_path):
    """benchmarks/s3_rerun.py on 4 documents: every path runs and prints its row."""
    import pytest

    pytest.importorskip("moto.server", reason="moto[server] not installed (pip install -e .[test])")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "s3_rerun.py"), "--docs", "4"],
                          capture_output=True, text=True, env=cli_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [l for l in proc.stdout.splitlines() if l.startswith("| this checkout |")]
    assert [r.split("|")[2].strip() for r in rows] == ["s3 -> s3", "local -> s3", "s3 -> local"]
