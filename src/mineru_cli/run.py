"""Run the batch: the planned documents through an executor, their results to the committer,
and the report's last word on each (converted, failed, interrupted), then the exit code.

One document is a :class:`DocState`: its tasks (one, or one per page window and a merge),
their attempts, and the ``--retry-ocr`` state. SIGINT/SIGTERM: the first stops starting new
tasks and gives running ones ``GRACE_SECONDS``; the second stops at once.

Must not: discover, plan or read done-records (``convert`` does that before), talk to an
executor other than through ``executor.Executor``, or write to OUTPUT except through
``commits.Committer`` (Ray workers commit themselves).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field

from . import ocr_retry
from .commits import Committer
from .errors import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM
from .executor import Executor, open_executor
from .jobs import Job, Lane
from .plan import PlannedDocument
from .records import needs_new_mtime, new_record, write_staged_record
from .report import DocumentReport, Reporter
from .settings import Settings
from .store import Output
from .tasks import attempt_entry, default_timeout, jobs_for, mineru_version, render_job, task_base

GRACE_SECONDS = float(os.environ.get("MINERU_CLI_GRACE_SECONDS", "10"))


@dataclass
class DocState:
    """Parent-side state of one document being converted."""

    planned: PlannedDocument
    report: DocumentReport
    windows_left: int = 0
    window_dirs: list[str] = field(default_factory=list)
    failed: bool = False
    attempts: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    fingerprint: str | None = None
    ocr_tier: str | None = None  # --retry-ocr: the tier an OCR reconversion runs at (None: none)
    ocr_why_not: str = ""
    ocr_first: dict | None = None  # --retry-ocr: the first conversion, once it was retried


LATE_SIGNALS: list[int] = []  # received after convert.run_convert stopped raising, before _Signals


class _Signals:
    """SIGINT/SIGTERM: the first stops starting new documents; the second kills at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGINT, signal.SIGTERM):
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


def run_batch(s: Settings, out: Output, planned: list[PlannedDocument], lanes: list[Lane], tier: str,
              backend: str, rep: Reporter, hidden_ignored: int, refresh_mtimes: bool = True) -> int:
    """Convert and commit what ``planned`` says (``plan.plan``), report every document, write
    ``--report``, and return the exit code (0, 1, 130, 143). ``lanes``: the worker layout
    (``backend.worker_lanes``), fitted to the work; ``refresh_mtimes``: whether touched, finished
    inputs get their new time in their done-record (only under the writer lock)."""
    states, to_convert, to_commit, to_render = _start_reports(planned, out, rep, refresh_mtimes)
    rep.extra["hidden_ignored"] = hidden_ignored
    rep.extra["backend"] = backend
    lanes = fit_lanes(lanes, sum(max(1, len(st.planned.windows)) for st in to_convert) + len(to_render))
    rep.extra["workers"] = sum(l.workers for l in lanes)
    rep.extra["tier"] = tier
    # largest first (pages, else bytes) so one big file does not start last
    if s.order == "size":
        to_convert.sort(key=lambda st: (-(st.planned.pages or 0), -st.planned.source.size))
    rep.start(len(to_convert) + len(to_commit) + len(to_render))
    if s.retry_ocr:
        ocr_retry.assign_ocr_tier(to_convert, tier, rep.warn)

    committer = Committer(out, rep, threads=1 if out.is_local else min(8, s.max_concurrency),
                          upload_attempts=s.retries + 1)
    for st in to_commit:
        committer.start(st, st.planned.record or {})
    run_dir = tempfile.mkdtemp(prefix="mineru-cli-run-")
    try:
        interrupted, started_docs = _drive(s, out, states, to_convert, to_render, lanes, backend, rep, committer,
                                           run_dir)
    finally:
        committer.shutdown()
        _collect_worker_logs(run_dir, s.log_file)
        shutil.rmtree(run_dir, ignore_errors=True)

    _settle_unfinished(states, interrupted, started_docs, rep)
    rep.stop()
    rep.extra["interrupted"] = signal.Signals(interrupted).name if interrupted else None
    if s.report:
        rep.write_json(s.report)
    rep.write_html(s.html_report)
    rep.print_summary(interrupted=rep.extra["interrupted"])
    if interrupted is not None:
        return EXIT_SIGINT if interrupted == signal.SIGINT else EXIT_SIGTERM
    return EXIT_FAILED if any(d.status == "failed" for d in rep.docs) else EXIT_OK


def _start_reports(planned: list[PlannedDocument], out: Output, rep: Reporter,
                   refresh_mtimes: bool) -> tuple[dict[str, DocState], list[DocState], list[DocState], list[DocState]]:
    """One report entry per planned document: skipped and failed ones are final here (touched,
    finished inputs get their new time first, ``records.refresh_mtimes``); the others become
    :class:`DocState` s, by id, and split into those to convert, those only to commit and those
    only to render (new formats from a finished result's middle JSON)."""
    states: dict[str, DocState] = {}
    to_convert: list[DocState] = []
    to_commit: list[DocState] = []
    to_render: list[DocState] = []
    touched: list[PlannedDocument] = []
    for p in planned:
        r = rep.add(DocumentReport(input=p.source.rel, tier=p.tier, pages=p.pages, type=p.source.kind))
        if p.action in ("skip", "fail"):
            r.status, r.code, r.reason = p.status or "skipped", p.code, p.reason
            if p.action == "skip" and p.code == "done":
                r.output = out.display(p.key)
                if refresh_mtimes and needs_new_mtime(p):
                    touched.append(p)
            rep.finished(r, advance=False)
            continue
        st = DocState(planned=p, report=r)
        states[p.id] = st
        {"commit": to_commit, "render": to_render}.get(p.action, to_convert).append(st)
    if touched:
        from .records import refresh_mtimes as refresh_touched

        refresh_touched(out, touched, rep.warn)
    return states, to_convert, to_commit, to_render


def _drive(s: Settings, out: Output, states: dict[str, DocState], to_convert: list[DocState],
           to_render: list[DocState], lanes: list[Lane], backend: str, rep: Reporter, committer: Committer,
           run_dir: str) -> tuple[int | None, set[str]]:
    """The loop: start the executor, submit every task, hand outcomes to :func:`_handle_outcome`
    and finished commits to the report, until all is done or a signal stops it. Returns the
    signal that stopped the run (None: none) and the documents a worker held then."""
    version = mineru_version()
    interrupted: int | None = None
    started_docs: set[str] = set()  # documents a worker was busy with when the run was interrupted
    pool: Executor | None = None
    try:
        with _Signals() as sig:
            if to_convert or to_render:
                pool = open_executor(s.executor, lanes, run_dir=run_dir, max_tasks=s.max_tasks_per_worker,
                                     max_memory=None if s.executor == "ray" else _memory_limit(s, lanes),
                                     retries=s.retries, quiet_mineru=s.verbose < 2,
                                     on_attempt=lambda job, res: _record_attempt(states, job, res),
                                     ray_address=s.ray_address, gpu=backend in ("vllm", "lmdeploy"), warn=rep.warn)
                for st in to_convert:
                    for job in jobs_for(st, s, out, run_dir):
                        pool.submit(job)
                for st in to_render:
                    pool.submit(render_job(st, s, out, run_dir))
            grace_deadline: float | None = None
            while True:
                if sig.received is not None and interrupted is None:
                    interrupted = sig.received
                    grace_deadline = time.time() + GRACE_SECONDS
                    rep.warn(f"received {signal.Signals(interrupted).name}: finishing running documents "
                             f"(up to {GRACE_SECONDS:.0f} s), starting no new ones")
                if pool is not None:
                    stopping = interrupted is not None
                    if stopping and (sig.count > 1 or (grace_deadline and time.time() > grace_deadline)):
                        break
                    for oc in pool.poll(timeout=0.2, stopping=stopping):
                        if stopping and _stopped_by_interrupt(oc):
                            # a signal sent to the whole process group (Ctrl-C, systemd, timeout(1))
                            # also stops the workers: not a crash, the document was interrupted
                            states[oc.job.task["doc"]].attempts.append(attempt_entry(oc.job, oc.result, "interrupted"))
                            started_docs.add(oc.job.task["doc"])
                            continue
                        _handle_outcome(oc, states, s, out, pool, rep, committer.start, version, run_dir)
                    pool_done = pool.idle or (stopping and not pool.running())
                else:
                    pool_done = True
                    if committer.pending:  # only commits of staged results: wait for one, not a fixed nap
                        committer.wait_for_one(timeout=0.2)
                committer.drain(block=False)
                if pool_done and not committer.pending:
                    break
            if pool is not None:
                if interrupted is not None:
                    pool.unqueue()  # queued, never taken by a worker: not started (a second signal skips poll)
                    started_docs.update(job.task["doc"] for job in pool.running())
                # the largest resident memory one worker (with MinerU's render processes) reached
                rep.extra["peak_worker_rss"] = max(pool.peak_memory().values(), default=0)
                pool.close(kill=interrupted is not None)
                pool = None
            committer.drain(block=True)
    finally:
        if pool is not None:
            pool.close(kill=True)
    return interrupted, started_docs


def _settle_unfinished(states: dict[str, DocState], interrupted: int | None, started_docs: set[str],
                       rep: Reporter) -> None:
    """The last word on documents still pending: interrupted (failed when a worker had started
    them, else skipped as not started), or, without a signal, an internal error."""
    for st in states.values():
        r = st.report
        if r.status == "pending":
            if interrupted is not None:
                started = bool(st.attempts) or bool(st.window_dirs) or st.planned.id in started_docs
                r.status = "failed" if started else "skipped"
                r.code = "interrupted"
                name = signal.Signals(interrupted).name
                r.reason = (f"interrupted by {name} while converting; a rerun resumes" if started
                            else f"not started: run interrupted by {name}; a rerun resumes")
                r.set_attempts(st.attempts)
            else:
                r.status, r.code, r.reason = "failed", "internal", "internal error: no outcome recorded"
            rep.finished(r, advance=False)


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


def _stopped_by_interrupt(oc) -> bool:
    """A failed attempt whose worker died (signal or exit code) while the run was stopping."""
    return not oc.result.get("ok") and oc.result.get("code") in ("worker_killed", "worker_crashed", "interrupted")


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


def _record_attempt(states: dict[str, DocState], job: Job, res: dict) -> None:
    st = states[job.task["doc"]]
    st.attempts.append(attempt_entry(job, res, "retrying"))


def _handle_outcome(oc, states, s: Settings, out: Output, pool: Executor, rep: Reporter, start_commit,
                    mineru_version, run_dir) -> None:
    import logging

    log = logging.getLogger("mineru_cli")
    job, res = oc.job, oc.result
    st = states[job.task["doc"]]
    p = st.planned
    st.seconds += res.get("seconds", oc.seconds) or 0.0
    if res.get("traceback"):
        log.error("traceback for %s (attempt %d):\n%s", p.source.rel, job.attempt, res["traceback"])
    kind = job.meta[0]
    if not res.get("ok"):
        st.attempts.append(attempt_entry(job, res, "failed"))
        if st.failed:
            return
        st.failed = True
        reason = res.get("reason", "failed")
        if kind == "window":
            reason = f"pages {job.meta[2]}-{job.meta[3]}: {reason}"
        _fail(st, rep, res.get("code"), reason)
        return
    st.attempts.append(attempt_entry(job, res, "ok"))
    if st.failed:
        return
    if kind == "render":  # the old record, now listing the new formats too (done-record written last)
        old = p.record or {}
        record = dict(old, settings=p.settings_key, rendered={"formats": list(p.render_formats), "at": time.time()})
        start_commit(st, record, keep=list(old.get("files") or []))
        return
    if kind == "window":
        st.windows_left -= 1
        if st.windows_left == 0:
            staging = os.path.join(out.staging_root, p.id)
            task = dict(task_base(st, s, out, run_dir), kind="merge", task_id=f"{p.id}:merge", staging=staging,
                        windows=list(st.window_dirs) if s.executor != "ray"
                        else [os.path.basename(w) for w in st.window_dirs])
            pool.submit(Job(task=task, timeout=default_timeout(s, (p.pages or 0) // 10), meta=("merge", p.id)))
        return
    _finish_conversion(st, res, s, out, rep, start_commit, mineru_version,
                       resubmit=lambda st: [pool.submit(j) for j in jobs_for(st, s, out, run_dir)])


def _finish_conversion(st: DocState, res: dict, s: Settings, out: Output, rep: Reporter, start_commit,
                       mineru_version, resubmit=None) -> None:
    """A document's conversion succeeded (``res``, the worker's result): an OCR retry when
    ``--retry-ocr`` asks for one, else its quality warnings, then its staged record and commit
    (or, from a Ray worker that committed it, the report entry)."""
    from .sniff import fingerprint_local

    p = st.planned
    quality = dict(res.get("quality") or {})
    r = st.report
    r.pages = res.get("pages", p.pages)
    retry, why = ocr_retry.ocr_retry_decision(p.source.kind, quality, retry_ocr=s.retry_ocr, ocr_mode=p.ocr_mode,
                                    ocr_tier=st.ocr_tier, why_not=st.ocr_why_not)
    if retry and (resubmit is None or res.get("committed")):
        retry, why = False, "--retry-ocr: not available with --executor ray (the worker committed the result)"
    if retry:  # convert again with OCR; the first conversion stays in the record
        ocr_retry.begin_retry(st, why, quality)
        resubmit(st)
        return
    ocr_retry.note_outcome(quality, st.ocr_first, why)
    r.quality = quality
    no_text_msg = ("no_text: the result has no text" + ("; scans and images need OCR: tier basic and its models "
                   "(mineru-kit models download --tier basic)" if p.tier == "flash" else ""))
    if quality.get("no_text"):
        r.warnings.append(no_text_msg)
    if quality.get("garbled_text"):
        r.warnings.append(f"garbled_text: the text layer looks like mojibake (score {quality.get('garbled_score')})")
    if quality.get("empty_pages"):
        r.warnings.append(f"{quality['empty_pages']} empty pages")
    if why and st.ocr_first is None:
        r.warnings.append(why)
    if s.on_empty == "fail" and quality.get("no_text"):
        _fail(st, rep, "no_text", no_text_msg + " (--on-empty fail)")
        return
    if res.get("committed"):  # a Ray worker already committed it (done-record written last)
        r.status, r.code, r.reason = "converted", None, "converted"
        r.warnings.extend(res.get("commit_warnings") or [])
        r.seconds = round(st.seconds, 3)
        r.set_attempts(st.attempts)
        r.output = out.display(p.key)
        rep.finished(r)
        return
    fp = p.fingerprint
    if fp is None and p.source.is_local:
        try:
            fp = fingerprint_local(p.source.uri)
        except OSError as exc:
            _fail(st, rep, "unreadable", f"corrupt or unreadable: input vanished: {exc}")
            return
    record = new_record(p, fingerprint=fp, pages=r.pages, seconds=st.seconds, quality=quality,
                        attempts=st.attempts, mineru_version=mineru_version)
    # the staged record right away (main thread): a run killed while commits are queued (slow
    # uploads) leaves results the next run commits without converting again
    write_staged_record(os.path.join(out.staging_root, p.id), record)
    start_commit(st, record)


def _fail(st: DocState, rep: Reporter, code: str | None, reason: str) -> None:
    r = st.report
    r.status, r.code, r.reason = "failed", code, reason
    r.seconds = round(st.seconds, 3)
    r.set_attempts(st.attempts)
    rep.finished(r)
