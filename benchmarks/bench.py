"""Benchmarks of mineru-cli against named baselines, measured in one run on this machine.

    python benchmarks/bench.py [--quick] [--json FILE] [--workers N] [--repeat N]

Prints one table of ratios:

1. mixed folder (>= 200 small documents: generated PDFs/DOCX/XLSX/HTML/CSV plus the corpus's
   good office files and text PDFs): mineru-cli with default settings vs ``mineru-kit parse``
   over the same folder (MinerU's own batch command, tier flash, ocr-mode txt; it stops at the
   first failure, so it gets only good files) vs the floor: a bare in-process loop over
   ``mineru.parse`` with the same settings, divided by the number of workers; and the same
   loop also writing each result as mineru-cli does (markdown, middle JSON, content_list,
   images: work the bare loop leaves out), divided the same way; and the bare loop with
   CPython's garbage collector set as in mineru-cli's workers (``engine.tune_gc``), which
   shows how much of mineru-cli's lead over the floor that setting makes;
2. start-up: ``mineru-cli --help`` vs ``mineru-kit --help``; ``mineru-cli convert`` vs
   ``mineru-kit parse`` on one tiny CSV;
3. a rerun over a finished folder of 1,000 documents vs its first run, twice: 1,000 documents
   like the mixed folder's, and 1,000 two-line CSV/HTML files (the worst case for the ratio:
   their conversion costs almost nothing, so the rerun's fixed start-up dominates);
4. CPU seconds of mineru-cli and of the loop (each with all its processes): the loop itself
   uses more than one core (MinerU's threads, its render process), so with as many workers as
   cores, loop / workers is below the loop's CPU time / cores, the least wall time in which the
   loop's work fits on this machine however it is split;
5. peak resident memory of the parent and of each worker (sampled with psutil every 0.5 s, light enough not to slow the run);
6. pages per second on a 100-page text PDF.

``--quick`` shrinks every size (a smoke test of the script, not a measurement).
Timing goals are checked here and recorded in benchmarks/RESULTS.md, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
VENV_BIN = Path(sys.executable).parent
ENV = dict(os.environ, MINERU_MODEL_SOURCE="local", NO_COLOR="1")


def corpus_dir() -> Path | None:
    env = os.environ.get("MINERU_CLI_CORPUS")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "corpus"]:
        if cand.is_dir():
            return cand
    return None


def make_mixed(folder: Path, n_generated: int, corpus: Path | None) -> int:
    """Write ``n_generated`` small documents (5 kinds, varied content) plus the corpus's good
    office files and text PDFs into ``folder`` (flat: mineru-kit expands one level only)."""
    import make_examples as mk

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_generated):
        kind = i % 5
        if kind == 0:
            mk.write_text_pdf(folder / f"doc{i:04d}.pdf", mk.numbered_pages(1 + i % 3), title=f"Doc {i}")
        elif kind == 1:
            mk.write_docx(folder / f"doc{i:04d}.docx", f"Memo {i}", [f"Paragraph {i} of the memo."] * 3,
                          [["Item", "Owner"], [f"task {i}", "Alice"], [f"task {i + 1}", "Bob"]])
        elif kind == 2:
            mk.write_xlsx(folder / f"doc{i:04d}.xlsx", [["Category", "Amount"]] + [[f"c{j}", i * j] for j in range(8)])
        elif kind == 3:
            mk.write_html(folder / f"doc{i:04d}.html", f"Page {i}", f"Heading {i}", [f"Text of page {i}."] * 4,
                          [["a", "b"], [str(i), str(i * 2)]])
        else:
            mk.write_csv(folder / f"doc{i:04d}.csv", [["id", "name", "score"]] + [[j, f"n{j}", j * i] for j in range(10)])
    count = n_generated
    if corpus is not None:
        good_office = [p for p in sorted((corpus / "office").iterdir()) if p.is_file() and "password" not in p.name]
        text_pdfs = [p for p in sorted((corpus / "pdf" / "normal").iterdir())
                     if p.suffix == ".pdf" and "scan" not in p.name and "ocr" not in p.name]
        for p in good_office + text_pdfs:
            shutil.copy(p, folder / f"corpus-{p.name}")
            count += 1
    return count


class PeakSampler(threading.Thread):
    """Peak RSS (bytes) of a process and, separately, of each of its children (with their
    own descendants), sampled every 0.5 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.parent_peak, self.child_peaks = pid, 0, {}
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        from mineru_cli.pool import children_tree_rss

        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            try:
                self.parent_peak = max(self.parent_peak, proc.memory_info().rss)
                for pid, total in children_tree_rss(proc).items():
                    self.child_peaks[pid] = max(self.child_peaks.get(pid, 0), total)
            except psutil.Error:
                pass
            time.sleep(0.5)


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's descendants that have been waited for
    (getrusage RUSAGE_CHILDREN: a child's own waited-for descendants count too)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


LAST_CPU: list[float] = [0.0]  # CPU seconds of the last ``timed`` command and its descendants


def timed(cmd: list[str], sample: bool = False) -> tuple[float, subprocess.CompletedProcess, PeakSampler | None]:
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = PeakSampler(proc.pid) if sample else None
    if sampler:
        sampler.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    LAST_CPU[0] = children_cpu() - cpu0
    if sampler:
        sampler.done.set()
    return elapsed, subprocess.CompletedProcess(cmd, proc.returncode, out, err), sampler


def cli(*args: str) -> list[str]:
    return [str(VENV_BIN / "mineru-cli"), *args]


def kit(*args: str) -> list[str]:
    return [str(VENV_BIN / "mineru-kit"), *args]


FLOOR_SCRIPT = r'''
import os, sys, time
os.environ["MINERU_MODEL_SOURCE"] = "local"
if __name__ == "__main__":
    from mineru.utils.logger import configure_global_log_level
    configure_global_log_level("warning")
    import mineru
    files = sorted(os.path.join(sys.argv[1], f) for f in os.listdir(sys.argv[1]))
    write = "write" in sys.argv[2:]  # also write each result as mineru-cli does (md, middle, content_list, images)
    if "gc" in sys.argv[2:]:  # CPython's garbage collector set as in mineru-cli's workers
        from mineru_cli.engine import tune_gc
        tune_gc()
    if write:
        import tempfile
        from mineru_cli.engine import _StagingWriter, _write_content_list, export_result
        out = tempfile.mkdtemp()
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        result = mineru.parse(f, tier="flash", ocr_mode="txt")
        if write:
            staging = os.path.join(out, str(i))
            os.makedirs(staging)
            writer = _StagingWriter(staging, "doc", ["content_list", "images", "md", "middle"])
            _write_content_list(staging, "doc", export_result(result, writer))
    print(time.perf_counter() - t0)
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--workers", type=int, default=None, help="mineru-cli --workers (default: its own default)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the mixed-folder and rerun measurements N times, interleaved, and report medians")
    a = ap.parse_args(argv)
    corpus = None if a.quick else corpus_dir()
    n_mixed = 10 if a.quick else 200
    n_rerun = 20 if a.quick else 1000
    pages_long = 10 if a.quick else 100
    work = Path(tempfile.mkdtemp(prefix="mineru-cli-bench-"))
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine":
                 f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                 "command": " ".join([Path(sys.executable).name, "benchmarks/bench.py", *(argv or sys.argv[1:])])}
    wflag = ["--workers", str(a.workers)] if a.workers else []
    try:
        # 1. mixed folder (with --repeat N: cli, kit and floor interleaved N times, medians)
        mixed = work / "mixed"
        res["mixed_documents"] = make_mixed(mixed, n_mixed, corpus)
        script = work / "floor.py"
        script.write_text(FLOOR_SCRIPT)
        cli_times, kit_times, loop_times, cli_cpu, loop_cpu, write_times, gc_times = [], [], [], [], [], [], []

        def loop_seconds(*mode: str) -> float:
            """The floor script's own timing of its loop (its last line), in ``mode``."""
            proc = timed([sys.executable, str(script), str(mixed), *mode])[1]
            return float(proc.stdout.strip().splitlines()[-1])

        for rep in range(max(1, a.repeat)):
            shutil.rmtree(work / "out-cli", ignore_errors=True)
            shutil.rmtree(work / "out-kit", ignore_errors=True)
            t_cli, p, sampler = timed(cli("convert", str(mixed), "-o", str(work / "out-cli"), "--report",
                                          str(work / "cli.json"), *wflag), sample=True)
            cli_times.append(t_cli)
            cli_cpu.append(LAST_CPU[0])
            if rep == 0:
                report = json.loads((work / "cli.json").read_text())
                res["mixed_cli_converted"] = report["summary"]["converted"]
                res["mixed_cli_failed"] = report["summary"]["failed"]
                workers = report["summary"]["workers"]
                res["workers"] = workers
                res["parent_peak_rss_mb"] = round(sampler.parent_peak / 1e6)
                res["worker_peak_rss_mb"] = sorted(round(v / 1e6) for v in sampler.child_peaks.values())
            t_kit, pk, _ = timed(kit("parse", str(mixed), "-o", str(work / "out-kit"), "--tier", "flash",
                                     "--ocr-mode", "txt"))
            kit_times.append(t_kit)
            res["mixed_kit_rc"] = pk.returncode
            loop_times.append(loop_seconds())
            loop_cpu.append(LAST_CPU[0])
            write_times.append(loop_seconds("write"))
            gc_times.append(loop_seconds("gc"))
        res["mixed_cli_runs_s"], res["mixed_kit_runs_s"], res["floor_loop_runs_s"] = cli_times, kit_times, loop_times
        t_cli, t_kit = statistics.median(cli_times), statistics.median(kit_times)
        res["mixed_cli_s"], res["mixed_kit_s"] = t_cli, t_kit
        floor_loop = statistics.median(loop_times)
        res["floor_loop_s"] = floor_loop
        res["floor_s"] = floor_loop / workers
        res["ratio_vs_kit"] = t_kit / t_cli
        res["ratio_vs_floor"] = t_cli / res["floor_s"]
        # the same loop writing each result as mineru-cli does (work the floor above leaves out),
        # and with the garbage collector set as in mineru-cli's workers (engine.tune_gc: how much
        # of mineru-cli's lead over the floor that setting makes)
        for name, times in (("write", write_times), ("gc", gc_times)):
            res[f"floor_{name}_loop_runs_s"] = times
            res[f"floor_{name}_loop_s"] = statistics.median(times)
            res[f"floor_{name}_s"] = res[f"floor_{name}_loop_s"] / workers
            res[f"ratio_vs_floor_{name}"] = t_cli / res[f"floor_{name}_s"]
        # CPU: the loop itself uses more than one core (MinerU's threads, its render process),
        # so on a machine with as many cores as workers, loop / workers can be below what the
        # loop's own CPU time allows: CPU seconds / cores
        res["mixed_cli_cpu_runs_s"], res["floor_loop_cpu_runs_s"] = cli_cpu, loop_cpu
        res["mixed_cli_cpu_s"], res["floor_loop_cpu_s"] = statistics.median(cli_cpu), statistics.median(loop_cpu)
        res["cores"] = os.cpu_count() or 1
        res["floor_cpu_bound_s"] = res["floor_loop_cpu_s"] / min(workers, res["cores"])

        # 2. start-up
        def best(cmd: list[str], n: int = 5) -> float:
            return statistics.median(timed(cmd)[0] for _ in range(n))

        res["help_cli_s"] = best(cli("--help"))
        res["help_kit_s"] = best(kit("--help"), 3)
        tiny = work / "tiny.csv"
        tiny.write_text("a,b\n1,2\n")
        res["tiny_cli_s"] = timed(cli("convert", str(tiny), "-o", str(work / "tiny-cli")))[0]
        res["tiny_kit_s"] = timed(kit("parse", str(tiny), "-o", str(work / "tiny-kit"), "--tier", "flash"))[0]

        # 3. rerun over a finished folder of 1,000 documents, two kinds of folder:
        #    "mixed": documents like the mixed folder's (generated PDFs/DOCX/XLSX/HTML/CSV plus the
        #    corpus's), "tiny": two-line CSV/HTML files, where converting costs almost nothing and
        #    the rerun's fixed start-up (Python, typer, pydantic) dominates the ratio
        import make_examples as mk

        mixed_many = work / "many-mixed"
        n_corpus = make_mixed(mixed_many, 0, corpus)
        make_mixed(mixed_many, max(0, n_rerun - n_corpus), None)
        tiny_many = work / "many"
        tiny_many.mkdir()
        for i in range(n_rerun):
            if i % 2:
                mk.write_csv(tiny_many / f"t{i:05d}.csv", [["id", "v"], [i, i * 3]])
            else:
                mk.write_html(tiny_many / f"t{i:05d}.html", f"T{i}", f"Title {i}", [f"Body {i}."])
        for label, many in (("rerun_mixed", mixed_many), ("rerun", tiny_many)):
            firsts, reruns, skipped = [], [], []
            for _rep in range(max(1, a.repeat)):
                shutil.rmtree(work / "out-many", ignore_errors=True)
                t_first, p1, _ = timed(cli("convert", str(many), "-o", str(work / "out-many"), "--report",
                                           str(work / "first.json"), *wflag))
                t_rerun, p2, _ = timed(cli("convert", str(many), "-o", str(work / "out-many"), "--report",
                                           str(work / "rerun.json"), *wflag))
                firsts.append(t_first)
                reruns.append(t_rerun)
                skipped.append(json.loads((work / "rerun.json").read_text())["summary"]["skipped"])
            first_summary = json.loads((work / "first.json").read_text())["summary"]
            t_first, t_rerun = statistics.median(firsts), statistics.median(reruns)
            res.update({f"{label}_docs": len(list(many.iterdir())), f"{label}_first_s": t_first,
                        f"{label}_s": t_rerun, f"{label}_ratio": t_first / t_rerun,
                        f"{label}_converted": first_summary["converted"], f"{label}_skipped": min(skipped),
                        f"{label}_firsts_s": firsts, f"{label}_reruns_s": reruns})
            shutil.rmtree(work / "out-many", ignore_errors=True)

        # 5. pages per second
        longpdf = work / "long.pdf"
        mk.write_text_pdf(longpdf, mk.numbered_pages(pages_long))
        t_long, pl, _ = timed(cli("convert", str(longpdf), "-o", str(work / "out-long"), *wflag))
        t_long_kit, _pk, _ = timed(kit("parse", str(longpdf), "-o", str(work / "out-long-kit"), "--tier", "flash",
                                       "--ocr-mode", "txt"))
        res.update(long_pages=pages_long, long_cli_s=t_long, pages_per_s=pages_long / t_long,
                   long_kit_s=t_long_kit, kit_pages_per_s=pages_long / t_long_kit)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("mixed folder", f"{res['mixed_documents']} docs", f"mineru-cli {res['mixed_cli_s']:.1f} s",
         f"mineru-kit parse {res['mixed_kit_s']:.1f} s", f"x{res['ratio_vs_kit']:.2f} throughput vs mineru-kit (target >= 1.6)"),
        ("", "", f"floor {res['floor_s']:.1f} s", f"(loop {res['floor_loop_s']:.1f} s / {res['workers']} workers)",
         f"mineru-cli / floor = {res['ratio_vs_floor']:.2f} (target <= 1.15)"),
        ("", "", f"floor writing results {res['floor_write_s']:.1f} s",
         f"(loop with writes {res['floor_write_loop_s']:.1f} s / {res['workers']} workers)",
         f"mineru-cli / that floor = {res['ratio_vs_floor_write']:.2f}"),
        ("", "", f"floor with the workers' GC setting {res['floor_gc_s']:.1f} s",
         f"(loop with engine.tune_gc {res['floor_gc_loop_s']:.1f} s / {res['workers']} workers)",
         f"mineru-cli / that floor = {res['ratio_vs_floor_gc']:.2f}"),
        ("", "CPU, all processes", f"mineru-cli {res['mixed_cli_cpu_s']:.1f} s", f"loop {res['floor_loop_cpu_s']:.1f} s",
         f"the loop's CPU / {min(res['workers'], res['cores'])} cores = {res['floor_cpu_bound_s']:.1f} s"),
        ("start-up --help", "", f"mineru-cli {res['help_cli_s']:.2f} s", f"mineru-kit {res['help_kit_s']:.2f} s",
         f"target < 0.3 s"),
        ("start-up 1 tiny file", "", f"mineru-cli {res['tiny_cli_s']:.2f} s", f"mineru-kit parse {res['tiny_kit_s']:.2f} s",
         f"x{res['tiny_kit_s'] / res['tiny_cli_s']:.2f}"),
        ("rerun, finished folder", f"{res['rerun_mixed_docs']} mixed docs", f"first {res['rerun_mixed_first_s']:.1f} s",
         f"rerun {res['rerun_mixed_s']:.2f} s", f"x{res['rerun_mixed_ratio']:.1f} faster (target >= 50)"),
        ("rerun, finished folder", f"{res['rerun_docs']} two-line CSV/HTML", f"first {res['rerun_first_s']:.1f} s",
         f"rerun {res['rerun_s']:.2f} s", f"x{res['rerun_ratio']:.1f} faster (start-up bound)"),
        ("peak RSS", "", f"parent {res['parent_peak_rss_mb']} MB", f"workers {res['worker_peak_rss_mb']} MB", ""),
        ("100-page text PDF" if not a.quick else f"{pages_long}-page text PDF", f"{res['long_pages']} pages",
         f"mineru-cli {res['pages_per_s']:.1f} pages/s", f"mineru-kit {res['kit_pages_per_s']:.1f} pages/s",
         f"x{res['pages_per_s'] / res['kit_pages_per_s']:.2f}"),
    ]
    print(f"# {res['date']} on {res['machine']}: {res['command']}")
    print("| measure | size | mineru-cli | baseline | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
