"""``convert``: discover -> plan -> run -> store -> report, and the exit code.

This module only wires the rooms together, top to bottom in :func:`_run_convert`: open and
probe OUTPUT (``store``), start the stream that walks the inputs, reads their done-records,
types and plans them (``pipeline``: ``discover``, ``records``, ``sniff``, ``plan`` in threads),
choose backend and tier on its first window (``backend``), then ``plan.dry_run`` or the batch
(``run.run_batch``), which takes the writer lock when it first needs it.

Must not: hold any room's rules (what a document needs, how a result is committed, how tasks
run), import an executor, or import anything heavy at module level.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from .errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, CliError, EnvironmentProblem, OutputLocked, UsageError
from .jobs import Lane
from .plan import PlannedDocument, dry_run
from .report import Reporter, setup_logging
from .run import IGNORED_AT_START, LATE_SIGNALS, run_batch, watched_signals
from .settings import Settings
from .store import Output, RunLock, open_output, probe_writable


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
    documents are converting, ``run.run_batch`` handles the signals (grace period, then kill).
    """
    state: dict = {}
    LATE_SIGNALS.clear()

    def interrupt(signum, _frame) -> None:
        if not state.get("converting"):
            raise RunInterrupted(signum)
        LATE_SIGNALS.append(signum)  # between the lock and run_batch's own handlers: it takes them

    IGNORED_AT_START.clear()  # a background job's SIGINT stays ignored (run.watched_signals)
    IGNORED_AT_START.update(sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is signal.SIG_IGN)
    old = {sig: signal.signal(sig, interrupt) for sig in watched_signals()}
    try:
        return _run_convert(s, state)
    except RunInterrupted as exc:
        state["converting"] = True  # a second signal while writing the report is ignored
        return _interrupted_before_start(exc.signum, s, state)
    except Exception as exc:
        # an error that ends the run (exit 2, 3, 4) after the events file got its start line:
        # its last line says so (a run stopped mid-batch has written it already: nothing then)
        rep = state.get("rep")
        if rep is not None:
            rep.extra.setdefault("interrupted", "error")
            rep.extra.setdefault("error", str(exc) if isinstance(exc, CliError) else f"internal error: {exc!r}")
            rep.close_events()
        raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _run_convert(s: Settings, state: dict) -> int:
    """``run_convert``'s body; ``state`` collects what an interrupt before the batch needs
    (``rep``, ``stream``, ``window``, ``first``, ``planned_handed``) and ``converting`` once
    ``run_batch`` handles signals."""
    if not s.inputs:
        raise UsageError("no input given")
    if not s.output:
        raise UsageError("no output given (-o OUTPUT)")
    if s.html_report and s.report:
        from .html_report import check_html_target

        check_html_target(s.html_report, [s.report], "--html-report")
    if s.events:
        from .html_report import same_file

        for option, other in (("--report", s.report), ("--html-report", s.html_report)):
            if other and same_file(s.events, other):
                raise UsageError(f"--events {s.events}: is also the {option} file; the report would replace "
                                 "the events at the end (give another file)")
    setup_logging(s.log_file, s.verbose)
    rep = state["rep"] = _reporter(s)
    from . import tempdirs

    tempdirs.sweep()  # the temporary folders of runs killed on this machine (kill -9, out of memory)
    from .redact import redact_url, register_settings_secrets

    register_settings_secrets(s)  # again, for callers that build Settings without load_settings
    if "html" in s.format and "images" not in s.format:
        rep.warn("--format html without images: the HTML pages link their pictures from images/, which is "
                 "not written; add images to --format to keep them")
    from .pipeline import DocumentStream, needs_tier
    from .records import open_record_reader
    from .store import output_skip_path

    # discover -> done-records and types -> plan run in threads (pipeline.py). The walk starts
    # first, where OUTPUT's place is known before it is opened: an S3 listing's first page
    # comes while OUTPUT is opened and probed. The backend, tier and worker count are decided
    # on the first window of documents.
    stream = None
    skip = output_skip_path(s.output, s.output_storage()[0])
    if skip is not None:
        stream = state["stream"] = DocumentStream(s, _input_options(s), skip_paths=[skip])
    try:
        out = _open_output(s)
        rep.extra["output"] = {"url": redact_url(s.output), "local_root": out.root if out.is_local else None}
        ensure_writable, first_run = _output_probe(s, out, rep)
        reader = open_record_reader(out, empty=first_run, page_size=s.list_page_size)
    except BaseException:
        if stream is not None:
            stream.stop_event.set()
        raise
    try:
        if stream is None:
            stream = state["stream"] = DocumentStream(s, _input_options(s),
                                                      skip_paths=[out.root] if out.is_local else [out.url])
        stream.attach(out, reader, ensure_writable)
        window, errors, ended = stream.take_window()
        state["window"] = window
        for _item, reason in errors:
            rep.warn(reason)
        missing_inputs = [i for i, _ in stream.found.errors if i in s.inputs]
        if ended and missing_inputs and not window:
            raise UsageError(f"input {missing_inputs[0]}: not found or not readable")
        if ended:  # the whole run is in the window: plan it here, decide on all of it
            keys, records = stream.prepare(window)
            lanes, tier, backend_label = _choose_backend_and_tier(s, rep, needs_tier(window, ended))
            stream.tier = tier
            first = state["first"] = stream.plan_chunk(window, keys, records)
            del records
            _spread_long_documents(s, first, lanes, rep)
            window_tasks = sum(max(1, len(p.windows)) for p in first if p.action in ("convert", "render"))
            stream.start_planner(first, ended)
        else:  # the walk goes on: decide as if a PDF may come; the planner plans the window first
            lanes, tier, backend_label = _choose_backend_and_tier(s, rep, needs_tier(window, ended))
            stream.tier = tier
            window_tasks = None
            stream.start_planner([], ended, unplanned=window)
        state["planned_handed"] = True
        if s.dry_run:
            dry_run(_dry_run_items(stream, rep), out, rep, s.report)
            rep.write_html(s.html_report)
            rep.close_events()
            return EXIT_OK
        locker = _Locker(s, out, rep, ensure_writable)
        try:
            state["converting"] = True  # from here run_batch handles SIGINT/SIGTERM
            return run_batch(s, out, stream, lanes, tier, backend_label, rep, locker=locker, reader=reader,
                             window_tasks=window_tasks)
        finally:
            locker.release()
    finally:
        if stream is not None:
            stream.stop_event.set()
        # a run that ended before or without its batch (a dry run, exit 3 or 4, a signal): the
        # reader's temporary files go too (after run_batch, which closed it, this does nothing)
        reader.close(write_index=lambda: False)


def _reporter(s: Settings) -> Reporter:
    """The run's reporter: ``--quiet``, ``-v``, ``--events FILE`` (EnvironmentProblem, exit 3,
    when it cannot be created) and the progress line's interval."""
    from .report import EventsBusy

    try:
        return Reporter(quiet=s.quiet, verbose=s.verbose, events=s.events, progress_every=s.progress_interval,
                        keep=bool(s.report or s.html_report))
    except EventsBusy:
        raise OutputLocked(f"--events {s.events}: another mineru-cli run is writing to this events file; "
                           f"it is left as it is") from None
    except OSError as exc:
        raise EnvironmentProblem(f"--events {s.events}: cannot create it: {exc.strerror or exc}") from None


def _dry_run_items(stream, rep: Reporter):
    """The planned documents of ``stream`` one by one (``plan.dry_run`` takes them as they
    come); an input that could not be walked is a warning line."""
    while not stream.done:
        for item in stream.take(256, wait=0.1):
            if isinstance(item, tuple):
                rep.warn(item[2])
            else:
                yield item


class _Locker:
    """The writer lock of OUTPUT (``store.RunLock``), taken when the run first needs it:
    :meth:`ensure` before the first document that writes there (the write probe first;
    OutputLocked, exit 4, when another run holds it; a lock left by a killed run is taken over,
    with a line saying so), :meth:`try_acquire` for refreshing touched inputs' times (never
    waits, never raises). A rerun over a finished OUTPUT takes no lock and writes nothing, so
    it also works while another run writes there, or on a read-only OUTPUT."""

    def __init__(self, s: Settings, out: Output, rep: Reporter, ensure_writable: Callable[[], None]) -> None:
        self.s, self.out, self.rep, self.ensure_writable = s, out, rep, ensure_writable
        self.lock: RunLock | None = None

    @property
    def held(self) -> bool:
        return self.lock is not None

    def ensure(self) -> None:
        if self.lock is not None:
            return
        self.ensure_writable()
        try:
            lock = RunLock(self.out.lock_dir)
            acquired = lock.acquire()
        except OSError as exc:  # OUTPUT writable, its .mineru-cli folder not (exit 3, one line, the report written)
            from .redact import redact_url

            raise EnvironmentProblem(f"output {redact_url(self.s.output)} is not writable: cannot take the writer "
                                     f"lock ({exc.filename or self.out.lock_dir}): {exc.strerror or exc}") from None
        if not acquired:
            holder = lock.holder() or {}
            raise OutputLocked(f"another mineru-cli run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) "
                               f"is writing to {self.s.output}; wait for it to finish or use another OUTPUT")
        if lock.previous:
            self.rep.info(f"taking over the lock of a run that is gone (pid {lock.previous.get('pid')})")
        self.lock = lock

    def try_acquire(self) -> bool:
        if self.lock is None:
            self.lock = _try_lock(self.out)
        return self.lock is not None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _open_output(s: Settings) -> Output:
    """``store.open_output`` with OUTPUT's storage settings; EnvironmentProblem (exit 3) when it
    cannot be opened (unknown protocol, s3fs missing, bad options)."""
    options, endpoint = s.output_storage()
    try:
        return open_output(s.output, storage_options=options, staging_dir=s.staging_dir, endpoint_url=endpoint)
    except Exception as exc:  # noqa: BLE001
        from .redact import redact_text, redact_url

        hint = (" (install the S3 support: pip install 'mineru-cli[s3]')"
                if isinstance(exc, ModuleNotFoundError) and s.output.startswith("s3") else "")
        raise EnvironmentProblem(redact_text(f"output {redact_url(s.output)}: cannot open: "
                                             f"{type(exc).__name__}: {exc}{hint}")) from None


def _output_probe(s: Settings, out: Output, rep: Reporter) -> tuple[Callable[[], None], bool]:
    """Check OUTPUT is readable, before anything reads done-records from it, and return
    (``ensure_writable``, whether OUTPUT holds nothing yet). ``ensure_writable()``: the write probe, made once, as soon as the run knows it will write
    there (a document without a done-record, --force, or after planning; at once when OUTPUT
    is missing or empty), so a rerun over a finished OUTPUT writes nothing there, not even a probe."""
    first_run = _probe_output(s, out, write=False)
    probed = False

    def ensure_writable() -> None:
        nonlocal probed
        if not probed and not s.dry_run:
            _probe_output(s, out, write=True)
            probed = True

    if first_run:  # OUTPUT missing or empty: this run will write there
        ensure_writable()
    options, endpoint = s.output_storage()
    if not out.is_local or options or endpoint:
        from .storage import describe_storage

        rep.info(describe_storage(s.output, options, endpoint, None if out.is_local else out.staging_root))
    return ensure_writable, first_run


def _spread_long_documents(s: Settings, planned: list[PlannedDocument], lanes: list[Lane], rep: Reporter) -> None:
    """--window-pages not given anywhere: a PDF longer than its share of the run is split among
    the workers (``windows.spread_long_documents``; an explicit --window-pages is taken as it is)."""
    if s.window_pages and "window_pages" not in s.model_fields_set:
        from .windows import spread_long_documents

        workers = sum(l.workers for l in lanes)
        for rel in spread_long_documents(planned, workers, max_window=s.window_pages):
            rep.info(f"{rel}: split into page windows for {workers} workers")


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


def _input_options(s: Settings) -> dict:
    """The inputs' storage options with their endpoint as the ``endpoint_url`` option (what
    ``discover`` and ``sniff`` hand to ``storage``)."""
    opts, endpoint = s.input_storage()
    opts = dict(opts)
    if endpoint:
        opts["endpoint_url"] = endpoint
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


def _interrupted_before_start(signum: int, s: Settings, state: dict) -> int:
    """Report (every document walked so far: not started, or its skip/fail) and exit code of a
    run interrupted before any document was sent to a worker."""
    from .run import report_not_started

    name = signal.Signals(signum).name
    rep = state.get("rep") or _reporter(s)
    rep.warn(f"received {name} before any document was converted: stopping")
    not_started = f"not started: run interrupted by {name}; a rerun resumes"
    stream = state.get("stream")
    items: list = []
    if not state.get("planned_handed"):  # the first window, planned or not, is still here
        items = list(state["first"]) if state.get("first") is not None else \
            ([("unplanned", None, state["window"])] if state.get("window") else [])
    if stream is not None:
        items.extend(stream.stop())
    for item in items:
        report_not_started(item, rep, not_started)
    rep.stop()
    rep.extra["interrupted"] = name
    rep.extra["discovery_complete"] = False
    if s.report:
        rep.write_json(s.report)
    rep.write_html(s.html_report)
    rep.close_events()
    rep.print_summary(interrupted=name)
    return EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
