"""Run the batch: take planned documents from the stream as there is room, send their tasks
through an executor, hand outcomes to ``outcomes``, results to the committer, report each
document as it ends, then the exit code.

One document being converted is an ``outcomes.DocState`` (its tasks, attempts, ``--retry-ocr``
state), held only while it is in flight. SIGINT/SIGTERM: the first stops starting new tasks
and gives running ones ``GRACE_SECONDS``; the second stops at once.

Must not: discover, plan or read done-records (``pipeline`` does, in its threads), talk to an
executor other than through ``executor.Executor``, or write to OUTPUT except through
``commits.Committer`` and the done-record reader's index (Ray workers commit themselves).
"""

from __future__ import annotations

import os
import shutil
import heapq
import signal
import time

from . import ocr_retry, tempdirs
from .commits import Committer
from .errors import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, CliError
from .executor import Executor, open_executor
from .jobs import Job, Lane
from .outcomes import DocState, handle_outcome, record_attempt, settle_unfinished, stopped_by_interrupt
from .plan import PlannedDocument
from .records import needs_new_mtime
from .sniff import IMAGE_TYPES, PDF_TYPES
from .report import DocumentReport, Reporter
from .settings import Settings
from .store import Output
from .tasks import attempt_entry, jobs_for, mineru_version, render_job

GRACE_SECONDS = float(os.environ.get("MINERU_CLI_GRACE_SECONDS", "10"))
COMMIT_BACKLOG = 64  # commits waiting (slow uploads) before the run takes no new document to convert
INDEX_REPAIR_MIN = 100  # done-records a rerun read that the index lacked: it then writes them to the index


LATE_SIGNALS: list[int] = []  # received after convert.run_convert stopped raising, before _Signals


IGNORED_AT_START: set[int] = set()  # SIGINT/SIGTERM ignored when convert.run_convert began


def watched_signals() -> list[int]:
    """SIGINT and SIGTERM, less those this process ignores (``SIG_IGN`` now, or when
    ``convert.run_convert`` began: ``IGNORED_AT_START``): a command started in the background
    by a non-interactive shell (``cmd &``) inherits SIGINT ignored, and a Ctrl-C meant for the
    foreground job must not stop it (POSIX job control; Python itself leaves an ignored SIGINT
    alone at start-up)."""
    return [sig for sig in (signal.SIGINT, signal.SIGTERM)
            if sig not in IGNORED_AT_START and signal.getsignal(sig) is not signal.SIG_IGN]


class _Signals:
    """SIGINT/SIGTERM: the first stops starting new documents; the second kills at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_Signals":
        for sig in watched_signals():
            self._old[sig] = signal.signal(sig, self._handle)
        while LATE_SIGNALS:
            self._handle(LATE_SIGNALS.pop(0), None)
        return self

    def _handle(self, signum, _frame) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def run_batch(s: Settings, out: Output, stream, lanes: list[Lane], tier: str, backend: str, rep: Reporter, *,
              locker, reader, window_tasks: int | None = None) -> int:
    """Convert and commit what ``stream`` (a ``pipeline.DocumentStream``) hands out, report
    every document as it ends, write ``--report``, and return the exit code (0, 1, 130, 143).

    ``lanes``: the worker layout (``backend.worker_lanes``), fitted to ``window_tasks`` (the
    tasks of the whole run when the walk ended inside the first window, else None: every
    worker); ``locker``: the writer lock of OUTPUT, taken (``ensure()``) before the first
    document that writes there, tried (``try_acquire()``) for refreshing the times of touched
    inputs; ``reader``: the done-record reader (``records.open_record_reader``), told of every
    finished document (``note_done``) and closed at the end. Raises ``errors.OutputLocked``
    (exit 4) when another run holds the lock the first time it is needed.
    """
    rep.extra["backend"] = backend
    rep.extra["tier"] = tier
    if window_tasks is not None:
        lanes = fit_lanes(lanes, window_tasks)
    rep.extra["workers"] = sum(l.workers for l in lanes)
    if stream.discovery_ended:
        rep.discovery_done(stream.found_count)
    else:
        rep.found(stream.found_count)
    rep.start(None)
    committer = Committer(out, rep, threads=1 if out.is_local else min(8, s.max_concurrency),
                          upload_attempts=s.retries + 1, on_done=reader.note_done)
    run_dir = tempdirs.make("run")
    batch = _Batch(s, out, stream, lanes, backend, rep, committer, locker, reader, run_dir, tier)
    try:
        interrupted = batch.drive()
    finally:
        committer.shutdown()
        _collect_worker_logs(run_dir, s.log_file)
        shutil.rmtree(run_dir, ignore_errors=True)
    batch.settle(interrupted)
    rep.extra["hidden_ignored"] = stream.found.hidden_ignored
    rep.extra["results_ignored"] = stream.found.results_ignored
    rep.extra["discovery_complete"] = interrupted is None
    batch.close_index()
    if reader.index.problem:
        rep.warn(reader.index.problem)
    rep.extra["done_records"] = {"from_index": reader.from_index, "read": reader.from_storage,
                                 "indexed": reader.index.written, "index_problem": reader.index.problem,
                                 "checked_in_helper": reader.in_helper,
                                 "finished_in_helper": reader.finished_in_helper}
    rep.extra["parent_peak_rss"] = parent_peak_rss()
    rep.stop()
    rep.extra["interrupted"] = signal.Signals(interrupted).name if interrupted else ("error" if batch.fatal else None)
    if batch.fatal is not None:
        rep.extra["error"] = str(batch.fatal)
    if s.report:
        rep.write_json(s.report)
    rep.write_html(s.html_report)
    rep.close_events()
    rep.print_summary(interrupted=rep.extra["interrupted"])
    if batch.fatal is not None:
        raise batch.fatal  # its exit code (3); the report and the events file are written
    if interrupted is not None:
        return EXIT_SIGINT if interrupted == signal.SIGINT else EXIT_SIGTERM
    return EXIT_FAILED if rep.counts.get("failed") else EXIT_OK


class _Counted:
    """An executor that counts its outstanding jobs, in all and per document (every submitted
    job ends as exactly one outcome: ``executor.Executor.poll``)."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool
        self.outstanding = 0
        self.per_doc: dict[str, int] = {}

    def submit(self, job: Job) -> None:
        self.outstanding += 1
        doc = job.task["doc"]
        self.per_doc[doc] = self.per_doc.get(doc, 0) + 1
        self.pool.submit(job)

    def poll(self, timeout: float, stopping: bool) -> list:
        outcomes = self.pool.poll(timeout=timeout, stopping=stopping)
        for oc in outcomes:
            self.outstanding -= 1
            doc = oc.job.task["doc"]
            left = self.per_doc.get(doc, 1) - 1
            if left:
                self.per_doc[doc] = left
            else:
                self.per_doc.pop(doc, None)
        return outcomes

    def __getattr__(self, name: str):
        return getattr(self.pool, name)


class _Batch:
    """One run's loop over the stream: take documents as there is room, submit their tasks,
    hand outcomes to :func:`_handle_outcome`, report commits, until the stream and the work are
    done or a signal stops it (``drive``), then settle what is left (``settle``).

    Room: a document is taken to convert only while fewer than ``2 * workers + 4`` tasks are
    outstanding in the executor and fewer than ``COMMIT_BACKLOG`` commits wait; finished or
    skipped documents are reported at once. Only documents being converted or committed are
    held (:class:`DocState`, dropped when they end), so the parent's memory does not grow with
    the run. ``--order size``: the next document to convert is the largest of up to
    ``pipeline.ORDER_WINDOW`` taken ahead."""

    def __init__(self, s, out, stream, lanes, backend, rep, committer, locker, reader, run_dir, tier) -> None:
        self.s, self.out, self.stream, self.lanes, self.backend = s, out, stream, lanes, backend
        self.rep, self.committer, self.locker, self.reader, self.run_dir = rep, committer, locker, reader, run_dir
        self.tier = tier
        self.states: dict[str, DocState] = {}
        self.ready: list = []  # DocStates to convert or render (a heap with --order size)
        self.touched: list[PlannedDocument] = []
        self.pool: _Counted | None = None
        self.version = mineru_version()
        self.started_docs: set[str] = set()
        # a run-wide error from the stream (an S3 listing of OUTPUT that fails for good): the run
        # stops as for a signal (running documents finish), writes its report, then exits 3
        self.fatal: CliError | None = None
        self.workers = sum(l.workers for l in lanes)
        self.max_load = 2 * self.workers + 4
        self.ocr: tuple | None = None
        self._seq = 0
        self._warned_touch = False
        self._discovery_reported = False
        self._index_failed = False

    # --- intake ---------------------------------------------------------------------------------

    def _room(self) -> bool:
        from .pipeline import ORDER_WINDOW

        ahead = ORDER_WINDOW if self.s.order == "size" else self.max_load
        return len(self.ready) < ahead and len(self.committer.pending) < COMMIT_BACKLOG

    def intake(self, wait: float) -> bool:
        """Take what the stream has ready, while there is room and for at most 0.2 s (waiting up
        to ``wait`` seconds for the first item); True when something was taken."""
        took = False
        until = time.monotonic() + 0.2  # then back to the loop: signals, outcomes, commits
        while self._room() and time.monotonic() < until:
            items = self.stream.take(64, wait=wait if not took else 0.0)
            if not items:
                break
            took = True
            for item in items:
                self._take(item)
            if len(self.states) > 4 * self.max_load + COMMIT_BACKLOG:
                break
        if self.stream.discovery_ended and not self._discovery_reported:
            self._discovery_reported = True
            self.rep.extra["discovery_ended"] = round(self.stream.discovery_ended, 3)
            self.rep.discovery_done(self.stream.found_count)
        else:
            self.rep.found(self.stream.found_count)
        return took

    def _take(self, item) -> None:
        if isinstance(item, tuple):  # ("warn", input, reason)
            self.rep.warn(item[2])
            return
        p: PlannedDocument = item
        if p.action == "skip" and p.code == "done":  # a finished document: the common case of a rerun
            if needs_new_mtime(p):
                self.touched.append(p)
                if len(self.touched) >= 500:
                    self.refresh_touched()
            self.rep.skipped(p.source.rel, p.code, p.reason, p.tier, p.pages, self.out.display(p.key), p.source.kind)
            return
        r = self.rep.add(DocumentReport(input=p.source.rel, tier=p.tier, pages=p.pages, type=p.source.kind))
        if p.action in ("skip", "fail"):
            r.status, r.code, r.reason = p.status or "skipped", p.code, p.reason
            if p.action == "skip" and p.code == "done":
                r.output = self.out.display(p.key)
                if needs_new_mtime(p):
                    self.touched.append(p)
                    if len(self.touched) >= 500:
                        self.refresh_touched()
            self.rep.finished(r, advance=False)
            return
        self.locker.ensure()
        st = DocState(planned=p, report=r)
        self.states[p.id] = st
        if p.action == "commit":
            self.committer.start(st, p.record or {})
            return
        if p.action == "convert" and self.s.retry_ocr and (p.source.kind in PDF_TYPES or p.source.kind in IMAGE_TYPES):
            if self.ocr is None:
                self.ocr = ocr_retry.ocr_retry_tier(self.tier)
                if self.ocr[0] is None:
                    self.rep.warn(f"{self.ocr[1]}; flagged documents keep their first result")
            st.ocr_tier, st.ocr_why_not = self.ocr
        self._seq += 1
        if self.s.order == "size":
            heapq.heappush(self.ready, (-(p.pages or 0), -p.source.size, self._seq, st))
        else:
            self.ready.append((0, 0, self._seq, st))

    def refresh_touched(self) -> None:
        """Touched, finished inputs get their new time in their done-record, under the writer
        lock when it can be had (``records.refresh_mtimes``)."""
        touched, self.touched = self.touched, []
        if not touched:
            return
        if self.locker.try_acquire():
            from .records import refresh_mtimes as refresh_touched

            refresh_touched(self.out, touched, self.rep.warn, on_written=self.reader.note_done)
        elif not self._warned_touch:
            self._warned_touch = True
            self.rep.info("modification times in done-records not updated: OUTPUT is locked by another run "
                          "or not writable; the next run hashes those inputs again")

    def flush_index(self) -> None:
        """Merge what the run learnt into the done-record index when it is due (under the
        writer lock, once the run holds it). A failure is one warning: the results stand."""
        if self._index_failed:
            return
        try:
            self.reader.flush_due(self.locker.held)
        except Exception as exc:  # noqa: BLE001 - the index only saves reads
            self._index_failed = True
            self.rep.warn(f"could not write the done-record index on OUTPUT ({type(exc).__name__}: {exc}); "
                          "the next run reads the done-records one by one")

    def close_index(self) -> None:
        """End of run: merge what the run learnt into the done-record index. A run that wrote
        holds the lock; a rerun that only read done-records the index lacked (an OUTPUT of an
        older version, a run killed before its last merge) takes the lock for it when it is
        free and there are at least ``INDEX_REPAIR_MIN`` of them (or a tenth of the run)."""
        def allowed() -> bool:
            if self._index_failed:
                return False
            if self.locker.held:
                return True
            pending = self.reader.index.pending
            return pending >= min(INDEX_REPAIR_MIN, max(1, self.rep.total // 10)) and self.locker.try_acquire()

        try:
            self.reader.close(write_index=allowed)
        except Exception as exc:  # noqa: BLE001 - the index only saves reads: the results stand
            self.rep.warn(f"could not write the done-record index on OUTPUT ({type(exc).__name__}: {exc}); "
                          "the next run reads the done-records one by one")

    # --- dispatch -------------------------------------------------------------------------------

    def _open_pool(self) -> None:
        s = self.s
        pool = open_executor(s.executor, self.lanes, run_dir=self.run_dir, max_tasks=s.max_tasks_per_worker,
                             max_memory=None if s.executor == "ray" else _memory_limit(s, self.lanes),
                             retries=s.retries, quiet_mineru=s.verbose < 2,
                             on_attempt=lambda job, res: record_attempt(self.states, job, res),
                             ray_address=s.ray_address, gpu=self.backend in ("vllm", "lmdeploy"), warn=self.rep.warn)
        self.pool = _Counted(pool)

    def dispatch(self) -> None:
        while self.ready and (self.pool is None or self.pool.outstanding < self.max_load):
            if self.pool is None:
                self._open_pool()
            st = (heapq.heappop(self.ready) if self.s.order == "size" else self.ready.pop(0))[3]
            jobs = ([render_job(st, self.s, self.out, self.run_dir)] if st.planned.action == "render"
                    else jobs_for(st, self.s, self.out, self.run_dir))
            for job in jobs:
                self.pool.submit(job)
            if "first_dispatch" not in self.rep.extra:
                self.rep.extra["first_dispatch"] = round(time.time(), 3)

    def forget_finished(self) -> None:
        """Drop the DocStates of documents that ended and have no task left."""
        per_doc = self.pool.per_doc if self.pool is not None else {}
        for doc_id in [k for k, st in self.states.items() if st.report.status != "pending" and k not in per_doc]:
            del self.states[doc_id]

    # --- the loop -------------------------------------------------------------------------------

    def drive(self) -> int | None:
        """Run until all is done or a signal stops it; returns the signal (None: none)."""
        interrupted: int | None = None
        s, rep, committer = self.s, self.rep, self.committer
        try:
            with _Signals() as sig:
                grace_deadline: float | None = None
                while True:
                    if sig.received is not None and interrupted is None:
                        interrupted = sig.received
                        grace_deadline = self._stop_taking(f"received {signal.Signals(interrupted).name}:")
                    stopping = interrupted is not None or self.fatal is not None
                    took = False
                    if not stopping:
                        busy = bool(self.ready) or (self.pool is not None and not self.pool.idle) or committer.pending
                        try:
                            took = self.intake(wait=0.0 if busy else 0.1)
                        except CliError as exc:
                            self.fatal = exc
                            grace_deadline = self._stop_taking(f"stopping: {exc};")
                            continue
                        self.dispatch()
                    pool = self.pool
                    if pool is not None:
                        if stopping and (sig.count > 1 or (grace_deadline and time.time() > grace_deadline)):
                            break
                        for oc in pool.poll(timeout=0.0 if took else 0.1, stopping=stopping):
                            if stopping and stopped_by_interrupt(oc):
                                # a signal sent to the whole process group (Ctrl-C, systemd, timeout(1))
                                # also stops the workers: not a crash, the document was interrupted
                                self.states[oc.job.task["doc"]].attempts.append(
                                    attempt_entry(oc.job, oc.result, "interrupted"))
                                self.started_docs.add(oc.job.task["doc"])
                                continue
                            handle_outcome(oc, self.states, s, self.out, pool, rep, committer.start, self.version,
                                            self.run_dir)
                        pool_done = pool.idle or (stopping and not pool.running())
                    else:
                        pool_done = True
                        if committer.pending and not took:
                            committer.wait_for_one(timeout=0.1)
                    committer.drain(block=False)
                    rep.tick()
                    self.forget_finished()
                    self.flush_index()
                    stream_done = stopping or (self.stream.done and not self.ready)
                    if stream_done and pool_done and not committer.pending:
                        break
                if self.pool is not None:
                    if interrupted is not None or self.fatal is not None:
                        self.pool.unqueue()  # queued, never taken by a worker: not started (a second signal skips poll)
                        self.started_docs.update(job.task["doc"] for job in self.pool.running())
                    # the largest resident memory one worker (with MinerU's render processes) reached
                    rep.extra["peak_worker_rss"] = max(self.pool.peak_memory().values(), default=0)
                    self.pool.close(kill=interrupted is not None or self.fatal is not None)
                    self.pool = None
                committer.drain(block=True)
                self.refresh_touched()
        finally:
            if self.pool is not None:
                self.pool.close(kill=True)
        return interrupted

    def _stop_taking(self, why: str) -> float:
        """A signal or a run-wide error (``why`` opens the warning line): take no more
        documents, hand back what the stream holds (``leftover``) and what was taken but never
        submitted; returns the end of the grace period (epoch seconds) for running documents."""
        self.rep.warn(f"{why} finishing running documents (up to {GRACE_SECONDS:.0f} s), starting no new ones")
        self.leftover = self.stream.stop()
        self._unready()
        return time.time() + GRACE_SECONDS

    def _unready(self) -> None:
        """Interrupted: documents taken but never submitted go back to not started."""
        for _a, _b, _n, st in self.ready:
            self.states.setdefault(st.planned.id, st)
        self.ready = []

    def settle(self, interrupted: int | None) -> None:
        """The last word on documents still pending: interrupted (failed when a worker had
        started them, else skipped as not started), or, without a signal, an internal error;
        and, after a signal, every document walked but not taken: not started."""
        stopped = f"run stopped: {self.fatal}" if self.fatal is not None else None
        settle_unfinished(self.states, interrupted, self.started_docs, self.rep, stopped=stopped)
        if interrupted is None and stopped is None:
            return
        cause = stopped or f"run interrupted by {signal.Signals(interrupted).name}"
        not_started = f"not started: {cause}; a rerun resumes"
        for item in getattr(self, "leftover", []):
            report_not_started(item, self.rep, not_started)


def report_not_started(item, rep: Reporter, not_started: str) -> None:
    """Report one item a stream handed back unrun (``pipeline.DocumentStream.stop``): a planned
    document to skip or fail keeps that status, one to convert is not started, and so is each
    document walked but not planned (``("unplanned", None, docs)``)."""
    if isinstance(item, tuple):
        if item[0] == "warn":
            rep.warn(item[2])
        elif item[0] == "unplanned":
            for d in item[2]:
                r = rep.add(DocumentReport(input=d.rel, status="skipped", code="interrupted", reason=not_started))
                rep.finished(r, advance=False)
        return
    p = item
    if p.action in ("skip", "fail"):
        r = rep.add(DocumentReport(input=p.source.rel, status=p.status or "skipped", code=p.code, reason=p.reason,
                                   tier=p.tier, pages=p.pages, type=p.source.kind))
    else:
        r = rep.add(DocumentReport(input=p.source.rel, status="skipped", code="interrupted", reason=not_started,
                                   tier=p.tier, pages=p.pages, type=p.source.kind))
    rep.finished(r, advance=False)


def parent_peak_rss() -> int:
    """The largest resident memory of this process so far, in bytes; the workers are not
    counted. Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's
    own address space. Not ``getrusage``'s ``ru_maxrss``, which also keeps the peak of the
    process before ``exec`` (Linux ``exec_mmap``: a CLI started by a large parent through
    ``fork`` + ``exec`` reported that parent's size). Elsewhere ``ru_maxrss`` (kilobytes on
    Linux, bytes on macOS)."""
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def fit_lanes(lanes: list[Lane], tasks: int) -> list[Lane]:
    """The lanes with no more workers than there are tasks to run first (documents, or page
    windows of a split one), in lane order; at least one worker. Starting a worker costs
    about 2 s of CPU (MinerU's import and its first parse, which imports the openai client
    among others); a second worker for one document only takes CPU from the first."""
    from dataclasses import replace

    left = max(1, tasks)
    out = []
    for lane in lanes:
        if left <= 0:
            break
        out.append(replace(lane, workers=min(lane.workers, left)))
        left -= out[-1].workers
    return out


def _collect_worker_logs(run_dir: str, log_file: str | None) -> None:
    """Append the workers' own output (MinerU warnings, native library messages) to
    ``--log-file``; without one it is dropped with the run folder."""
    folder = os.path.join(run_dir, "logs")
    if not log_file or not os.path.isdir(folder):
        return
    from .redact import redact_text

    with open(log_file, "a", encoding="utf-8") as out_fh:
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            if text.strip():
                out_fh.write(f"--- output of {name[:-4]} ---\n{redact_text(text)}\n")


def _memory_limit(s: Settings, lanes: list[Lane]) -> int | None:
    """``--max-worker-memory``, else the memory available at start divided among workers."""
    if s.max_worker_memory:
        return s.max_worker_memory
    import psutil

    workers = max(1, sum(l.workers for l in lanes))
    return int(psutil.virtual_memory().available * 0.9 / workers)
