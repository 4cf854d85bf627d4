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


def test_scale_bench_quick(tmp_path):
    """benchmarks/scale.py (issue 17) on 60 local documents and 40 on moto S3: every number is
    produced, the first run converted everything, the rerun skipped everything and read no
    input and at most one object (the done-record index) on S3; the temp folder is removed."""
    import pytest

    pytest.importorskip("moto.server", reason="moto[server] not installed (pip install -e .[test])")
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--sizes", "60", "--s3-sizes", "40",
                           "--reruns", "3", "--json", str(out)], capture_output=True, text=True, env=cli_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["problems"] == [] and res["command"].endswith("--sizes 60 --s3-sizes 40 --reruns 3 --json " + str(out))
    rows = {(r["storage"], r["documents"]): r for r in res["rows"]}
    assert list(rows) == [("local", 60), ("s3", 40)]
    for (storage, n), row in rows.items():
        first, rerun = row["first"], row["rerun"]
        assert first["rc"] == rerun["rc"] == 0, row
        assert first["converted"] == first["total"] == n and first["failed"] == 0, first
        assert rerun["skipped"] == rerun["total"] == n and rerun["converted"] == 0, rerun
        assert first["missing_report_keys"] == rerun["missing_report_keys"] == [], row
        # seconds after the Popen: start-up, then the walk's end and the first task, all inside the run
        assert 0 < first["startup_s"] < first["first_dispatch_s"] < first["wall_s"], first
        assert 0 < first["discovery_ended_s"] < first["wall_s"], first
        assert "first_dispatch_s" not in rerun and 0 < rerun["wall_s"] < first["wall_s"], row
        for run in (first, rerun):
            # the sampled peak of the parent alone cannot pass the kernel's own peak (getrusage)
            assert 20e6 < run["parent_peak_rss"] < 2e9 and run["rss_samples"] >= 1, run
            assert 20e6 < run["parent_peak_rss_sampled"] <= run["parent_peak_rss"] * 1.02 + 1e6, run
        assert rerun["done_records"]["from_index"] + rerun["done_records"]["read"] == n, rerun
        assert row["made_s"] >= 0
    # three local reruns, the median one reported; S3 reruns once
    local = rows[("local", 60)]
    assert len(local["reruns_s"]) == 3 and local["rerun"]["wall_s"] == sorted(local["reruns_s"])[1], local
    assert "reruns_s" not in rows[("s3", 40)]
    assert any(l.startswith("- local 60: rerun wall times ") for l in proc.stdout.splitlines()), proc.stdout
    s3 = rows[("s3", 40)]
    q = s3["rerun"]["requests"]
    assert q["ops"].get("GetObject", 0) <= 1 and q["ops"].get("PutObject", 0) == 0, q
    assert q["list_input"] >= 1 and q["list_output"] >= 1 and q["total"] < 40, q
    assert s3["first"]["requests"]["ops"]["PutObject"] >= 40 * 4, s3["first"]["requests"]
    assert s3["input_objects"] == 40 and s3["output_objects"] >= 40 * 4 and s3["listing_pages"] == 2, s3
    assert res["growth"] == []  # one size per storage: no growth to give
    lines = proc.stdout.splitlines()
    assert any(l.startswith("| storage | documents | tree made | first run | first dispatch |") for l in lines)
    assert [l.split("|")[1:3] for l in lines if l.startswith(("| local |", "| s3 |"))] == \
        [[" local ", " 60 "], [" s3 ", " 40 "]], proc.stdout
    assert [l.split("|")[1:3] for l in lines if l.startswith("| 40 |")] == [[" 40 ", " first "], [" 40 ", " rerun "]]
    assert any(l.startswith("- local 60 (the issue's size: 100,000): parent peak RSS") for l in lines), proc.stdout
    assert not list(tmp_path.glob("mineru-cli-scale-*")), "the work folder was left behind"

    # the growth figure, from two sizes of the rows above
    import importlib.util

    spec = importlib.util.spec_from_file_location("scale_bench", REPO / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)

    big = json.loads(json.dumps(rows[("local", 60)]))
    big["documents"] = 1060
    big["first"]["parent_peak_rss"] += 2_000_000
    g = scale.growth([rows[("local", 60)], big], "local")
    assert g["from"] == 60 and g["to"] == 1060 and g["first_bytes_per_doc"] == 2000.0 and g["rerun_bytes_per_doc"] == 0
