"""The worker process's housekeeping, around what ``engine`` converts: exit with the parent,
kill MinerU's render processes left behind, the garbage collector's setting, MinerU's text
classifier skipped where the extension decides, the running-task marker the memory monitor
reads, and the tests' hold hook.

Must not: import mineru (``engine`` is the only module that does; docvortex, MinerU's detection
library, is imported lazily here), or convert anything.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

RUNNING_DIR = "running"  # under the run folder: one marker file per busy worker (``_mark_running``)


# Thresholds of the cyclic garbage collector in a worker (``gc.set_threshold``; CPython's
# default: 700, 10, 10).
WORKER_GC_THRESHOLD = (10_000, 20, 100)


def tune_gc(threshold: tuple[int, int, int] = WORKER_GC_THRESHOLD) -> None:
    """Make the worker's cyclic garbage collector run less often: move everything the MinerU
    import made into the permanent generation (``gc.freeze``: a collection no longer walks
    those objects) and raise the thresholds to ``threshold`` (allocations minus deallocations
    of tracked objects before a generation-0 pass; passes of each generation before the next
    one is examined).

    Why: MinerU's native-PDF analysis (docvortex, MinerU 4.0.12) allocates millions of
    short-lived containers, so with CPython's default (700, 10, 10) one process made about
    4,700 generation-0, 430 generation-1 and 22 full passes over the benchmark's 234 mixed
    documents. Measured on 2 cores (the bare ``mineru.parse`` loop over those documents,
    in two sittings): 20.2-22.2 s by default, 19.3-20.4 s with these thresholds (7 % less
    CPU), peak resident memory 343 -> 368 MB; mineru-cli itself, old and new interleaved:
    12.6 -> 11.7 s median, 24.3 -> 21.8 CPU s (benchmarks/RESULTS.md, fifth round). Reference
    cycles are still collected, just in larger batches."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)


# Extensions for which MinerU's type detection ends in the extension whatever its neural
# classifier says about text content (docvortex.document.detection, MinerU 4.0.12):
# ``_resolve_signatureless_csv_suffix`` returns the extension for csv/tsv and
# ``_resolve_signatureless_html_suffix`` returns "html" for html/htm/shtml, unless the label is
# a "strong" binary type (pdf, office, epub, images...), which text content never is.
_EXTENSION_DECIDES = frozenset({"csv", "tsv", "html", "htm", "shtml"})


class _ExtensionFirstMagika:
    """Stand-in for docvortex's Magika instance in a worker: for a *text* file whose
    extension decides its type anyway (``_EXTENSION_DECIDES``), answer the label "unknown"
    at once instead of running the classifier; everything else goes to the real Magika.

    Why: for a small CSV or HTML file Magika is most of MinerU's parse time (measured with
    mineru 4.0.12 on 2 cores: 20 ms of a 26 ms parse, and its onnxruntime session spins
    threads on every core, so a worker used about 1.7 cores of CPU time on such files).
    The label "unknown" goes through the same post-processing as Magika's answer
    (``_resolve_signatureless_csv_suffix`` / ``_html_suffix``), which then returns the
    extension's type: the same type MinerU would pick. The signature checks before Magika
    (RTF, OOXML/ODF/EPUB/OFD/OLE2 containers, PDF, MHTML) still run; binary content (a NUL
    byte, an image/ZIP signature, ``%PDF`` anywhere in the first 64 KiB: ``sniff.sniff_text``)
    still goes to the real Magika, so a PNG named ``.csv`` is still found to be an image and a
    PDF behind 1 KiB of text a PDF."""

    class _Label:
        class prediction:  # noqa: N801 - shape of magika's result: .prediction.output.label
            class output:  # noqa: N801
                label = "unknown"

    def __init__(self, real: Any) -> None:
        self._real = real
        self.skipped = 0

    def identify_path(self, path: Any) -> Any:
        name = os.fspath(path)
        ext = os.path.splitext(name)[1].lower().lstrip(".")
        if ext in _EXTENSION_DECIDES:
            from .sniff import sniff_text

            try:
                with open(name, "rb") as fh:
                    head = fh.read(65536)
            except OSError:
                head = b"\x00"
            if sniff_text(head, name) is not None:
                self.skipped += 1
                return self._Label
        return self._real().identify_path(path)

    def identify_bytes(self, data: bytes) -> Any:
        return self._real().identify_bytes(data)


def skip_magika_where_extension_decides() -> bool:
    """Install ``_ExtensionFirstMagika`` in this process (a worker); returns False (and changes
    nothing) when MinerU's detection module does not have the shape it was written against."""
    try:
        from docvortex.document import detection
    except ImportError:
        return False
    real = getattr(detection, "_magika", None)
    if getattr(real, "_mineru_cli", None) is not None:
        return True  # already installed
    needed = ("_resolve_signatureless_csv_suffix", "_resolve_signatureless_html_suffix", "guess_suffix_by_path")
    if real is None or not all(hasattr(detection, n) for n in needed):
        return False
    proxy = _ExtensionFirstMagika(real)

    def _magika() -> _ExtensionFirstMagika:
        return proxy

    _magika._mineru_cli = proxy  # type: ignore[attr-defined]
    detection._magika = _magika
    return True


def _exit_with_parent(interval: float = 1.0) -> None:
    """Start a thread that ends this worker, and MinerU's render processes under it, when the
    run that started it is gone (its parent pid changes: reparented after a SIGKILL of the
    run). Without it a worker in the middle of a long, hung or held document would go on alone
    after ``kill -9`` of the run, holding its memory (and its render processes) for as long
    as the document takes. ``os.getppid`` polling, not ``PR_SET_PDEATHSIG``: the latter fires
    when the parent *thread* that started the worker ends (pebble starts replacement workers
    from its own threads)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                _kill_descendants()
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="mineru-cli-parent-watch").start()


def _kill_descendants() -> None:
    """SIGKILL every process under this one (MinerU's render processes)."""
    try:
        import psutil

        kids = psutil.Process().children(recursive=True)
    except Exception:  # noqa: BLE001 - best effort on the way out
        return
    for k in kids:
        try:
            k.kill()
        except Exception:  # noqa: BLE001
            pass


def _hold_for_tests(task: dict) -> None:
    """Test hook: with ``MINERU_CLI_TEST_HOLD=<substring>`` set, a task whose input path
    contains the substring sleeps (``MINERU_CLI_TEST_HOLD_SECONDS``, default 3600) before
    converting, so a test can kill or time out the worker mid-document. With
    ``MINERU_CLI_TEST_HOLD_ONCE=<file>`` it holds only while that file does not exist yet
    (it is created when the hold starts), so a retry goes through. With
    ``MINERU_CLI_TEST_HOLD_PAGES=<first page>`` only the page window starting at that page
    (1-based) is held, with ``MINERU_CLI_TEST_HOLD_PAGES=merge`` only the merge of the windows;
    a document converted in one task is then never held."""
    needle = os.environ.get("MINERU_CLI_TEST_HOLD")
    if not needle or needle not in task.get("input", ""):
        return
    pages = os.environ.get("MINERU_CLI_TEST_HOLD_PAGES")
    if pages:
        here = "merge" if task.get("kind") == "merge" else str((task.get("window") or [""])[0])
        if here != pages:
            return
    once = os.environ.get("MINERU_CLI_TEST_HOLD_ONCE")
    if once:
        if os.path.exists(once):
            return
        with open(once, "w") as fh:
            fh.write(str(os.getpid()))
    time.sleep(float(os.environ.get("MINERU_CLI_TEST_HOLD_SECONDS", "3600")))


def _mark_running(task: dict) -> str | None:
    run_dir = task.get("run_dir")
    if not run_dir:
        return None
    path = os.path.join(run_dir, RUNNING_DIR, str(os.getpid()))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"task_id": task["task_id"], "input": task.get("input"), "started": time.time()}, fh)
    except OSError:
        return None
    return path


def _count_for_tests(task: dict) -> None:
    """Test hook: with ``MINERU_CLI_TEST_CONVERSIONS=<file>`` set, every MinerU conversion (a
    convert task, not a merge or a render) appends one line ``<task_id>\t<input>`` to that
    file, so a test can count what was converted."""
    path = os.environ.get("MINERU_CLI_TEST_CONVERSIONS")
    if path:
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(f"{task.get('task_id')}\t{task.get('input')}\n")
