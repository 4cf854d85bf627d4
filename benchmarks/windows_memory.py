"""Page windows versus one piece: memory and time on the corpus's 20,000-page PDF.

    python benchmarks/windows_memory.py [--pdf PATH] [--pages 1-20000] [--window-pages 100]
        [--workers 2] [--unwindowed-limit 3GB] [--unwindowed-timeout 120]
        [--skip-windowed] [--skip-unwindowed] [--results benchmarks/RESULTS.md]

1. **Windowed**: ``mineru-cli convert PDF --pages RANGE --window-pages 100 --max-pages 0
   --max-worker-memory 3GB``: wall time, the workers' peak resident memory (the report's
   ``summary.peak_worker_rss`` and this script's own sampling of every worker with its
   descendants), and a check that the merged content_list and markdown cover every page in order.
2. **Unwindowed**: the same file with ``--window-pages 0`` (MinerU gets it in one piece), bounded
   three ways: mineru-cli's memory monitor kills the worker at ``--unwindowed-limit``, the
   task times out after ``--unwindowed-timeout`` seconds, and this script kills the whole run
   (its own process group) if the workers ever pass the limit by 1 GB. It records how the
   worker's memory grows until it is stopped. Never run this file unbounded: MinerU holds the
   whole document and grows past 20 GB (shared/notes/mineru-4.md).

Prints a Markdown section; ``--results FILE`` appends it to FILE.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PDF = REPO.parent / "shared" / "corpus" / "pdf" / "broken" / "derived_20000_pages_200KB.pdf"
GB = 1 << 30


def parse_size(text: str) -> int:
    units = {"GB": GB, "MB": 1 << 20, "KB": 1 << 10}
    for u, f in units.items():
        if text.upper().endswith(u):
            return int(float(text[:-2]) * f)
    return int(text)


class Sampler(threading.Thread):
    """Every ``interval`` s: the resident memory of each child of ``pid`` with its descendants
    (a worker and MinerU's render processes); keeps the peak and a time series of the largest.
    With ``kill_above`` it kills the run's process group when a worker passes it."""

    def __init__(self, pid: int, interval: float, kill_above: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.kill_above = pid, interval, kill_above
        self.peak = 0
        self.series: list[tuple[float, int]] = []
        self.killed = False
        self.halt = threading.Event()

    def run(self) -> None:
        import psutil

        from mineru_cli.pool import children_tree_rss

        start = time.time()
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.halt.wait(self.interval):
            try:
                largest = max(children_tree_rss(root).values(), default=0)
            except psutil.Error:
                return
            self.peak = max(self.peak, largest)
            self.series.append((round(time.time() - start, 1), largest))
            if self.kill_above and largest > self.kill_above and not self.killed:
                self.killed = True
                os.killpg(self.pid, signal.SIGKILL)


def run_cli(args: list[str], tmp: Path, interval: float, kill_above: int | None, timeout: float) -> dict:
    report = tmp / "report.json"
    env = dict(os.environ, MINERU_MODEL_SOURCE="local", TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "mineru_cli", "convert", *args, "--report", str(report)]
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    sampler = Sampler(proc.pid, interval, kill_above)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    sampler.halt.set()
    seconds = time.time() - started
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else None
    return {"command": "mineru-cli convert " + " ".join(args), "exit": proc.returncode, "seconds": round(seconds, 1),
            "report": data, "sampled_peak": sampler.peak, "series": sampler.series, "guard_killed": sampler.killed,
            "output_tail": output[-2000:]}


def check_order(folder: Path, stem: str, first: int, last: int) -> str:
    cl = json.loads((folder / f"{stem}_content_list.json").read_text(encoding="utf-8"))
    idx = [item["page_idx"] for item in cl]
    in_order = idx == sorted(idx) and set(idx) == set(range(first - 1, last))
    md = (folder / f"{stem}.md").read_text(encoding="utf-8")
    per_page = md.count("Heres to the crazy ones.")
    return (f"content_list page indices {first - 1}..{last - 1} in order: {in_order}; "
            f"markdown has the page's first line {per_page} times for {last - first + 1} pages")


def machine() -> str:
    import psutil

    from importlib.metadata import version

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.platform()}, Python {platform.python_version()}, {psutil.cpu_count()} CPUs, "
            f"{psutil.virtual_memory().total / GB:.0f} GiB RAM, mineru {version('mineru')}; "
            f"load average at start {load}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pdf", default=str(DEFAULT_PDF))
    ap.add_argument("--pages", default="1-20000")
    ap.add_argument("--window-pages", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--unwindowed-limit", default="3GB")
    ap.add_argument("--unwindowed-timeout", type=int, default=120)
    ap.add_argument("--skip-windowed", action="store_true")
    ap.add_argument("--skip-unwindowed", action="store_true")
    ap.add_argument("--results", help="append the Markdown section to this file")
    a = ap.parse_args()
    pdf = Path(a.pdf)
    first, last = (int(x) for x in a.pages.split("-"))
    limit = parse_size(a.unwindowed_limit)
    lines = [f"## Page windows vs one piece: {pdf.name} ({dt.date.today().isoformat()})", "",
             f"Machine: {machine()}.", ""]

    if not a.skip_windowed:
        with tempfile.TemporaryDirectory(prefix="bench-windows-") as tmp:
            args = [str(pdf), "-o", f"{tmp}/out", "--pages", a.pages, "--window-pages", str(a.window_pages),
                    "--workers", str(a.workers), "--max-pages", "0", "--max-worker-memory", "3GB"]
            r = run_cli(args, Path(tmp), 0.5, 4 * GB, timeout=4 * 3600)
            doc = (r["report"] or {}).get("documents", [{}])[0]
            peak = (r["report"] or {}).get("summary", {}).get("peak_worker_rss", 0)
            order = check_order(Path(tmp) / "out" / pdf.name, pdf.stem, first, last) if doc.get("status") == "converted" else "-"
            windows = [a_ for a_ in doc.get("attempts", []) if a_.get("pages")]
            per_window = sorted(a_["seconds"] for a_ in windows)
            merge = next((a_["seconds"] for a_ in doc.get("attempts", []) if a_.get("task") == "merge"), None)
            lines += ["### Windowed", "", f"Command: `{r['command'].replace(tmp, '$TMP')}`", "",
                      f"- result: exit {r['exit']}, {doc.get('status')} {doc.get('pages')} pages, "
                      f"{len(windows)} windows of {a.window_pages} pages",
                      f"- wall time: {r['seconds']:.0f} s ({(last - first + 1) / max(r['seconds'], 1):.1f} pages/s); "
                      f"window task median {per_window[len(per_window) // 2] if per_window else 0:.1f} s, "
                      f"merge {merge} s",
                      f"- peak worker RSS: {peak / 1e6:.0f} MB (report, mineru-cli's monitor), "
                      f"{r['sampled_peak'] / 1e6:.0f} MB (sampled by this script)",
                      f"- {order}", ""]
            print("\n".join(lines[-7:]), flush=True)

    if not a.skip_unwindowed:
        with tempfile.TemporaryDirectory(prefix="bench-unwindowed-") as tmp:
            args = [str(pdf), "-o", f"{tmp}/out", "--pages", a.pages, "--window-pages", "0", "--workers", "1",
                    "--max-pages", "0", "--max-worker-memory", a.unwindowed_limit,
                    "--timeout", str(a.unwindowed_timeout), "--retries", "0"]
            r = run_cli(args, Path(tmp), 1.0, limit + GB, timeout=a.unwindowed_timeout + 120)
            doc = (r["report"] or {}).get("documents", [{}])[0]
            growth = [f"{t:.0f} s: {rss / 1e9:.2f} GB" for t, rss in r["series"][::max(1, len(r["series"]) // 12)]]
            lines += ["### Unwindowed (bounded)", "", f"Command: `{r['command'].replace(tmp, '$TMP')}`", "",
                      f"- result: exit {r['exit']}, {doc.get('status')}: {doc.get('reason')}",
                      f"- stopped after {r['seconds']:.0f} s; peak worker RSS sampled {r['sampled_peak'] / 1e9:.2f} GB"
                      + ("; this script's guard killed the run" if r["guard_killed"] else ""),
                      f"- growth of the worker's RSS: {'; '.join(growth)}", ""]
            print("\n".join(lines[-5:]), flush=True)

    text = "\n".join(lines) + "\n"
    if a.results:
        with open(a.results, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
