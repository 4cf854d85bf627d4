"""``convert``: discover -> plan -> run -> store -> report, and the exit code.

This module wires the rooms together; each room's rules live in its own module.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .discover import discover
from .errors import (EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EnvironmentProblem, OutputLocked,
                     UsageError)
from .plan import PlannedDocument, new_record, plan
from .executor import Executor, open_executor
from .jobs import Job, Lane
from .report import DocumentReport, Reporter, setup_logging
from .settings import Settings
from .sniff import IMAGE_TYPES, PDF_TYPES
from .store import Output, RunLock, commit, open_output, probe_writable, write_staged_record

GRACE_SECONDS = float(os.environ.get("MINERU_CLI_GRACE_SECONDS", "10"))


def default_timeout(s: Settings, pages: int | None) -> float:
    """Seconds allowed for one task: ``--timeout``, else 300 + 5 per page (a 100-page text
    PDF takes about 6 s at tier flash, so this is generous; OCR tiers are slower)."""
    if s.timeout:
        return float(s.timeout)
    return 300.0 + 5.0 * (pages or 1)


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


_LATE_SIGNALS: list[int] = []  # received after run_convert stopped raising, before _Signals


class _Signals:
    """SIGINT/SIGTERM: the first stops starting new documents; the second kills at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        while _LATE_SIGNALS:
            self._handle(_LATE_SIGNALS.pop(0), None)
        return self

    def _handle(self, signum, _frame) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def _mineru_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mineru")
    except PackageNotFoundError:
        return None


class RunInterrupted(BaseException):
    """SIGINT/SIGTERM received before the batch started (discovering, planning, locking)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_convert(s: Settings) -> int:
    """Run a conversion with settings ``s``; returns the exit code (see errors.py).

    Raises UsageError (2), EnvironmentProblem (3) or OutputLocked (4) before the batch starts.
    SIGINT/SIGTERM before the batch starts (discovering and planning a large folder take a
    while) stop at once: the report lists what was found as not started, exit 130/143. Once
    documents are converting, ``_run`` handles the signals (grace period, then kill).
    """
    state: dict = {}
    _LATE_SIGNALS.clear()

    def interrupt(signum, _frame) -> None:
        if not state.get("converting"):
            raise RunInterrupted(signum)
        _LATE_SIGNALS.append(signum)  # between the lock and _run's own handlers: _Signals takes it

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run_convert(s, state)
    except RunInterrupted as exc:
        state["converting"] = True  # a second signal while writing the report is ignored
        return _interrupted_before_start(exc.signum, s, state)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _interrupted_before_start(signum: int, s: Settings, state: dict) -> int:
    """Report (every document found: not started) and exit code of a run interrupted before
    any document was sent to a worker."""
    name = signal.Signals(signum).name
    rep = state.get("rep") or Reporter(quiet=s.quiet, verbose=s.verbose)
    rep.warn(f"received {name} before any document was converted: stopping")
    known = {d.input for d in rep.docs}
    not_started = f"not started: run interrupted by {name}; a rerun resumes"
    planned = state.get("planned")
    found = state.get("found")
    if planned is not None:
        for p in planned:
            if p.source.rel in known:
                continue
            if p.action in ("skip", "fail"):
                rep.add(DocumentReport(input=p.source.rel, status=p.status or "skipped", code=p.code,
                                       reason=p.reason, tier=p.tier, pages=p.pages))
            else:
                rep.add(DocumentReport(input=p.source.rel, status="skipped", code="interrupted",
                                       reason=not_started, tier=p.tier, pages=p.pages))
    elif found is not None:
        for d in found.documents:
            if d.rel not in known:
                rep.add(DocumentReport(input=d.rel, status="skipped", code="interrupted", reason=not_started))
    rep.stop()
    rep.extra["interrupted"] = name
    if s.report:
        rep.write_json(s.report)
    _write_html_report(s, rep)
    rep.print_summary(interrupted=name)
    return EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM


def _run_convert(s: Settings, state: dict) -> int:
    """``run_convert``'s body; ``state`` collects what an interrupt before the batch needs
    (``rep``, ``found``, ``planned``) and ``converting`` once ``_run`` handles signals."""
    if not s.inputs:
        raise UsageError("no input given")
    if not s.output:
        raise UsageError("no output given (-o OUTPUT)")
    if s.html_report and s.report:
        from .html_report import check_html_target

        check_html_target(s.html_report, [s.report], "--html-report")
    setup_logging(s.log_file, s.verbose)
    rep = Reporter(quiet=s.quiet, verbose=s.verbose)
    state["rep"] = rep
    from .redact import register_settings_secrets

    register_settings_secrets(s)  # again, for callers that build Settings without load_settings
    if "html" in s.format and "images" not in s.format:
        rep.warn("--format html without images: the HTML pages link their pictures from images/, which is "
                 "not written; add images to --format to keep them")

    try:
        out = open_output(s.output, storage_options=s.storage_options, staging_dir=s.staging_dir,
                          endpoint_url=s.endpoint_url)
    except Exception as exc:  # noqa: BLE001
        from .redact import redact_text, redact_url

        hint = (" (install the S3 support: pip install 'mineru-cli[s3]')"
                if isinstance(exc, ModuleNotFoundError) and s.output.startswith("s3") else "")
        raise EnvironmentProblem(redact_text(f"output {redact_url(s.output)}: cannot open: "
                                             f"{type(exc).__name__}: {exc}{hint}")) from None

    from .redact import redact_url

    rep.extra["output"] = {"url": redact_url(s.output), "local_root": out.root if out.is_local else None}
    # discover
    skip_paths = [out.root] if out.is_local else [out.url]
    found = discover(s.inputs, include=s.include, exclude=s.exclude, hidden=s.hidden,
                     follow_symlinks=s.follow_symlinks, skip_paths=skip_paths, storage_options=_input_options(s),
                     sniff=False)
    state["found"] = found
    rep.extra["results_ignored"] = found.results_ignored
    for item, reason in found.errors:
        rep.warn(reason)
    missing_inputs = [i for i, _ in found.errors if i in s.inputs]
    if missing_inputs and not found.documents:
        raise UsageError(f"input {missing_inputs[0]}: not found or not readable")

    # OUTPUT readable, before anything reads done-records from it; writable is probed once, as
    # soon as the run knows it will write there (a document without a done-record, --force, or
    # after planning), so a rerun over a finished OUTPUT writes nothing there, not even a probe
    first_run = _probe_output(s, out, write=False)
    probed = False

    def ensure_writable() -> None:
        nonlocal probed
        if not probed and not s.dry_run:
            _probe_output(s, out, write=True)
            probed = True

    if first_run:  # OUTPUT missing or empty: this run will write there
        ensure_writable()
    if not out.is_local or s.storage_options or s.endpoint_url:
        from .storage import describe_storage

        rep.info(describe_storage(s.output, s.storage_options, s.endpoint_url,
                                  None if out.is_local else out.staging_root))

    # done-records, then the inputs that must be read: a finished document that is unchanged
    # (size and mtime, or size and ETag) takes its type from its done-record and is not read
    keys, records = _read_records_and_type_inputs(found.documents, s, out, ensure_writable)

    # backend and tier (only probed when some document's tier matters)
    needs_tier = any((d.kind in PDF_TYPES or d.kind in IMAGE_TYPES) and not d.problem for d in found.documents)
    lanes, tier, backend_label = _choose_backend_and_tier(s, rep, needs_tier)

    planned = plan(found.documents, s, out, tier, keys=keys, records=records, input_options=_input_options(s),
                   missing_files=_result_checker(s, out))
    state["planned"] = planned
    if s.window_pages and "window_pages" not in s.model_fields_set:
        # --window-pages not given anywhere: a PDF longer than its share of the run is split
        # among the workers (an explicit --window-pages is taken as it is)
        from .plan import spread_long_documents

        workers = sum(l.workers for l in lanes)
        for rel in spread_long_documents(planned, workers, max_window=s.window_pages):
            rep.info(f"{rel}: split into page windows for {workers} workers")

    if s.dry_run:
        return _dry_run(planned, out, rep, s)

    if not any(p.action in ("convert", "commit", "render") for p in planned):
        # nothing to convert or commit: no write probe and no writer lock, so a rerun over a
        # finished OUTPUT also works while another run writes there, or on a read-only OUTPUT.
        # Touched inputs' done-records get their new time only if the lock is free.
        touched = any(_needs_new_mtime(p) for p in planned)
        lock = _try_lock(out) if touched else None
        if touched and lock is None:
            rep.info("modification times in done-records not updated: OUTPUT is locked by another run "
                     "or not writable; the next run hashes those inputs again")
        state["converting"] = True
        try:
            return _run(s, out, planned, lanes, tier, backend_label, rep, found.hidden_ignored,
                        refresh_mtimes=lock is not None)
        finally:
            if lock is not None:
                lock.release()
    ensure_writable()
    lock = RunLock(out.lock_dir)
    if not lock.acquire():
        holder = lock.holder() or {}
        raise OutputLocked(f"another mineru-cli run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) "
                           f"is writing to {s.output}; wait for it to finish or use another OUTPUT")
    try:
        if lock.previous:
            rep.info(f"taking over the lock of a run that is gone (pid {lock.previous.get('pid')})")
        state["converting"] = True  # from here _run handles SIGINT/SIGTERM
        return _run(s, out, planned, lanes, tier, backend_label, rep, found.hidden_ignored)
    finally:
        lock.release()


def _probe_output(s: Settings, out: Output, write: bool) -> bool:
    """``store.probe_writable`` (True: OUTPUT holds nothing yet). A failure is EnvironmentProblem
    (exit 3), one line: "is not readable" for --dry-run, else "is not writable" (what a convert
    run needs, even when the read probe is the one that failed: no bucket, no access, no endpoint)."""
    try:
        return probe_writable(out, write=write)
    except Exception as exc:  # noqa: BLE001
        from .redact import redact_url
        from .storage import explain_storage_error

        raise EnvironmentProblem(f"output {redact_url(s.output)} is not {'readable' if s.dry_run else 'writable'}: "
                                 f"{explain_storage_error(exc, s.output)}") from None


def _try_lock(out: Output) -> RunLock | None:
    """The writer lock if it is free and can be taken (OUTPUT writable), else None."""
    try:
        lock = RunLock(out.lock_dir)
        return lock if lock.acquire() else None
    except OSError:
        return None


def _needs_new_mtime(p: PlannedDocument) -> bool:
    """True for a finished local document whose input was touched (time changed, content the
    same): its done-record gets the new time (``_refresh_done_record_mtimes``)."""
    return (p.action == "skip" and p.code == "done" and p.source.is_local and bool(p.record)
            and (p.record.get("input") or {}).get("mtime") != p.source.mtime)


def _read_records_and_type_inputs(documents: list, s: Settings, out: Output,
                                  new_work: Callable[[], None] | None = None) -> tuple[list[str], dict[str, dict | None]]:
    """The output keys of ``documents`` (``store.assign_output_keys``, same order) and their
    done-records by key (none with ``--force``; EnvironmentProblem when the storage fails); and
    the type of every document discovery left unread: from its done-record when it is unchanged
    (``plan.kind_from_done_record``), else by reading it (``sniff.sniff_documents``).
    ``new_work`` is called before reading the inputs when some document has no done-record
    (or ``--force``): the run will write to OUTPUT (the write probe, so it fails before the reads)."""
    from .sniff import sniff_documents
    from .plan import kind_from_done_record
    from .store import assign_output_keys, read_done_records

    keys = assign_output_keys([d.rel for d in documents])
    if not out.is_local:
        _fail_names_s3_cannot_hold(documents, keys)
    try:
        records = {} if s.force else read_done_records(out, [k for d, k in zip(documents, keys) if not d.problem])
    except Exception as exc:  # noqa: BLE001 - the storage failed after the probe passed (one line, exit 3)
        from .redact import redact_url
        from .storage import explain_storage_error

        raise EnvironmentProblem(f"output {redact_url(s.output)}: cannot read the done-records: "
                                 f"{explain_storage_error(exc, s.output)}") from None
    if new_work is not None and any(records.get(k) is None for d, k in zip(documents, keys) if not d.problem):
        new_work()
    for d, k in zip(documents, keys):
        if d.extra.get("unread") is True:
            kind_from_done_record(d, records.get(k))
    sniff_documents(documents, _input_options(s))
    return keys, records


def _refresh_done_record_mtimes(out: Output, touched: list[PlannedDocument], rep: Reporter) -> None:
    """Finished local inputs whose modification time changed but whose content hash matched
    (``touch``, a copy, a checkout): write their done-records again with the new time, so the
    next rerun trusts size and time (``plan.unchanged_without_reading``) instead of hashing the
    file again. A failure is a warning: the document stays finished, the next run hashes it.

    Called under the writer lock. The records were read before it was taken, so each is read
    again and only rewritten if it is still the one planned from (another run may have
    converted the document since: its record stays)."""
    from .store import read_done_records, rewrite_done_record

    try:
        now = read_done_records(out, [p.key for p in touched])
    except Exception as exc:  # noqa: BLE001
        rep.warn(f"could not read done-records again to update modification times ({type(exc).__name__}: {exc}); "
                 f"the next run hashes those inputs again")
        return
    touched = [p for p in touched if now.get(p.key) == p.record]

    def one(p: PlannedDocument) -> None:
        record = dict(p.record or {}, input=dict((p.record or {}).get("input") or {}, mtime=p.source.mtime))
        try:
            rewrite_done_record(out, p.key, record)
        except Exception as exc:  # noqa: BLE001
            rep.warn(f"{p.source.rel}: could not update the modification time in its done-record "
                     f"({type(exc).__name__}: {exc}); the next run hashes it again")

    if out.is_local or len(touched) == 1:
        for p in touched:
            one(p)
        return
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="mineru-cli-touch") as ex:
        list(ex.map(one, touched))


def _result_checker(s: Settings, out: Output):
    """``store.result_checker`` for the plan, its storage errors turned into one line, exit 3
    (as for the done-records)."""
    from .store import result_checker

    check = result_checker(out)

    def missing(key: str, record: dict) -> list[str]:
        try:
            return check(key, record)
        except Exception as exc:  # noqa: BLE001
            from .redact import redact_url
            from .storage import explain_storage_error

            raise EnvironmentProblem(f"output {redact_url(s.output)}: cannot list the results: "
                                     f"{explain_storage_error(exc, s.output)}") from None
    return missing


def _fail_names_s3_cannot_hold(documents: list, keys: list[str]) -> None:
    """A local file whose name is not valid UTF-8 (held by Python as lone surrogates, PEP 383)
    cannot name an object in a remote OUTPUT: S3 keys are UTF-8 (AWS "Creating object key
    names"). Such a document fails with one line; the others go on."""
    for d, k in zip(documents, keys):
        if d.problem:
            continue
        try:
            k.encode("utf-8")
        except UnicodeEncodeError:
            d.problem, d.code, d.fatal = ("file name is not valid UTF-8, so it cannot name an object in the "
                                          "remote OUTPUT; rename it (for example with convmv)", "bad_name", True)


def _input_options(s: Settings) -> dict:
    opts = dict(s.storage_options)
    if s.endpoint_url:
        opts["endpoint_url"] = s.endpoint_url
    return opts


def _choose_backend_and_tier(s: Settings, rep: Reporter, needs_tier: bool) -> tuple[list[Lane], str, str]:
    """Probe the machine and decide backend, tier and worker lanes (backend.py).

    When the tier is flash whatever the probes say, no model runs: the CPU lanes are used without
    probing GPUs, engines or weights (``backend.flash_without_probing``).
    """
    from .backend import decide_backend, flash_without_probing, probe_machine, worker_lanes

    decision = flash_without_probing(s, needs_tier)
    if decision is None:
        machine = probe_machine(s)
        decision = decide_backend(s, machine)
    for w in decision.warnings:
        rep.warn(w)
    lanes = [Lane(label=l.label, env=dict(l.env), workers=l.workers) for l in worker_lanes(decision, s)]
    tier, why = decision.tier or "flash", decision.tier_reason
    workers = sum(l.workers for l in lanes)
    rep.info(f"tier: {tier} ({why}); backend: {decision.backend}; workers: {workers}")
    rep.extra["decision"] = {"backend": decision.backend, "tier": tier, "tier_reason": why,
                             "reasons": list(decision.reasons), "rejected": dict(decision.rejected),
                             "warnings": list(decision.warnings)}
    return lanes, tier, decision.backend


def _dry_run(planned: list[PlannedDocument], out: Output, rep: Reporter, s: Settings) -> int:
    for p in planned:
        if p.action == "render":
            rep._print(f"would render  {p.source.rel}  ({p.reason}; nothing converted) -> {out.display(p.key)}")
        elif p.action in ("convert", "commit"):
            what = "convert" if p.action == "convert" else "commit"
            win = f", {len(p.windows)} page windows" if p.windows else ""
            pages = f"{p.pages} pages, " if p.pages is not None else ""
            if p.page_range and p.pages is not None:  # --pages: what will be converted, of how many
                pages = f"pages {p.page_range} of {p.pages}, "
            why = f"; {p.reason}" if p.reason else ""  # converted before: why again
            rep._print(f"would {what}  {p.source.rel}  ({pages}tier {p.tier}{win}{why}) -> {out.display(p.key)}")
        else:
            rep._print(f"would {'fail' if p.action == 'fail' else 'skip'}  {p.source.rel}: {p.reason}")
        rep.add(DocumentReport(input=p.source.rel, status="skipped" if p.action == "skip" else
                               ("failed" if p.action == "fail" else "pending"),
                               code=p.code, reason=p.reason, tier=p.tier, pages=p.selected_pages,
                               output=out.display(p.key) if p.action in ("convert", "commit", "render") else None,
                               rendered=list(p.render_formats) or None, type=p.source.kind))
    n = {a: sum(1 for p in planned if p.action == a) for a in ("convert", "commit", "render", "skip", "fail")}
    renders = f"{n['render']} to render from middle JSON, " if n["render"] else ""
    rep._print(f"dry run: {n['convert']} to convert, {n['commit']} to commit, {renders}{n['skip']} to skip, "
               f"{n['fail']} would fail; nothing was converted")
    rep.extra["dry_run"] = True
    if s.report:
        rep.write_json(s.report)
    _write_html_report(s, rep)
    return EXIT_OK


def _run(s: Settings, out: Output, planned: list[PlannedDocument], lanes: list[Lane], tier: str,
         backend: str, rep: Reporter, hidden_ignored: int, refresh_mtimes: bool = True) -> int:
    mineru_version = _mineru_version()
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
                if refresh_mtimes and _needs_new_mtime(p):
                    touched.append(p)
            rep.finished(r, advance=False)
            continue
        st = DocState(planned=p, report=r)
        states[p.id] = st
        {"commit": to_commit, "render": to_render}.get(p.action, to_convert).append(st)
    if touched:
        _refresh_done_record_mtimes(out, touched, rep)
    rep.extra["hidden_ignored"] = hidden_ignored
    rep.extra["backend"] = backend
    lanes = fit_lanes(lanes, sum(max(1, len(st.planned.windows)) for st in to_convert) + len(to_render))
    rep.extra["workers"] = sum(l.workers for l in lanes)
    rep.extra["tier"] = tier

    # largest first (pages, else bytes) so one big file does not start last
    if s.order == "size":
        to_convert.sort(key=lambda st: (-(st.planned.pages or 0), -st.planned.source.size))
    rep.start(len(to_convert) + len(to_commit) + len(to_render))
    if s.retry_ocr and any(st.planned.source.kind in PDF_TYPES or st.planned.source.kind in IMAGE_TYPES
                           for st in to_convert):
        from .plan import ocr_retry_tier

        ocr_tier, why_not = ocr_retry_tier(tier)
        if ocr_tier is None:
            rep.warn(f"{why_not}; flagged documents keep their first result")
        for st in to_convert:
            st.ocr_tier, st.ocr_why_not = ocr_tier, why_not

    committer = ThreadPoolExecutor(max_workers=1 if out.is_local else min(8, s.max_concurrency),
                                   thread_name_prefix="mineru-cli-commit")
    commits: dict = {}
    commits_done: queue.SimpleQueue = queue.SimpleQueue()  # futures of finished commits, in order

    def start_commit(st: DocState, record: dict, keep: list[dict] | None = None) -> None:
        staging = os.path.join(out.staging_root, st.planned.id)
        fut = committer.submit(commit, out, st.planned.key, staging, record, upload_attempts=s.retries + 1,
                               keep=keep)
        commits[fut] = (st, record)
        fut.add_done_callback(commits_done.put)

    for st in to_commit:
        start_commit(st, st.planned.record or {})

    run_dir = tempfile.mkdtemp(prefix="mineru-cli-run-")
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
                    for job in _jobs_for(st, s, out, run_dir):
                        pool.submit(job)
                for st in to_render:
                    pool.submit(_render_job(st, s, out, run_dir))
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
                            states[oc.job.task["doc"]].attempts.append(_attempt(oc.job, oc.result, "interrupted"))
                            started_docs.add(oc.job.task["doc"])
                            continue
                        _handle_outcome(oc, states, s, out, pool, rep, start_commit, mineru_version, run_dir)
                    if pool.idle or (stopping and not pool.running()):
                        pool_done = True
                    else:
                        pool_done = False
                else:
                    pool_done = True
                    if commits:  # only commits of staged results: wait for one, not a fixed nap
                        _wait_for_a_commit(commits_done, timeout=0.2)
                _drain_commits(commits, commits_done, rep, out, block=False)
                if pool_done and not commits:
                    break
            if pool is not None:
                if interrupted is not None:
                    pool.unqueue()  # queued, never taken by a worker: not started (a second signal skips poll)
                    started_docs.update(job.task["doc"] for job in pool.running())
                # the largest resident memory one worker (with MinerU's render processes) reached
                rep.extra["peak_worker_rss"] = max(pool.peak_memory().values(), default=0)
                pool.close(kill=interrupted is not None)
                pool = None
            _drain_commits(commits, commits_done, rep, out, block=True)
    finally:
        if pool is not None:
            pool.close(kill=True)
        committer.shutdown(wait=True)
        _collect_worker_logs(run_dir, s.log_file)
        shutil.rmtree(run_dir, ignore_errors=True)

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
    rep.stop()
    rep.extra["interrupted"] = signal.Signals(interrupted).name if interrupted else None
    if s.report:
        rep.write_json(s.report)
    _write_html_report(s, rep)
    rep.print_summary(interrupted=rep.extra["interrupted"])
    if interrupted is not None:
        return EXIT_SIGINT if interrupted == signal.SIGINT else EXIT_SIGTERM
    return EXIT_FAILED if any(d.status == "failed" for d in rep.docs) else EXIT_OK


def _write_html_report(s: Settings, rep: Reporter) -> None:
    """``--html-report FILE``: the run's report as one self-contained HTML file (html_report.py);
    a failure to write it is a warning (the run's result does not depend on it)."""
    if not s.html_report:
        return
    from .html_report import write_html_report

    try:
        write_html_report([rep.as_dict()], s.html_report, base_dir=os.path.dirname(os.path.abspath(s.html_report)))
    except OSError as exc:
        rep.warn(f"--html-report {s.html_report}: cannot write it: {exc}")


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


def _task_base(st: DocState, s: Settings, out: Output, run_dir: str) -> dict:
    p = st.planned
    d = p.source
    task = {"kind": "convert", "input": d.uri, "stem": p.stem, "tier": p.tier or "flash",
            "ocr_mode": p.ocr_mode, "formats": list(s.format), "run_dir": run_dir, "doc": p.id}
    if not d.is_local:
        task["fetch"] = {"url": d.uri, "storage_options": _input_options_for(d.uri, s)}
    if s.executor == "ray":
        # Ray workers commit through fsspec themselves (they may run on other machines)
        from .sniff import fingerprint_local

        if p.fingerprint is None and d.is_local:
            p.fingerprint = fingerprint_local(d.uri)
        record = new_record(p, fingerprint=p.fingerprint, pages=p.pages, seconds=0.0, quality={}, attempts=[],
                            mineru_version=_mineru_version())
        task["ray"] = {"output": s.output, "storage_options": dict(s.storage_options), "endpoint_url": s.endpoint_url,
                       "key": p.key, "doc": p.id, "record": record, "on_empty": s.on_empty}
    return task


def _input_options_for(url: str, s: Settings) -> dict:
    from .storage import fetch_options

    return fetch_options(url, s.storage_options, s.endpoint_url)


def _jobs_for(st: DocState, s: Settings, out: Output, run_dir: str) -> list[Job]:
    p = st.planned
    staging = os.path.join(out.staging_root, p.id)
    shutil.rmtree(staging, ignore_errors=True)  # partial staging of a killed run is replaced
    base = _task_base(st, s, out, run_dir)
    if not p.windows:
        task = dict(base, task_id=p.id, staging=staging, page_range=p.page_range)
        return [Job(task=task, timeout=default_timeout(s, p.pages), meta=("doc", p.id))]
    jobs = []
    st.windows_left = len(p.windows)
    for a, b in p.windows:
        wdir = os.path.join(staging, "w", f"{a:06d}-{b:06d}")
        st.window_dirs.append(wdir)
        task = dict(base, task_id=f"{p.id}:{a}-{b}", staging=wdir, page_range=f"{a}-{b}", window=[a, b],
                    window_name=f"{a:06d}-{b:06d}")
        jobs.append(Job(task=task, timeout=default_timeout(s, b - a + 1), meta=("window", p.id, a, b)))
    return jobs


def _render_job(st: DocState, s: Settings, out: Output, run_dir: str) -> Job:
    """The task that renders a finished result's missing formats from its middle JSON in a
    worker (``engine._render_only``): reads ``OUTPUT/key`` (a local folder, or its URL with the
    storage options), writes the new files into the document's staging folder."""
    p = st.planned
    staging = os.path.join(out.staging_root, p.id)
    shutil.rmtree(staging, ignore_errors=True)
    if out.is_local:
        where, options = out.path(p.key), {}
    else:
        from .storage import storage_options_for

        where, options = f"{out.url.rstrip('/')}/{p.key}", storage_options_for(out.url, dict(out.options), out.endpoint_url)
    task = {"kind": "render", "task_id": f"{p.id}:render", "doc": p.id, "input": p.source.uri, "stem": p.stem,
            "staging": staging, "result": where, "middle": f"{p.stem}_middle.json", "storage_options": options,
            "formats": list(p.render_formats), "run_dir": run_dir}
    return Job(task=task, timeout=default_timeout(s, p.pages), meta=("render", p.id))


def _record_attempt(states: dict[str, DocState], job: Job, res: dict) -> None:
    st = states[job.task["doc"]]
    st.attempts.append(_attempt(job, res, "retrying"))


def _attempt(job: Job, res: dict, status: str) -> dict:
    now = time.time()
    a = {"attempt": job.attempt, "status": status, "code": res.get("code"), "reason": res.get("reason", ""),
         "seconds": round(res.get("seconds", now - job.started), 3),
         "started": res.get("started", round(job.started or now, 3)), "ended": res.get("ended", round(now, 3)),
         "worker": res.get("worker")}
    if job.task.get("window"):
        a["pages"] = "-".join(str(x) for x in job.task["window"])
    elif job.task.get("kind") in ("merge", "render"):
        a["task"] = job.task["kind"]
    return a


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
        st.attempts.append(_attempt(job, res, "failed"))
        if st.failed:
            return
        st.failed = True
        reason = res.get("reason", "failed")
        if kind == "window":
            reason = f"pages {job.meta[2]}-{job.meta[3]}: {reason}"
        _fail(st, rep, res.get("code"), reason)
        return
    st.attempts.append(_attempt(job, res, "ok"))
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
            task = dict(_task_base(st, s, out, run_dir), kind="merge", task_id=f"{p.id}:merge", staging=staging,
                        windows=list(st.window_dirs) if s.executor != "ray"
                        else [os.path.basename(w) for w in st.window_dirs])
            pool.submit(Job(task=task, timeout=default_timeout(s, (p.pages or 0) // 10), meta=("merge", p.id)))
        return
    _finish_conversion(st, res, s, out, rep, start_commit, mineru_version,
                       resubmit=lambda st: [pool.submit(j) for j in _jobs_for(st, s, out, run_dir)])


def _finish_conversion(st: DocState, res: dict, s: Settings, out: Output, rep: Reporter, start_commit,
                       mineru_version, resubmit=None) -> None:
    from .sniff import fingerprint_local
    from .plan import ocr_retry_decision

    p = st.planned
    quality = dict(res.get("quality") or {})
    r = st.report
    r.pages = res.get("pages", p.pages)
    retry, why = ocr_retry_decision(p.source.kind, quality, retry_ocr=s.retry_ocr, ocr_mode=p.ocr_mode,
                                    ocr_tier=st.ocr_tier, why_not=st.ocr_why_not)
    if retry and (resubmit is None or res.get("committed")):
        retry, why = False, "--retry-ocr: not available with --executor ray (the worker committed the result)"
    if retry:
        # --retry-ocr: convert again with OCR; the first conversion stays in the record
        st.ocr_first = {"reason": why, "first": {"tier": p.tier, "ocr_mode": p.ocr_mode, "pages": r.pages,
                                                 "quality": quality}}
        st.attempts.append({"attempt": 1, "status": "flagged", "code": "retry_ocr", "reason": why, "seconds": 0.0})
        p.tier, p.ocr_mode = st.ocr_tier, "ocr"
        st.window_dirs, st.windows_left = [], 0
        r.tier = p.tier
        resubmit(st)
        return
    if st.ocr_first is not None:
        quality["ocr_retry"] = {"done": True, **st.ocr_first}
    elif why:
        quality["ocr_retry"] = {"done": False, "reason": why}
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


def _wait_for_a_commit(commits_done: "queue.SimpleQueue", timeout: float) -> None:
    """Block until some commit finished (or ``timeout`` seconds); its future is put back for
    ``_drain_commits``."""
    try:
        commits_done.put(commits_done.get(timeout=timeout))
    except queue.Empty:
        pass


def _drain_commits(commits: dict, commits_done: "queue.SimpleQueue", rep: Reporter, out: Output, block: bool) -> None:
    """Report the commits that finished (``commits_done`` gets each future from its done
    callback: no scan of all pending commits per call); with ``block`` wait for all."""
    from concurrent.futures import wait as fwait

    if not commits:
        return
    ready: list = []
    if block:
        fwait(list(commits))
        ready = list(commits)
    else:
        while True:
            try:
                ready.append(commits_done.get_nowait())
            except queue.Empty:
                break
    for fut in ready:
        if fut not in commits:
            continue  # already reported (a blocking drain took it before its callback ran)
        st, record = commits.pop(fut)
        r = st.report
        r.seconds = round(st.seconds or record.get("seconds", 0.0), 3)
        r.set_attempts(st.attempts or record.get("attempts", []))
        r.tier = record.get("tier", r.tier)
        r.pages = record.get("pages", r.pages)
        r.quality = record.get("quality", r.quality)
        exc = fut.exception()
        if exc is not None:
            from .storage import explain_storage_error

            r.status, r.code = "failed", "storage_error"
            r.reason = (f"storage error: upload to {out.display(st.planned.key)} failed: {explain_storage_error(exc, out.url)}; "
                        "the converted result is kept in staging and a rerun uploads it")
        else:
            r.status, r.code = "converted", None
            r.reason = {"convert": "converted", "render": f"rendered {', '.join(st.planned.render_formats)} from "
                        "the middle JSON (not converted again)"}.get(st.planned.action,
                                                                     "committed a result staged by an earlier run")
            r.rendered = list(st.planned.render_formats) or None
            r.output = out.display(st.planned.key)
            r.warnings.extend(fut.result() or [])
        rep.finished(r)
